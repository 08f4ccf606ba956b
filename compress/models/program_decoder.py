"""A torch.export program (.pt2) of a causal LM with its key/value cache, run and exported as a
model folder's decoder is (compress.models.decoder).

A program has no config, only the signature it was saved with, so it is taken as a decoder with
its cache when that signature says so, and strictly:

    forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)

the three token inputs int64 [batch, sequence] (the mask [batch, past + sequence]), then a key
and a value per layer, float32 [batch, kv_heads, past, head_dim]; the outputs in the same order,
logits [batch, sequence, vocab] and each present [batch, kv_heads, past + sequence, head_dim].
A program that takes a cache otherwise (names, ranks, dtypes or counts that do not pair, an axis
it fixed) is refused in one line that shows that signature. The program is then run once on a
prefill from an empty cache, as probe_layout runs a folder's model. Its positions are known only
where it bounds the mask's length (`torch.export.Dim("total", max=N)`).

A program that takes input_ids and gives [batch, sequence, vocab] without a cache
(`lm_without_cache`) stays a program run over whole sequences, without generation timing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.config import InputSpec
from compress.errors import ModelLoadError, first_line
from compress.models.decoder import (
    TOKEN_INPUTS,
    DecoderLayout,
    is_decoder,
    positions_from_mask,
)
from compress.models.decoder_graph import MAX_POSITIONS
from compress.models.hf_module import DEFAULT_TOKENS

SIGNATURE = (
    "forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present), the past "
    "and present a key and a value per layer [batch, kv_heads, length, head_dim] float32"
)
FIX = f"export it as {SIGNATURE} (docs/pages/decoders.md shows how)"
PROBE_TOKENS = 8  # the prefill run at load: past the lengths torch.export specialises (0, 1)
_CACHE_NAME = re.compile(r"past|cache", re.IGNORECASE)


@dataclass(frozen=True)
class Port:
    """A user input or output of a program: its name, shape (a size, or a symbol's name where
    the axis is dynamic) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.name} {list(self.shape)} {self.dtype}"


@dataclass(frozen=True)
class Signature:
    """A program's user inputs and outputs, in order."""

    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    @property
    def takes_cache(self) -> bool:
        """A program given input_ids that names a cache (past, cache), or takes more after the
        three token inputs, means to take one."""
        names = [port.name for port in self.inputs]
        if "input_ids" not in names:
            return False
        after_tokens = names[:3] == [*TOKEN_INPUTS, "position_ids"] and len(names) > 3
        return after_tokens or any(_CACHE_NAME.search(name) for name in names)

    @property
    def lm_without_cache(self) -> bool:
        """input_ids [batch, sequence] in, [batch, sequence, vocab] floats first out, and no
        cache: a causal LM over whole sequences (or a token classifier: names cannot tell)."""
        ids = next((port for port in self.inputs if port.name == "input_ids"), None)
        if self.takes_cache or ids is None or not _tokens(ids) or not self.outputs:
            return False
        logits = self.outputs[0]
        floats = logits.dtype.startswith(("float", "bfloat"))
        return floats and len(logits.shape) == 3 and logits.shape[:2] == ids.shape


def signature(program) -> Signature | None:
    """The program's signature; None where an input or output is not a tensor."""
    values = {node.name: node.meta.get("val") for node in program.graph.nodes}
    specs = program.graph_signature
    output = program.graph.output_node().args[0]
    outputs = [
        (spec.arg.name, node.meta.get("val") if hasattr(node, "meta") else None)
        for spec, node in zip(specs.output_specs, output, strict=False)
        if spec.kind.name == "USER_OUTPUT"
    ]
    inputs = [(name, values.get(name)) for name in specs.user_inputs]
    ports = [tuple(_port(name, value) for name, value in group) for group in (inputs, outputs)]
    if any(port is None for group in ports for port in group):
        return None
    return Signature(*ports)  # type: ignore[arg-type]


def _port(name: str, value: Any) -> Port | None:
    if not isinstance(value, torch.Tensor):
        return None
    shape = tuple(size if isinstance(size, int) else str(size) for size in value.shape)
    return Port(name, shape, str(value.dtype).removeprefix("torch."))


