"""How a decoder exported with its key/value cache is told from its graph's inputs (the names
compress.models.decoder gives them): `input_ids`, `attention_mask`, `position_ids`, then one
`past_key_values.N.key/value` per layer. Names only: nothing here needs torch."""

from __future__ import annotations

from collections.abc import Sequence

PAST_PREFIX = "past_key_values."
TOKEN_INPUTS = ("input_ids", "attention_mask", "position_ids")


def is_decoder_graph(names: Sequence[str]) -> bool:
    """Whether a graph's inputs are a decoder's with its cache."""
    return (
        tuple(names[:3]) == TOKEN_INPUTS
        and len(names) > 3
        and all(name.startswith(PAST_PREFIX) for name in names[3:])
    )
