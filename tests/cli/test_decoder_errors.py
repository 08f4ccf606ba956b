"""A decoder that cannot be compressed as one is refused before any work, in one line, exit 2:
a causal LM whose cache is no key/value cache (a recurrent state: Mamba), and text data for a
folder that holds no tokenizer."""

from __future__ import annotations

import shutil

from tests.helpers.cli import assert_refused, invoke
from tests.helpers.hf_folders import SPECIAL, WORDS, save


def text_config(folder):
    (folder / "t.txt").write_text("w1 w2 w3 a b c d e f\n")
    config = folder / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n  eval: {path: t.txt, max_length: 8}\nreport: {metric: perplexity}\n"
    )
    return config


def test_a_causal_lm_without_a_key_value_cache_is_refused(tmp_path):
    import transformers

    config = transformers.MambaConfig(
        vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2, state_size=4
    )
    folder = save(
        transformers.MambaForCausalLM(config).eval(), tmp_path / "mamba",
        ("input_ids", "attention_mask"),
    )  # fmt: skip
    result = invoke("run", folder, "-c", text_config(tmp_path), "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "MambaForCausalLM keeps no key/value cache")


def test_text_for_a_decoder_folder_without_a_tokenizer_is_refused(hf_folders, tmp_path):
    folder = shutil.copytree(hf_folders["llama"], tmp_path / "llama")
    for file in folder.glob("*"):
        if file.name.startswith(("tokenizer", "special_tokens")):
            file.unlink()
    result = invoke("run", folder, "-c", text_config(tmp_path), "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "llama has no tokenizer", "tokenizer.save_pretrained")
