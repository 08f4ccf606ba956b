"""A decoder graph is told by its inputs' names, and an ONNX file compress wrote from a decoder
records its positions in its metadata: read back only when it is a sane positive integer."""

from __future__ import annotations

import onnx
import pytest

from compress.models.decoder_graph import POSITIONS_KEY, is_decoder_graph, recorded_positions


def test_a_graph_with_token_inputs_and_a_past_is_a_decoder():
    past = ["past_key_values.0.key", "past_key_values.0.value"]
    assert is_decoder_graph(["input_ids", "attention_mask", "position_ids", *past])
    assert not is_decoder_graph(["input_ids", "attention_mask", "position_ids"])
    assert not is_decoder_graph(["input_ids", "attention_mask", "position_ids", "pixel_values"])


@pytest.mark.parametrize(
    ("value", "read"),
    [("2048", 2048), (" 64 ", 64), ("0", None), ("-5", None), ("1e9", None), ("9" * 400, None),
     ("64.5", None), ("", None)],
)  # fmt: skip
def test_recorded_positions_are_believed_only_when_sane(value, read):
    proto = onnx.ModelProto()
    entry = proto.metadata_props.add()
    entry.key, entry.value = POSITIONS_KEY, value
    assert recorded_positions(proto) == read


def test_a_file_without_the_record_has_no_positions():
    assert recorded_positions(onnx.ModelProto()) is None
