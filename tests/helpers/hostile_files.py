"""Hostile model files for the tests. Each is a real archive written by torch.export.save (or a
real ONNX file) with one change an attacker could make; a payload that is unpickled or evaluated
creates `marker`, so a test proves that nothing ran by the marker's absence."""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch


class Payload:
    """Unpickling this calls open(marker, 'w'): proof of code execution if the file appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


ROOT = "tiny"  # torch.export.save names the archive's folder after the file: tiny.pt2
W = "data/weights/model_weights_config.json"
C = "data/constants/model_constants_config.json"
Members = dict[str, bytes]  # names below the archive's root folder


class TinyNet(torch.nn.Module):
    """Takes the digits data ([N, 1, 8, 8] -> 10 classes); has weights and a tensor constant."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) + torch.tensor([0.5])


def saved_program(folder: Path) -> Path:
    """folder/tiny.pt2, saved with a dynamic batch as a real user would save it."""
    path = folder / f"{ROOT}.pt2"
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(
        TinyNet().eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, path)
    return path


def torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rewrite(source: Path, target: Path, edit: Callable, marker: Path) -> Path:
    """`target`: `source` with its members (below the root folder) changed by edit(members,
    marker), which returns them, or (full name, bytes, deflate?) rows for odd layouts."""
    with zipfile.ZipFile(source) as archive:
        members = {n.split("/", 1)[1]: archive.read(n) for n in archive.namelist()}
    changed = edit(members, marker)
    if isinstance(changed, dict):
        changed = _rows(changed)
    with warnings.catch_warnings(), zipfile.ZipFile(target, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name", on purpose
        for name, data, deflate in changed:
            kind = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=kind)
    return target


def _rows(members: Members) -> list[tuple[str, bytes, bool]]:
    return [(f"{ROOT}/{name}", data, False) for name, data in members.items()]


def _edit_config(members: Members, config: str, change: Callable[[dict], None]) -> dict:
    """Apply `change` to the first entry of a payload config; returns that entry."""
    parsed = json.loads(members[config])
    entry = next(iter(parsed["config"].values()))
    change(entry)
    members[config] = json.dumps(parsed).encode()
    return entry


def _add_constant(members: Members, path_name: str, data: bytes) -> Members:
    parsed = json.loads(members[C])
    parsed["config"]["evil"] = {
        "path_name": path_name,
        "is_param": False,
        "use_pickle": True,
        "tensor_meta": None,
    }
    members[C] = json.dumps(parsed).encode()
    members[f"data/constants/{path_name}"] = data
    return members


def use_pickle_weight(members: Members, marker: Path) -> Members:
    entry = _edit_config(members, W, lambda e: e.update(use_pickle=True))
    members[f"data/weights/{entry['path_name']}"] = torch_saved(Payload(marker))
    return members


def harmless_use_pickle_weight(members: Members, marker: Path) -> Members:
    """A weight torch.export.save would store raw, stored as a pickle of the same tensor."""
    entry = _edit_config(members, W, lambda e: e.update(use_pickle=True))
    raw = members[f"data/weights/{entry['path_name']}"]
    tensor = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(10, 64)
    members[f"data/weights/{entry['path_name']}"] = torch_saved(torch.nn.Parameter(tensor))
    return members


def use_pickle_constant(members: Members, marker: Path) -> Members:
    entry = _edit_config(members, C, lambda e: e.update(use_pickle=True))
    members[f"data/constants/{entry['path_name']}"] = torch_saved(Payload(marker))
    return members


def opaque_constant(members: Members, marker: Path) -> Members:
    return _add_constant(members, "opaque_obj_0", pickle.dumps(Payload(marker)))


def custom_obj_constant(members: Members, marker: Path) -> Members:
    return _add_constant(members, "custom_obj_0", pickle.dumps(Payload(marker)))


def sample_inputs(members: Members, marker: Path) -> Members:
    members["data/sample_inputs/model.pt"] = torch_saved(((Payload(marker),), {}))
    return members


def legacy_member(members: Members, marker: Path) -> Members:
    members["data/constants/model.pt"] = torch_saved(Payload(marker))
    return members


def legacy_format(members: Members, marker: Path) -> list:
    """The pre-2.8 layout, which torch.export.load still falls back to: files at the top."""
    payload = torch_saved(Payload(marker))
    return [
        ("version", b"8.20", False),
        ("serialized_exported_program.json", members["models/model.json"], False),
        ("serialized_state_dict.pt", payload, False),
        ("serialized_constants.pt", payload, False),
        ("serialized_example_inputs.pt", payload, False),
    ]


def legacy_format_with_native_code(members: Members, marker: Path) -> list:
    """The legacy layout is accepted with --trust-pickle; a shared library beside it is not."""
    return [*legacy_format(members, marker), ("lib/model.so", b"\x7fELF" + bytes(60), False)]


