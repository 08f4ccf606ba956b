"""A `.safetensors` file, checked before any tensor is read.

The format (huggingface/safetensors): 8 bytes, a little-endian unsigned length N; N bytes of
UTF-8 JSON, an object mapping each tensor's name to `{dtype, shape, data_offsets: [begin, end]}`
(offsets into the data section that follows), with an optional `__metadata__` object of strings;
then the data section. Its reader trusts the header's offsets and shapes, so a crafted header
could make it read past the file or make two tensors share bytes. The header is checked here the
way the format's own specification states it: a bounded length, a JSON object without duplicate
names, known dtypes, each range exactly as long as its shape and dtype say, and the ranges
sorted, without gap or overlap, covering the data section to its last byte. Only then does
safetensors read the tensors, from the bytes that were checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from compress.errors import ModelLoadError, first_line
from compress.models.regular_files import regular_size

MAX_HEADER_BYTES = 100 << 20  # safetensors' own ceiling; real headers are a few MB at most
ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
    "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
INSTALL_HF = "pip install 'compress-onnx[hf]' (in a checkout: make install)"


class BadHeader(Exception):
    """Why a header is refused, in words; the caller names the file."""


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets into the data section
    end: int


def looks_like_safetensors(head: bytes) -> bool:
    """The first bytes of a safetensors file: a header length that is not absurd, then `{`."""
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= MAX_HEADER_BYTES and head[8:9] == b"{"


def header_problem(handle: BinaryIO, file_size: int) -> str | None:
    """Why the header of the open file is not one safetensors would read safely, or None."""
    try:
        read_entries(handle, file_size)
    except BadHeader as e:
        return str(e)
    return None


def read_entries(handle: BinaryIO, file_size: int) -> dict[str, TensorEntry]:
    """The tensors the header declares, once every check has passed (BadHeader otherwise)."""
    handle.seek(0)
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise BadHeader(f"{file_size} bytes is shorter than the 8-byte header length")
    length = int.from_bytes(prefix, "little")
    if length > MAX_HEADER_BYTES:
        raise BadHeader(f"the header declares {length:,} bytes, over {MAX_HEADER_BYTES:,}")
    if 8 + length > file_size:
        raise BadHeader(f"the header declares {length:,} bytes but the file has {file_size:,}")
    raw = handle.read(length)
    if len(raw) != length:
        raise BadHeader("the file ended inside its header")
    entries = _parse(raw)
    _check_layout(entries, file_size - 8 - length)
    return entries


def _parse(raw: bytes) -> dict[str, TensorEntry]:
    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise BadHeader(f"the header names {_first_repeat(keys)!r} twice")
        return dict(pairs)

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except UnicodeDecodeError:
        raise BadHeader("the header is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise BadHeader("the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise BadHeader("the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise BadHeader("__metadata__ must map strings to strings")
    return {name: _entry(name, value) for name, value in header.items()}


def _entry(name: str, value) -> TensorEntry:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise BadHeader(f"tensor {name!r} must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in ITEM_BYTES:
        raise BadHeader(f"tensor {name!r} has the unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_whole(d) for d in shape):
        raise BadHeader(f"tensor {name!r} has a shape that is not a list of sizes >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_whole, offsets))):
        raise BadHeader(f"tensor {name!r}: data_offsets must be two whole numbers")
    begin, end = offsets
    if end < begin or end - begin != math.prod(shape) * ITEM_BYTES[dtype]:
        raise BadHeader(
            f"tensor {name!r}: data_offsets [{begin}, {end}] do not hold a {dtype} tensor of "
            f"shape {shape}"
        )
    return TensorEntry(dtype, tuple(shape), begin, end)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_layout(entries: dict[str, TensorEntry], data_bytes: int) -> None:
    """The ranges, sorted, must follow each other from 0 to the end of the data section."""
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position:
            what = "overlaps the tensor before it" if entry.begin < position else "leaves a gap"
            raise BadHeader(f"tensor {name!r} at byte {entry.begin} {what}")
        position = entry.end
    if position != data_bytes:
        raise BadHeader(
            f"the tensors cover {position:,} bytes but the data section has {data_bytes:,}"
        )


def _first_repeat(keys: list[str]) -> str:
    seen: set[str] = set()
    for k in keys:
        if k in seen:
            return k
        seen.add(k)
    raise ValueError("no key repeats")


def check_file(path: Path, what: str) -> None:
    """ModelLoadError naming the file when its header is not safe to hand to a reader."""
    size = regular_size(path, what)
    try:
        with open(path, "rb") as handle:
            problem = header_problem(handle, size)
    except OSError as e:
        raise ModelLoadError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if problem:
        raise _invalid(path, problem)


def _invalid(path: Path, problem: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path}: not a valid safetensors file ({problem}); it is truncated, corrupt or "
        "crafted: save it again (safetensors.torch.save_file / save_pretrained)"
    )


def load_state_dict(path: Path) -> dict:
    """The tensors of a checked file, as a state_dict: the file is read once, and the bytes
    whose header was checked are the ones safetensors reads."""
    import io

    try:
        from safetensors.torch import load
    except ImportError:
        raise ModelLoadError(
            f"{path}: reading a .safetensors file needs the safetensors package: {INSTALL_HF}"
        ) from None
    size = regular_size(path, "the model")
    try:
        with open(path, "rb") as handle:
            data = handle.read(size + 1)
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from None
    problem = "it changed while it was read" if len(data) != size else None
    problem = problem or header_problem(io.BytesIO(data), len(data))
    if problem:
        raise _invalid(path, problem)
    try:
        return dict(load(data))
    except Exception as e:  # a dtype this torch lacks, say
        raise ModelLoadError(
            f"{path}: safetensors cannot read its tensors ({first_line(e)})"
        ) from None
