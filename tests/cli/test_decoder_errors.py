"""A decoder that cannot be compressed as one is refused before any work, in one line, exit 2:
a causal LM whose cache is no key/value cache (a recurrent state: Mamba), text data for a folder
or a .pt2 that holds no tokenizer, a .pt2 that fixed an axis of its cache, generation timing
of a .pt2 without a cache, and a torch pass on a decoder .pt2 (exported as it was saved)."""

from __future__ import annotations

import shutil

from tests.helpers.cli import assert_refused, invoke
from tests.helpers.hf_folders import SPECIAL, WORDS, save
from tests.helpers.program_decoders import save_toy


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


def test_text_for_a_decoder_program_without_model_tokenizer_is_refused(toy_programs, tmp_path):
    result = invoke("run", toy_programs["cache"], "-c", text_config(tmp_path), "-o", tmp_path / "o")
    assert_refused(result, tmp_path / "o", "toy.pt2 is a model file", "set model.tokenizer")


def token_config(folder, extra: str = "", report: str = "metric: agreement"):
    import numpy as np

    ids = np.arange(24, dtype=np.int64).reshape(3, 8) + 5
    np.savez(folder / "t.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    config = folder / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n  eval: {path: t.npz, inputs: [input_ids, attention_mask]}\n"
        f"report: {{{report}}}\n{extra}"
    )
    return config


def test_a_program_that_fixed_the_past_length_is_refused_with_the_fix(tmp_path):
    program = save_toy(tmp_path / "fixed.pt2", fixed=("past",))
    result = invoke("run", program, "-c", token_config(tmp_path), "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "fixed.pt2: the program fixed the past length at 2",
                   "Dim.DYNAMIC on that axis")  # fmt: skip


def test_generation_of_a_program_without_a_cache_is_refused_with_the_fix(toy_programs, tmp_path):
    generation = "metric: agreement, generation: {prompt_tokens: 4, new_tokens: 2}"
    config = token_config(tmp_path, report=generation)
    result = invoke("run", toy_programs["no_cache"], "-c", config, "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "toy_no_cache.pt2 takes no key/value cache",
                   "forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)",
                   "or give its model folder")  # fmt: skip


def test_a_torch_pass_on_a_decoder_program_is_refused(toy_programs, tmp_path):
    config = token_config(tmp_path, "passes: [{type: prune.channels, amount: 0.5}]\n")
    result = invoke("run", toy_programs["cache"], "-c", config, "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "passes[0] (prune.channels)", "decoder program")
