"""ONNX files whose weights may not fit in one: protobuf cannot hold a message over 2 GiB, so a
model whose weights pass EXTERNAL_BYTES is saved with its tensors in one external data file
beside it, named after it (`model.onnx` -> `model.onnx.data`). Every ONNX file compress writes
goes through `save_onnx`; a run's result is published with its data file (`published`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

EXTERNAL_BYTES = 1_800_000_000  # weights past this go to external data (protobuf: 2 GiB)
SMALL_TENSOR = 1024  # tensors up to this size stay inside the model file


def data_file(path: Path) -> Path:
    """Where `path`'s external data goes: beside it, named after it."""
    return path.with_name(path.name + ".data")


def weight_bytes(proto) -> int:
    """The bytes of the model's initializers as stored (raw or typed fields)."""
    return sum(tensor.ByteSize() for tensor in proto.graph.initializer)


def needs_external_data(model) -> bool:
    """Whether a torch model's weights (as float32 in ONNX) pass EXTERNAL_BYTES: the export
    then saves them in the data file."""
    state = getattr(model, "state_dict", {})  # a method of a module, a dict of a program
    state = state() if callable(state) else state
    unique = {t.data_ptr(): t for t in state.values() if hasattr(t, "data_ptr")}  # tied: once
    return sum(t.numel() * 4 for t in unique.values()) > EXTERNAL_BYTES


def save_onnx(proto, path: Path) -> None:
    """Save `proto` at `path`: in one file, or with its weights in `data_file(path)` when they
    pass EXTERNAL_BYTES (a data file left from an earlier save there is removed either way)."""
    import onnx

    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        data_file(path).unlink()
    if weight_bytes(proto) <= EXTERNAL_BYTES:
        onnx.save_model(proto, str(path))
        return
    onnx.save_model(
        proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=data_file(path).name, size_threshold=SMALL_TENSOR,
    )  # fmt: skip


def has_external_data(proto) -> bool:
    """Whether a ModelProto (loaded without its external data) keeps tensors in a data file."""
    return any(tensor.external_data for tensor in _tensors(proto))


def keeps_external_data(path: Path) -> bool:
    """Whether the model at `path` keeps its weights in a data file: ONNX Runtime's tools that
    rewrite it (quantizers, pre-processing) are then asked to write theirs so too, as they
    would otherwise serialize them into one protobuf (2 GiB at most)."""
    return bool(external_locations(path))


def external_locations(path: Path) -> set[str]:
    """The external data files the model at `path` refers to (none: all in the file)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in _tensors(proto)
        for entry in tensor.external_data
        if entry.key == "location"
    }


def relocated(path: Path, name: str) -> bytes:
    """The model file at `path` with its one external data file renamed `name` (the weights
    are not read: only the small model file is rewritten)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for tensor in _tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = name
    return proto.SerializeToString()


def _tensors(proto):
    yield from proto.graph.initializer
    for node in proto.graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t


def replace_onnx(source: Path, target: Path) -> None:
    """Move the model at `source` (and its data file) over `target`."""
    import os

    source, target = Path(source), Path(target)
    if not external_locations(source):
        with contextlib.suppress(FileNotFoundError):
            data_file(target).unlink()
        source.replace(target)
        return
    os.replace(data_file(source), data_file(target))
    target.write_bytes(relocated(source, data_file(target).name))
    source.unlink()
