"""How a decoder exported with its key/value cache is told from its graph's inputs (the names
compress.models.decoder gives them): `input_ids`, `attention_mask`, `position_ids`, then one
`past_key_values.N.key/value` per layer. Names only: nothing here needs torch."""

from __future__ import annotations

from collections.abc import Sequence

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."  # the cache outputs: present.N.key/value
TOKEN_INPUTS = ("input_ids", "attention_mask", "position_ids")


def cache_nodes(graph) -> list[str]:
    """The nodes of a decoder's graph (a GraphProto) that read its cache inputs or write its
    cache outputs (`present.N.key/value`): the Concat that appends a step's keys to the past."""
    inputs = [i.name for i in graph.input]
    if not is_decoder_graph(inputs):
        return []
    past = {name for name in inputs if name.startswith(PAST_PREFIX)}
    present = {o.name for o in graph.output if o.name.startswith(PRESENT_PREFIX)}
    return [
        node.name
        for node in graph.node
        if past.intersection(node.input) or present.intersection(node.output)
    ]


def is_decoder_graph(names: Sequence[str]) -> bool:
    """Whether a graph's inputs are a decoder's with its cache."""
    return (
        tuple(names[:3]) == TOKEN_INPUTS
        and len(names) > 3
        and all(name.startswith(PAST_PREFIX) for name in names[3:])
    )


POSITIONS_KEY = "compress.max_positions"  # metadata of an exported decoder: its longest sequence
MAX_POSITIONS = 100_000_000  # a recorded value past this is not believed


def recorded_positions(proto) -> int | None:
    """The longest sequence a decoder ONNX file compress wrote records (POSITIONS_KEY in its
    metadata), or None where it records none. The file is untrusted: a value that is not a
    positive integer of sane size counts as none."""
    for prop in getattr(proto, "metadata_props", []):
        if prop.key != POSITIONS_KEY:
            continue
        value = prop.value.strip()
        if value.isdigit() and len(value) <= 9 and 0 < int(value) <= MAX_POSITIONS:
            return int(value)
        return None
    return None
