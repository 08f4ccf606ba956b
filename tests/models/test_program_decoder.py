"""A .pt2 is a decoder with its key/value cache when its signature says so, strictly: the three
token inputs, then a key and a value per layer, and logits with a present per past tensor out,
the batch and every length dynamic. A cache taken otherwise is one line naming the signature
expected, or the axis the program fixed; a program over whole sequences stays a program."""

from __future__ import annotations

import pytest
import torch

from compress.config import ModelSection
from compress.errors import ModelLoadError
from compress.models import load_model
from compress.models.program_decoder import (
    Port,
    ProgramDecoder,
    Signature,
    cache_layout,
    decoder_program,
    lm_without_cache,
)
from tests.helpers.program_decoders import ToyDecoder, step_example

TOKENS = [Port(n, ("s0", "s1"), "int64") for n in ("input_ids", "attention_mask", "position_ids")]
TOKENS[1] = Port("attention_mask", ("s0", "s2"), "int64")


def cached(past: list[Port] | None = None, outputs: list[Port] | None = None, tokens=TOKENS):
    """The signature the docs export, of 2 layers of 2 key/value heads of 8 (or as changed)."""
    past = past or [Port(f"past_{i}", ("s0", 2, "s3", 8), "float32") for i in range(4)]
    present = [Port(f"cat_{i}", ("s0", 2, "s1 + s3", 8), "float32") for i in range(4)]
    logits = Port("linear", ("s0", "s1", 131), "float32")
    return Signature(tuple(tokens) + tuple(past), tuple(outputs or [logits, *present]))


def test_the_signature_the_docs_export_gives_the_cache_layout():
    layout = cache_layout(cached(), "m.pt2")
    assert (layout.layers, layout.kv_heads, layout.head_dim, layout.vocab) == (2, 2, 8, 131)
    assert cached().takes_cache and not cached().lm_without_cache


def _past(shape=("s0", 2, "s3", 8), dtype="float32", count=4) -> list[Port]:
    return [Port(f"past_{i}", shape, dtype) for i in range(count)]


@pytest.mark.parametrize(
    ("signature", "needle"),
    [
        (cached(tokens=[TOKENS[0], TOKENS[1], Port("cache", ("s0", 2, "s3", 8), "float32")]),
         "its inputs begin input_ids, attention_mask, cache"),
        (cached(past=_past(count=3)), "it takes 3 cache tensors"),
        (cached(past=_past(dtype="float16")), "past_0 ['s0', 2, 's3', 8] float16 is not float32"),
        (cached(past=_past()[:2] + _past(shape=("s0", 4, "s3", 8))[2:]), "past_2 ['s0', 4"),
        (cached(outputs=[Port("linear", ("s0", "s1", 131), "float32")]), "gives 1 outputs for 4"),
        (cached(tokens=[TOKENS[0], Port("attention_mask", ("s0", "s2"), "bool"), TOKENS[2]]),
         "attention_mask ['s0', 's2'] bool is not int64"),
    ],
)  # fmt: skip
def test_a_cache_taken_otherwise_is_refused_with_the_signature_expected(signature, needle):
    with pytest.raises(ModelLoadError) as refused:
        cache_layout(signature, "m.pt2")
    message = str(refused.value)
    assert "\n" not in message and needle in message, message
    assert "forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)" in (
        message
    )


@pytest.mark.parametrize(
    ("signature", "needle"),
    [
        (cached(past=_past(shape=("s0", 2, 5, 8))), "fixed the past length at 5 (past_0 axis 2)"),
        (cached(tokens=[Port("input_ids", (1, "s1"), "int64"), *TOKENS[1:]]),
         "fixed the batch at 1 (input_ids axis 0)"),
        (cached(tokens=[TOKENS[0], Port("attention_mask", ("s0", 7), "int64"), TOKENS[2]]),
         "fixed the total length at 7"),
    ],
)  # fmt: skip
def test_an_axis_the_program_fixed_is_named_with_the_fix(signature, needle):
    with pytest.raises(ModelLoadError, match="Dim.DYNAMIC on that axis") as refused:
        cache_layout(signature, "m.pt2")
    assert needle in str(refused.value)


def test_a_program_over_whole_sequences_is_told_from_other_programs():
    ids, mask = TOKENS[0], Port("attention_mask", ("s0", "s1"), "int64")
    logits = Port("linear", ("s0", "s1", 131), "float32")
    assert Signature((ids, mask), (logits,)).lm_without_cache
    classes = Port("linear", ("s0", 5), "float32")
    assert not Signature((ids, mask), (classes,)).lm_without_cache
    image = Port("x", ("s0", 3, 32, 32), "float32")
    assert not Signature((image,), (logits,)).lm_without_cache
    assert not Signature((image,), (logits,)).takes_cache


def test_a_decoder_program_loads_and_runs_a_prefill_from_an_empty_cache(toy_programs):
    path = toy_programs["cache"]
    loaded = load_model(path, ModelSection(), path.parent)
    decoder = loaded.model
    assert isinstance(decoder, ProgramDecoder) and loaded.format == "exported_program"
    assert loaded.fixed_batch is None and loaded.positions is None  # Dim.DYNAMIC: unbounded
    layout = decoder.layout
    assert (layout.layers, layout.kv_heads, layout.head_dim) == (2, 2, 16)
    ids = torch.tensor([[5, 6, 7]])  # batch 1, as generation runs: the program admits it
    outputs = decoder(ids, torch.ones_like(ids))
    assert list(outputs) == layout.output_names
    assert outputs["present.1.value"].shape == (1, 2, 3, 16)
    assert not lm_without_cache(decoder.program)
    plain = load_model(toy_programs["no_cache"], ModelSection(), path.parent).model
    assert lm_without_cache(plain) and not isinstance(plain, ProgramDecoder)


def test_the_positions_are_known_where_the_program_bounds_the_masks_length():
    args, shapes = step_example(2, 2, 16)
    shapes[1][1] = torch.export.Dim.DYNAMIC(max=48)
    program = torch.export.export(ToyDecoder(), args, dynamic_shapes=shapes)
    assert decoder_program(program, "toy.pt2").layout.max_positions == 48