def lm_without_cache(program) -> bool:
    """Whether a program looks like a causal LM without a cache (Signature.lm_without_cache)."""
    found = signature(program)
    return found is not None and found.lm_without_cache


def _tokens(port: Port) -> bool:
    return port.dtype == "int64" and len(port.shape) == 2


def decoder_program(program, where: str) -> ProgramDecoder | None:
    """The program as a decoder with its cache, when its signature takes one; None for any
    other program; ModelLoadError (one line) for a cache taken otherwise than SIGNATURE."""
    found = signature(program)
    if found is None or not found.takes_cache:
        return None
    layout = cache_layout(found, where)
    layout.max_positions = _positions(program)
    decoder = ProgramDecoder(program, layout).eval()
    _probe(decoder, where)
    return decoder


def cache_layout(found: Signature, where: str) -> DecoderLayout:
    """The cache a signature that takes one declares; ModelLoadError (one line) unless it is
    SIGNATURE's, with the batch and every length dynamic."""
    inputs, outputs = found.inputs, found.outputs

    def refuse(problem: str) -> ModelLoadError:
        return ModelLoadError(
            f"{where}: the program takes a key/value cache, but not as compress reads one "
            f"({problem}); {FIX}"
        )

    names = [port.name for port in inputs]
    if names[:3] != [*TOKEN_INPUTS, "position_ids"]:
        begin = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise refuse(f"its inputs begin {begin}")
    tokens, past = inputs[:3], inputs[3:]
    bad = next((port for port in tokens if not _tokens(port)), None)
    if bad is not None:
        raise refuse(f"{bad.describe()} is not int64 [batch, sequence]")
    if not past or len(past) % 2:
        raise refuse(f"it takes {len(past)} cache tensors, not a key and a value per layer")
    first = past[0]
    for port in past:
        if port.dtype != "float32" or len(port.shape) != 4:
            raise refuse(f"{port.describe()} is not float32 [batch, kv_heads, past, head_dim]")
        if port.shape[1::2] != first.shape[1::2]:
            raise refuse(f"{port.describe()} has other heads or head size than {first.name}")
    problem = _outputs_problem(outputs, first, len(past))
    if problem:
        raise refuse(problem)
    _check_dynamic(tokens, past, where)
    heads, size = first.shape[1], first.shape[3]
    if not (isinstance(heads, int) and isinstance(size, int)):
        raise refuse(f"{first.describe()} has no fixed head count and head size")
    vocab = int(outputs[0].shape[2])
    return DecoderLayout(layers=len(past) // 2, kv_heads=heads, head_dim=size, vocab=vocab)


def _outputs_problem(outputs: tuple[Port, ...], past: Port, count: int) -> str | None:
    """What keeps the outputs from being logits, then a present like `past` per cache tensor."""
    if len(outputs) != count + 1:
        return f"it gives {len(outputs)} outputs for {count} cache tensors"
    logits = outputs[0]
    if len(logits.shape) != 3 or logits.dtype != "float32" or not isinstance(logits.shape[2], int):
        return f"its first output {logits.describe()} is not logits [batch, sequence, vocab]"
    for port in outputs[1:]:
        if port.dtype != "float32" or len(port.shape) != 4 or port.shape[1::2] != past.shape[1::2]:
            return f"output {port.describe()} is no present of {past.describe()}"
    return None


def _check_dynamic(tokens: tuple[Port, ...], past: tuple[Port, ...], where: str) -> None:
    """Prefill and decode steps run through one graph: every length and the batch must be
    dynamic. A size the program fixed is named, with the fix."""
    ids, mask = tokens[0], tokens[1]
    axes = [("batch", port, 0) for port in (*tokens, *past)]
    axes += [("sequence length", ids, 1), ("total length", mask, 1)]
    axes += [("past length", port, 2) for port in past]
    for what, port, axis in axes:
        size = port.shape[axis]
        if isinstance(size, int):
            raise ModelLoadError(
                f"{where}: the program fixed the {what} at {size} ({port.name} axis {axis}), "
                "but a decoder's prefill and decode steps run through one graph; export it "
                "again with torch.export.Dim.DYNAMIC on that axis in dynamic_shapes, from an "
                "example where it is 2 or more (docs/pages/decoders.md shows how)"
            )


def _positions(program) -> int | None:
    """The longest sequence the program admits: the upper bound of the mask's length, where the
    program was saved with one (a Dim's max); else None."""
    node = next(n for n in program.graph.nodes if n.name == TOKEN_INPUTS[1])
    size = node.meta["val"].shape[1]
    bounds = program.range_constraints.get(getattr(getattr(size, "node", None), "expr", None))
    upper: Any = getattr(bounds, "upper", None)  # a sympy Integer, or int_oo: unbounded
    if getattr(upper, "is_Integer", False) and 1 < int(upper) <= MAX_POSITIONS:
        return int(upper)
    return None


def _probe(decoder: ProgramDecoder, where: str) -> None:
    """One prefill from an empty cache, as every measurement runs the program: its outputs must
    be the layout's (a batch of 2, up to PROBE_TOKENS tokens)."""
    layout = decoder.layout
    tokens = min(PROBE_TOKENS, layout.max_positions or PROBE_TOKENS)
    ids = torch.ones(2, tokens, dtype=torch.int64)
    try:
        with torch.no_grad():
            outputs = decoder(ids, torch.ones_like(ids))
    except Exception as e:  # noqa: BLE001 - any failure: the program cannot prefill
        raise ModelLoadError(
            f"{where}: the program fails on a prefill from an empty cache (batch 2, {tokens} "
            f"tokens, past 0): {first_line(e, 200)}; {FIX}"
        ) from None
    present = (2, layout.kv_heads, tokens, layout.head_dim)
    expected = [(2, tokens, layout.vocab), *[present] * len(layout.present_names)]
    got = [tuple(t.shape) for t in outputs.values()]
    if got != expected:
        raise ModelLoadError(
            f"{where}: on a prefill of {tokens} tokens from an empty cache the program gives "
            f"{got[:2]}..., not logits {expected[0]} and presents {present}; {FIX}"
        )


class ProgramDecoder(nn.Module):
    """A decoder program run as compress.models.decoder.DecoderModule runs a folder's model:
    called with the data's two arrays it runs a prefill from an empty cache; with the position
    ids and every past tensor too, any step. The program runs as saved (its shape guards on)."""

    def __init__(self, program, layout: DecoderLayout) -> None:
        super().__init__()
        self.program = program  # exported as it was saved (compress.torch.program_kv_export)
        self.graph = program.module()
        self.layout = layout
        self.input_names = list(TOKEN_INPUTS)

    def train(self, mode: bool = True) -> ProgramDecoder:
        self.training = mode  # the program's module refuses train() and eval(): it runs as saved
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        *past: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        from torch.utils import _pytree

        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, input_ids.shape[1])
        if not past:
            shape = (len(input_ids), self.layout.kv_heads, 0, self.layout.head_dim)
            past = tuple(torch.zeros(shape) for _ in self.layout.past_names)
        flat = [input_ids, attention_mask, position_ids, *past]
        args, kwargs = _pytree.tree_unflatten(flat, self.program.call_spec.in_spec)
        leaves = _pytree.tree_leaves(self.graph(*args, **kwargs))
        return dict(zip(self.layout.output_names, leaves, strict=True))

    def input_specs(self) -> list[InputSpec]:
        """`model.inputs` for samples made up without data: token ids and mask of
        DEFAULT_TOKENS (fewer where the program admits fewer positions)."""
        tokens = min(DEFAULT_TOKENS, self.layout.max_positions or DEFAULT_TOKENS)
        return [InputSpec(name=n, shape=["batch", tokens], dtype="int64") for n in TOKEN_INPUTS]


def is_program_decoder(model: object) -> bool:
    return isinstance(model, ProgramDecoder)


def is_cached_decoder(model: object) -> bool:
    """A torch model compress runs and exports with its key/value cache: a model folder's
    decoder (compress.models.decoder.DecoderModule) or a decoder program (ProgramDecoder)."""
    return is_decoder(model) or is_program_decoder(model)
