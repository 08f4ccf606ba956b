"""A decoder .pt2 (compress.models.program_decoder) -> ONNX with its key/value cache, under the
names a folder's export has (compress.torch.kv_export): `input_ids`, `attention_mask`,
`position_ids`, `past_key_values.N.key/value` in, `logits` and `present.N.key/value` out.

The program itself is exported, not its `.module()` traced again (which failed on transformers
here): its dynamic axes are the ones it was saved with, each its own symbol (`s10`, `s53`), so
they are renamed after the export to the folder export's `batch`, `sequence`, `total_sequence`
and `past_sequence` (before the fusions, which compare shapes by name). The graph is then
rewritten into ONNX Runtime's fused operators as a folder's is
(compress.torch.ort_fusions.fuse_decoder): norms, skip + norm and attention always; the rotary
embeddings only where the program bounds the mask's length, which sizes their cos/sin table
(its angles, a product in transformers 5, taken as the MatMul the table's rules read:
`angles_as_matmul`). Then it is checked as a folder's export is, on the fused graph:
onnx.checker, and decode steps against the cache its prefill wrote, whose logits must be the
program's over the whole sequence.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from compress.config import ExportSection
from compress.errors import ConfigError, ExportError, first_line
from compress.models.decoder_graph import PAST_PREFIX
from compress.models.program_decoder import ProgramDecoder
from compress.torch.ort_fusions import rename_dims

# each input's axes that carry one of the folder export's names
AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "total_sequence"},
    "position_ids": {0: "batch", 1: "sequence"},
    PAST_PREFIX: {0: "batch", 2: "past_sequence"},
}


def export_program_decoder(
    module: ProgramDecoder, example: list[np.ndarray], target: Path, section: ExportSection
) -> str:
    """Export the decoder program to `target` and check it (see the module's docstring); a line
    for the log that says what was fused."""
    import torch

    from compress.models.onnx_files import needs_external_data
    from compress.torch.kv_export import check_decode_parity, check_fused
    from compress.torch.ort_fusions import angles_as_matmul, fuse_described

    if not section.dynamic_batch:
        raise ConfigError(
            "export.dynamic_batch: a decoder is exported with its cache for any batch "
            "(generation runs at batch 1, the data at others); remove dynamic_batch: false"
        )
    layout = module.layout
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(
                module.program, (), dynamo=True, input_names=layout.input_names,
                output_names=layout.output_names, opset_version=section.opset,
            )  # fmt: skip
            if program is None:
                raise ExportError("torch.onnx.export (dynamo) returned no ONNX program")
            name_axes(program.model)
            if positions := layout.max_positions:  # the table's size: else no RotaryEmbedding
                angles_as_matmul(program.model)
            note = fuse_described(program.model, positions)  # in place: the program's weights
            angles = {"Cos", "Sin"} & {node.op_type for node in program.model.graph}
            program.save(str(target), external_data=needs_external_data(module))
            del program  # its copy of the weights, held in reference cycles: freed before the
            gc.collect()  # parity sessions open
    except Exception as e:
        raise ExportError(
            f"torch -> ONNX export of the decoder program with its cache failed: {first_line(e)} "
            "(rerun with --debug for the traceback)"
        ) from e
    check_fused(target)
    check_decode_parity(module, target, example[0][:2], section.parity_atol)  # type: ignore[arg-type]
    if angles:  # rotary angles still computed from the position ids
        why = (
            "not a form the fusions read"
            if layout.max_positions
            else "the program does not bound the mask's length (a Dim's max), which sizes "
            "their cos/sin table"
        )
        note += f"; rotary embeddings not fused: {why}"
    return note


def name_axes(model: Any) -> None:
    """Rename, in the onnx_ir model, the program's symbols for the inputs' axes (AXES) everywhere
    in the graph; a sum of them in sorted order (`past_sequence + sequence`). Before the fusions:
    they compare shapes by name, and each cache tensor has its own symbol for the past length
    (Dim.DYNAMIC), which kept attention unfused."""
    import onnx_ir as ir

    names: dict[str, str] = {}
    for value in model.graph.inputs:
        key = PAST_PREFIX if value.name.startswith(PAST_PREFIX) else value.name
        shape = value.shape if value.shape is not None else ()
        for axis, name in AXES.get(key, {}).items():
            if axis < len(shape) and isinstance(shape[axis], ir.SymbolicDim) and shape[axis].value:
                names.setdefault(shape[axis].value, name)
    rename_dims(model, names)
