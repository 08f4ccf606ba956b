"""Causal LMs saved as torch.export programs (.pt2), the way docs/pages/decoders.md tells users
to: a wrapper whose forward takes the cache as flat key/value tensors, exported with
Dim.DYNAMIC on the batch and every length, saved with torch.export.save. Tiny transformers
models (hidden 32, 2 layers, the hf_folders vocabulary, so that its tokenizer fits them) and a
toy one whose signature a test can bend; and the interface a decoder's ONNX export has."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tests.helpers.hf_folders import SPECIAL, WORDS

VOCAB = len(SPECIAL) + len(WORDS)
DYNAMIC, STATIC = torch.export.Dim.DYNAMIC, torch.export.Dim.STATIC


class WithCache(nn.Module):
    """forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, use_cache=True,
        )  # fmt: skip
        return (out.logits, *[t for layer in out.cache.layers for t in (layer.keys, layer.values)])


def causal_lm(kind: str) -> nn.Module:
    """A tiny GPT-2 (4 heads) or LLaMA (4 heads over 2 key/value heads) with random weights."""
    import transformers

    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=2,
            eos_token_id=3,
        )  # fmt: skip
        return transformers.GPT2LMHeadModel(config).eval()
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def step_example(
    layers: int, kv_heads: int, head_dim: int, fixed: tuple[str, ...] = (),
    positions: int | None = None,
):  # fmt: skip
    """(arguments, dynamic_shapes) of a step of 3 tokens after a cache of 2, at batch 2 (lengths
    of 2 or more: torch.export specialises 0 and 1); `fixed`: axes left static, of "batch",
    "sequence", "total", "past"; `positions`: the mask's length bounded at that (the docs' Dim
    max, how a program tells its positions)."""
    ids = torch.randint(0, VOCAB, (2, 3))
    past = [torch.randn(2, kv_heads, 2, head_dim) for _ in range(2 * layers)]
    mask = torch.ones(2, 5, dtype=torch.int64)
    steps = torch.arange(2, 5).expand(2, 3).contiguous()
    bound = positions

    def axes(**named: int) -> dict:
        return {axis: STATIC if name in fixed else DYNAMIC for name, axis in named.items()}

    tokens = axes(batch=0, sequence=1)
    cache = tuple(axes(batch=0, past=2) for _ in past)
    total = axes(batch=0, total=1)
    if bound:
        total[1] = DYNAMIC(max=bound)
    return (ids, mask, steps, *past), (tokens, total, dict(tokens), cache)


def causal_lm_program(kind: str, positions: int | None = None):
    """A transformers causal LM with its cache, exported as the docs export one (`positions`:
    the mask's length bounded at that, as the docs bound it at the config's)."""
    model = causal_lm(kind)
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = config.hidden_size // config.num_attention_heads
    args, shapes = step_example(config.num_hidden_layers, heads, head_dim, positions=positions)
    return torch.export.export(WithCache(model), args, dynamic_shapes=shapes)


class ToyDecoder(nn.Module):
    """A causal LM in a few lines (an embedding, a cache of projected tokens per layer, a head):
    quick to export in whatever signature a test needs."""

    def __init__(self, layers: int = 2, heads: int = 2, head_dim: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, heads * head_dim)
        self.keys = nn.ModuleList(
            nn.Linear(heads * head_dim, heads * head_dim) for _ in range(layers)
        )
        self.head = nn.Linear(heads * head_dim, VOCAB)
        self.heads, self.head_dim = heads, head_dim

    def forward(self, input_ids, attention_mask, position_ids, *past):
        hidden = self.embed(input_ids) + position_ids[..., None] * 0.01
        batch, tokens, _ = hidden.shape
        present = []
        for index, project in enumerate(self.keys):
            new = project(hidden).view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)
            keys = torch.cat([past[2 * index], new], dim=2)
            values = torch.cat([past[2 * index + 1], new], dim=2)
            present += [keys, values]
            seen = torch.arange(1, values.shape[2] + 1)[-tokens:, None]  # causal: a running mean
            mean = values.cumsum(dim=2)[:, :, -tokens:] / seen
            hidden = hidden + mean.transpose(1, 2).flatten(2)
        return (self.head(hidden), *present)


def save_toy(path: Path, module: nn.Module | None = None, fixed: tuple[str, ...] = ()) -> Path:
    """ToyDecoder (or `module`, taking the same arguments) exported with the cache; `fixed`:
    axes left static (step_example)."""
    args, shapes = step_example(2, 2, 16, fixed)
    program = torch.export.export(module or ToyDecoder(), args, dynamic_shapes=shapes)
    torch.export.save(program, path)
    return path


class ToyWithoutCache(nn.Module):
    """A causal LM over whole sequences: input_ids and the mask in, logits out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(VOCAB, 32), nn.Linear(32, VOCAB)

    def forward(self, input_ids, attention_mask):
        return self.head(self.embed(input_ids) * attention_mask[..., None])


def save_toy_without_cache(path: Path) -> Path:
    ids = torch.randint(0, VOCAB, (2, 6))
    tokens = {0: DYNAMIC, 1: DYNAMIC}
    program = torch.export.export(
        ToyWithoutCache(), (ids, torch.ones_like(ids)), dynamic_shapes=(tokens, dict(tokens))
    )
    torch.export.save(program, path)
    return path


def dims(value_info) -> list:
    """An ONNX value's axes: sizes, and the names of dynamic ones."""
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def interface(path) -> dict[str, list]:
    """Every input and output of an ONNX file, by name, with its axes."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {value.name: dims(value) for value in [*graph.input, *graph.output]}


def expected_interface(layers: int, kv_heads: int, head_dim: int, vocab: int) -> dict[str, list]:
    """The inputs and outputs, with their axes, of a folder's decoder export (kv_export)."""
    axes = {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "total_sequence"]}
    axes |= {"position_ids": ["batch", "sequence"]}
    for i in range(layers):
        for kind in ("key", "value"):
            axes[f"past_key_values.{i}.{kind}"] = ["batch", kv_heads, "past_sequence", head_dim]
    axes["logits"] = ["batch", "sequence", vocab]
    for i in range(layers):
        for kind in ("key", "value"):
            axes[f"present.{i}.{kind}"] = ["batch", kv_heads, "past_sequence + sequence", head_dim]
    return axes
