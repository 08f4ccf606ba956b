"""Tiny model folders written the way users get them, with `save_pretrained` from transformers
configs and random weights (hidden 32, 2 layers, a vocabulary of ~130 words): a BERT classifier,
a BERT base model, GPT-2, LLaMA (grouped key/value heads), a sentence-transformers layout and
sharded safetensors, each with a WordPiece tokenizer made with the tokenizers library. Nothing
is downloaded."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

WORDS = [f"w{i}" for i in range(100)] + list("abcdefghijklmnopqrstuvwxyz")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


BERT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def tokenizer(names: tuple[str, ...] = BERT_INPUTS):
    """A WordPiece tokenizer as BERT's: lower case, [CLS] text [SEP], pairs with type ids;
    `names`: the arrays it gives the model."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {word: i for i, word in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64,
        model_input_names=list(names),
    )  # fmt: skip


def bert_config(**extra):
    import transformers

    vocab = len(SPECIAL) + len(WORDS)
    return transformers.BertConfig(
        vocab_size=vocab, intermediate_size=64, max_position_embeddings=64, **SIZE, **extra
    )


def save(model, folder: Path, inputs: tuple[str, ...] = BERT_INPUTS, **options) -> Path:
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # transformers' progress bars
        model.save_pretrained(folder, **options)
        tokenizer(inputs).save_pretrained(folder)
    return folder


def write_folders(root: Path) -> dict[str, Path]:
    """Every kind of folder the tests use, by name."""
    import torch
    import transformers

    torch.manual_seed(0)
    folders = {
        "classifier": save(
            transformers.BertForSequenceClassification(bert_config(num_labels=3)).eval(),
            root / "classifier",
        ),
        "base": save(transformers.BertModel(bert_config()).eval(), root / "base"),
        "sharded": save(
            transformers.BertModel(bert_config()).eval(), root / "sharded", max_shard_size="40KB"
        ),
    }
    gpt2 = transformers.GPT2Config(
        vocab_size=len(SPECIAL) + len(WORDS), n_embd=32, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    gpt2_model = transformers.GPT2LMHeadModel(gpt2).eval()
    folders["gpt2"] = save(gpt2_model, root / "gpt2", ("input_ids", "attention_mask"))
    folders["sentence"] = sentence_folder(folders["base"], root / "sentence")
    # two decoders of 2 layers, 4 heads over 2 key/value heads: LLaMA's heads of 8 keep their
    # RotaryEmbedding nodes, Qwen2's of 16 (with q/k/v biases) are rotated in GroupQueryAttention
    for name, kind, width in (("llama", "Llama", 32), ("qwen2", "Qwen2", 64)):
        model_class = getattr(transformers, f"{kind}ForCausalLM")
        config = model_class.config_class(
            vocab_size=len(SPECIAL) + len(WORDS), hidden_size=width, intermediate_size=2 * width,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, bos_token_id=2, eos_token_id=3,
        )  # fmt: skip
        model = model_class(config).eval()
        folders[name] = save(model, root / name, ("input_ids", "attention_mask"))
    return folders


def sentence_folder(base: Path, folder: Path, pooling: dict | None = None) -> Path:
    """A sentence-transformers layout around the base model: modules.json, 1_Pooling/config.json
    (mean pooling by default, as all-MiniLM-L6-v2 has it), Normalize."""
    shutil.copytree(base, folder)
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(
            [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
        )
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    pooling = pooling or {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return folder


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 14))) for _ in range(count)]


def token_arrays(count: int, length: int = 12, seed: int = 0) -> dict:
    """Token arrays as the tokenizer makes them (ids within the vocabulary, a padded tail)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5, len(SPECIAL) + len(WORDS), (count, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::2, length - 3 :] = 0
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": mask}


def transformers_greedy(module, prompt, new_tokens: int):
    """The tokens transformers' own greedy `generate` gives after `prompt` ([batch, tokens] int64
    ids, no padding) for a loaded decoder folder's module: what compress's loops must match."""
    import torch

    with torch.no_grad():
        return module.model.generate(
            torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
            max_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
        )[:, prompt.shape[1]:].numpy()  # fmt: skip