def aoti_member(members: Members, marker: Path) -> Members:
    members["data/aotinductor/model/model.so"] = b"\x7fELF" + bytes(60)
    return members


def zip_bomb(members: Members, marker: Path) -> list:
    """50 MB of zeros deflate to ~50 KB."""
    return [*_rows(members), (f"{ROOT}/extra/padding", bytes(50_000_000), True)]


def many_members(members: Members, marker: Path) -> Members:
    return {**members, **{f"extra/{i}": b"" for i in range(20_001)}}


def dotdot_name(members: Members, marker: Path) -> list:
    return [*_rows(members), (f"{ROOT}/../evil", b"x", False)]


def absolute_name(members: Members, marker: Path) -> list:
    return [*_rows(members), (f"/{ROOT}/evil", b"x", False)]


def duplicate_name(members: Members, marker: Path) -> list:
    return [*_rows(members), (f"{ROOT}/data/weights/weight_0", bytes(2560), False)]


def _edit_program(members: Members, change: Callable[[dict], None]) -> Members:
    program = json.loads(members["models/model.json"])
    change(program)
    members["models/model.json"] = json.dumps(program).encode()
    return members


def sympy_expression(members: Members, marker: Path) -> Members:
    """sympify evaluates expr_str while the program loads."""

    def change(program):
        sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        expr = sizes[0]["as_expr"]
        expr["expr_str"] = f"(open({str(marker)!r}, 'w') and 0) or {expr['expr_str']}"

    return _edit_program(members, change)


def guards_code(members: Members, marker: Path) -> Members:
    """exec'd into the module's guard function: runs on every call."""
    return _edit_program(
        members, lambda p: p.update(guards_code=[f"open({str(marker)!r}, 'w') is not None"])
    )


def forward_arg_name(members: Members, marker: Path) -> Members:
    """torch.fx writes the forward's argument names into the module's source."""

    def change(program):
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = [f"x=open({str(marker)!r}, 'w')"]

    return _edit_program(members, change)


def node_target(members: Members, marker: Path) -> Members:
    """A call target torch resolves by attribute lookups from `torch.ops`: this one is a
    function that loads a shared library when the graph runs."""

    def change(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.load_library.__func__"

    return _edit_program(members, change)


# --- corrupt, not hostile: torch fails on these, and must fail in one line -------------------


def two_argument_names(members: Members, marker: Path) -> Members:
    """The module torch makes of it wants two inputs where the program has one."""

    def change(program):
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = ["x", "y"]

    return _edit_program(members, change)


def weight_larger_than_its_data(members: Members, marker: Path) -> Members:
    """torch logs the reason with a traceback on stderr and raises a generic error."""
    sizes = [{"as_int": 1000}, {"as_int": 1000}]
    _edit_config(members, W, lambda e: e["tensor_meta"].update(sizes=sizes))
    return members


# --- ONNX: tensors whose declared size is not what the file holds -----------------------------


def onnx_variant(source: Path, target: Path, edit: Callable) -> Path:
    """`target`: the ONNX file `source` (small_onnx: Flatten + Linear, initializers 1.weight
    [10, 64] and 1.bias) with `edit(model, folder)` applied."""
    import onnx

    model = onnx.load(str(source))
    edit(model, target.parent)
    onnx.save(model, str(target))
    return target


def _weight(model):
    return next(t for t in model.graph.initializer if t.name == "1.weight")


def huge_initializer(model, folder: Path) -> None:
    del _weight(model).dims[:]
    _weight(model).dims.extend([1 << 20, 1 << 20])  # 4 TB of float32, 2.5 KB present


def short_raw_data(model, folder: Path) -> None:
    _weight(model).raw_data = _weight(model).raw_data[:4]


def _external(model, location: str) -> None:
    from onnx import TensorProto

    weight = _weight(model)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)


def external_fifo(model, folder: Path) -> None:
    import os

    os.mkfifo(folder / "weights.bin")  # reading it would block, or never end
    _external(model, "weights.bin")


def external_too_short(model, folder: Path) -> None:
    (folder / "weights.bin").write_bytes(bytes(10))
    _external(model, "weights.bin")


def huge_sparse_initializer(model, folder: Path) -> None:
    import numpy as np
    from onnx import numpy_helper

    sparse = model.graph.sparse_initializer.add()
    sparse.values.CopyFrom(numpy_helper.from_array(np.ones(1, np.float32), "sparse"))
    sparse.indices.CopyFrom(numpy_helper.from_array(np.zeros(1, np.int64), "sparse_indices"))
    sparse.dims.extend([1 << 30, 1 << 10])  # ONNX Runtime would make it dense: 4 TB


def huge_constant(model, folder: Path) -> None:
    from onnx import TensorProto, helper

    value = TensorProto(name="big_constant", data_type=TensorProto.FLOAT, dims=[1 << 40])
    model.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], value=value))
