"""A causal language model as compress runs and exports it: with its key/value cache.

A decoder's cost is generation: a prefill over the prompt, then one token at a time against the
cache. So a `text-generation` folder becomes a `DecoderModule` whose forward is the one ONNX
Runtime GenAI's model builder writes: `input_ids`, `attention_mask`, `position_ids` and
`past_key_values.N.key/value` in, `logits` and `present.N.key/value` out. Data feeds only the
token ids and the mask: the position ids follow from the mask (as transformers computes them)
and the cache starts empty, in torch here and in ONNX Runtime (compress.measure.decoder_feeds).

The cache's shape is read off the model by running it once (`probe_layout`), not from config
keys that differ between architectures (GPT-2's `n_head`, LLaMA's `num_key_value_heads`).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.errors import ModelLoadError
from compress.models.hf_module import FolderModule, model_positions
from compress.records import Record

TOKEN_INPUTS = ["input_ids", "attention_mask"]  # what data feeds a decoder, in this order
PAST = "past_key_values"
PRESENT = "present"


class DecoderLayout(Record):
    """The key/value cache of a decoder: one key and one value [batch, kv_heads, tokens,
    head_dim] per layer."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int | None = None

    @property
    def past_names(self) -> list[str]:
        return [f"{PAST}.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        return [f"{PRESENT}.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    @property
    def input_names(self) -> list[str]:
        return [*TOKEN_INPUTS, "position_ids", *self.past_names]

    @property
    def output_names(self) -> list[str]:
        return ["logits", *self.present_names]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return [np.zeros(shape, np.float32) for _ in self.past_names]


def positions_from_mask(mask: torch.Tensor, tokens: int) -> torch.Tensor:
    """The position ids of the last `tokens` tokens (compress.measure.decoder_feeds.positions,
    in torch)."""
    counted = mask.long().cumsum(-1) - 1
    return counted.masked_fill(mask == 0, 1)[:, -tokens:]


def _cache_argument(model: nn.Module) -> str:
    """The keyword the model's forward takes its cache by (`cache` in transformers 5.x,
    `past_key_values` before)."""
    taken = inspect.signature(model.forward).parameters
    return "cache" if "cache" in taken else PAST


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, PAST, None)


def _pairs(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Each layer's (keys, values) of a transformers cache made of plain layers; None for a
    cache compress cannot flatten (sliding windows kept apart, recurrent states, legacy)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    pairs = []
    for layer in layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not (isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor)):
            return None
        if keys.ndim != 4 or values.shape != keys.shape:
            return None
        pairs.append((keys, values))
    return pairs


def transformers_config(model: nn.Module) -> Any:
    """A transformers model's config (nn.Module types its attributes as tensors or modules)."""
    return model.config


def probe_layout(model: nn.Module, where: str) -> DecoderLayout:
    """The cache layout of a transformers causal LM, from one forward over two tokens;
    ModelLoadError when it keeps no cache compress can export."""
    from transformers import DynamicCache

    config = transformers_config(model)
    ids = torch.tensor([[1, 2]])
    try:
        with torch.no_grad():
            output = model(
                input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True,
                return_dict=True, **{_cache_argument(model): DynamicCache(config=config)},
            )  # fmt: skip
        pairs = _pairs(_cache_of(output))
    except Exception:  # noqa: BLE001 - any failure means: no cache path to export
        pairs = None
    if not pairs:
        raise ModelLoadError(
            f"{where}: {type(model).__name__} keeps no key/value cache compress can export (a "
            "transformers DynamicCache of one key and value per layer); set model.task to "
            "another task, or export the model yourself with its cache"
        )
    keys = pairs[0][0]
    return DecoderLayout(
        layers=len(pairs),
        kv_heads=int(keys.shape[1]),
        head_dim=int(keys.shape[3]),
        vocab=int(output.logits.shape[-1]),
        max_positions=model_positions(config),
    )


def is_decoder(model: object) -> bool:
    """A model folder's decoder, exported with its cache (DecoderModule); a .pt2's is
    compress.models.program_decoder's, and is_cached_decoder tells either."""
    return hasattr(model, "export_arguments") and hasattr(model, "layout")


class DecoderModule(FolderModule):
    """A transformers causal LM with its cache as flat tensors (see the module's docstring).

    Called with the data's two arrays it runs a prefill from an empty cache; called with the
    position ids and every past tensor too, it runs any step (what the export traces)."""

    def __init__(self, model: nn.Module, layout: DecoderLayout) -> None:
        super().__init__(model, list(TOKEN_INPUTS), tuple(layout.output_names))
        self.layout = layout
        self._extra = {}
        self._cache_argument = _cache_argument(model)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        *past: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        from transformers import DynamicCache

        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, input_ids.shape[1])
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        config = transformers_config(self.model)
        cache = DynamicCache(ddp_cache_data=pairs, config=config) if pairs else None
        cache = cache if cache is not None else DynamicCache(config=config)
        result = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            use_cache=True, return_dict=True, **{self._cache_argument: cache},
        )  # fmt: skip
        flat = [t for pair in _pairs(_cache_of(result)) or [] for t in pair]
        return dict(zip(self.layout.output_names, [result.logits, *flat], strict=True))

    def export_arguments(self, ids: np.ndarray, past_tokens: int) -> tuple[torch.Tensor, ...]:
        """Arguments for torch.export: `ids` [batch, tokens] after a cache of `past_tokens`
        random entries (lengths of 2 or more, so that no axis is specialised to 0 or 1)."""
        batch, tokens = ids.shape
        generator = torch.Generator().manual_seed(0)
        shape = (batch, self.layout.kv_heads, past_tokens, self.layout.head_dim)
        past = [torch.randn(shape, generator=generator) for _ in self.layout.past_names]
        mask = torch.ones(batch, past_tokens + tokens, dtype=torch.int64)
        positions = torch.arange(past_tokens, past_tokens + tokens).expand(batch, tokens)
        return (torch.from_numpy(ids), mask, positions.contiguous(), *past)


def decoder_module(model: nn.Module, input_names: list[str], where: str) -> DecoderModule:
    """The DecoderModule of a loaded causal LM fed `input_names` by the data; ModelLoadError
    for other inputs, or a model without an exportable cache."""
    if list(input_names) != TOKEN_INPUTS:
        raise ModelLoadError(
            f"{where}: a decoder is fed input_ids and attention_mask (the data gives "
            f"{', '.join(input_names)}); name those two in data.*.inputs"
        )
    return DecoderModule(model, probe_layout(model, where)).eval()
