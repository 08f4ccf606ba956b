"""A .safetensors file is a state_dict: with model.arch it loads as a torch.save one does, and a
header that would make the reader go wrong (length, JSON, dtypes, offsets outside the file,
overlaps, gaps) is refused in one line naming the file before any tensor is read."""

from __future__ import annotations

import io
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from compress.config import ModelSection
from compress.errors import ModelLoadError
from compress.models import detect_format, load_model
from compress.models.safetensors_file import header_problem
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.configs import STATE_DICT_CONFIG, write_config
from tests.helpers.paths import SAMPLES


def raw(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def framed(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
ONE = b'{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x01\x00", "shorter than the 8-byte header length"),
        (raw({"a": F32_2x2}, bytes(16), length=10**12), "over 104,857,600"),
        (raw({"a": F32_2x2}, bytes(16), length=500), "but the file has"),
        (framed(b"{no}") + bytes(16), "not valid JSON"),
        (framed(b"[]"), "not a JSON object"),
        (raw({"a": {**F32_2x2, "dtype": "F33"}}, bytes(16)), "unknown dtype 'F33'"),
        (raw({"a": {**F32_2x2, "data_offsets": [0, 12]}}, bytes(16)), "do not hold"),
        (raw({"a": F32_2x2}, bytes(8)), "cover 16 bytes but the data section has 8"),
        (raw({"a": F32_2x2}, bytes(24)), "cover 16 bytes but the data section has 24"),
        (
            raw({"a": F32_2x2, "b": {**F32_2x2, "data_offsets": [8, 24]}}, bytes(24)),
            "overlaps the tensor before it",
        ),
        (raw({"a": {**F32_2x2, "data_offsets": [8, 24]}}, bytes(24)), "leaves a gap"),
        (raw({"a": {**F32_2x2, "shape": [2, -2]}}, bytes(16)), "not a list of sizes"),
        (raw({"a": {**F32_2x2, "extra": 1}}, bytes(16)), "exactly dtype, shape"),
        (raw({"__metadata__": {"format": 1}, "a": F32_2x2}, bytes(16)), "strings to strings"),
        (framed(b'{"a": %s, "a": %s}' % (ONE, ONE)) + bytes(4), "names 'a' twice"),
    ],
)
def test_bad_headers_are_named(content, reason):
    assert reason in header_problem(io.BytesIO(content), len(content))


def test_a_saved_file_passes_the_checks(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(3, 5), "b": torch.ones(7, dtype=torch.int64)}, str(path))
    with open(path, "rb") as handle:
        assert header_problem(handle, path.stat().st_size) is None
    assert detect_format(path) == "safetensors"


def test_state_dict_with_arch_loads_like_torch_save(tmp_path):
    """The sample CNN's state_dict saved as safetensors runs through `compress run` with
    model.arch as its torch.save twin does, and gives the same outputs."""
    state = torch.load(SAMPLES / "digits_cnn_state.pt", weights_only=True)
    path = tmp_path / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    section = ModelSection(arch="arch.py:DigitsCNN")
    loaded = load_model(path, section, SAMPLES)
    reference = load_model(SAMPLES / "digits_cnn_state.pt", section, SAMPLES)
    assert loaded.format == "safetensors"
    sample = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.model(sample), reference.model(sample))
    with pytest.raises(ModelLoadError, match="missing keys"):
        save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
        load_model(tmp_path / "other.safetensors", section, SAMPLES)


def test_a_truncated_file_is_refused_by_the_cli(tmp_path):
    state = torch.load(SAMPLES / "digits_cnn_state.pt", weights_only=True)
    path = tmp_path / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    config = write_config(tmp_path, STATE_DICT_CONFIG)
    (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
    result = invoke("run", path, "-c", config, "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", str(path), "not a valid safetensors file")
