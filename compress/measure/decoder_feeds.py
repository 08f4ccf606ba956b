"""What ONNX Runtime is fed for a decoder exported with its key/value cache, from the data's
token ids and attention mask alone.

Data holds `input_ids` and `attention_mask`; the graph also takes `position_ids` and one
`past_key_values.N.key/value` per layer (compress.models.decoder). Every place that runs a
graph on data fills them in here: the position ids as transformers computes them from the mask,
the cache empty (a prefill). The cache's head count and size are read off each graph's own
inputs, so a pruned stage (fewer heads) is fed as it declares itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.models.decoder_graph import is_decoder_graph

FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, 1: np.float32}
FLOAT_TYPES |= {10: np.float16}

# (name, shape, element type) of a graph input: shape dims are ints or names (None: unknown)
Declared = tuple[str, list[Any], Any]


def positions(mask: np.ndarray, tokens: int) -> np.ndarray:
    """The position ids of the last `tokens` tokens: the count of attended tokens before each
    (transformers' rule; padding gets 1, which attention never reads)."""
    counted = np.cumsum(mask.astype(np.int64), axis=-1) - 1
    return np.where(mask == 0, 1, counted)[:, -tokens:]


def completed_feeds(declared: Sequence[Declared], arrays: Sequence[np.ndarray]) -> dict:
    """The feed for a graph whose inputs are `declared`, given `arrays` for the first of them;
    a decoder given its token ids and mask gets its position ids and an empty cache."""
    names = [name for name, _, _ in declared]
    feed = dict(zip(names, arrays, strict=False))
    if len(arrays) == len(names) or not is_decoder_graph(names) or len(arrays) != 2:
        if len(arrays) != len(names):
            raise ValueError(f"the model takes {len(names)} inputs, the data gives {len(arrays)}")
        return feed
    ids, mask = arrays
    feed["position_ids"] = positions(mask, ids.shape[1])
    for name, shape, element in declared[3:]:
        heads, size = shape[1], shape[3]
        dtype = FLOAT_TYPES.get(element, np.float32)
        feed[name] = np.zeros((len(ids), heads, 0, size), dtype)
    return feed


def session_inputs(session: Any) -> list[Declared]:
    """An ONNX Runtime session's inputs as `Declared`."""
    return [(i.name, list(i.shape), i.type) for i in session.get_inputs()]


def graph_declared(proto: Any) -> list[Declared]:
    """An ONNX graph's inputs (initializers left out) as `Declared`."""
    initializers = {t.name for t in proto.graph.initializer}
    declared = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
        declared.append((value.name, dims, tensor.elem_type))
    return declared


def is_decoder_proto(proto: Any) -> bool:
    """Whether the ONNX model holds a decoder exported with its key/value cache (its inputs)."""
    return is_decoder_graph([name for name, _, _ in graph_declared(proto)])


def is_decoder_file(path: Path) -> bool:
    """is_decoder_proto of the ONNX file; its weights are not read."""
    import onnx

    return is_decoder_proto(onnx.load(str(path), load_external_data=False))


def decode_step_feed(
    declared: Sequence[Declared], batch: int, past_tokens: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """One decode step's feed: a token per row after a cache of `past_tokens` entries (random
    values: a step's cost does not depend on them)."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {
        "input_ids": rng.integers(0, 2, (batch, 1)).astype(np.int64),
        "attention_mask": np.ones((batch, past_tokens + 1), np.int64),
        "position_ids": np.full((batch, 1), past_tokens, np.int64),
    }
    for name, shape, element in declared[3:]:
        dtype = FLOAT_TYPES.get(element, np.float32)
        values = rng.standard_normal((batch, shape[1], past_tokens, shape[3]))
        feed[name] = values.astype(dtype)
    return feed
