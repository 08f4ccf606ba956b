"""A decoder .pt2 (compress.models.program_decoder) -> ONNX with its key/value cache, under the
names a folder's export has (compress.torch.kv_export): `input_ids`, `attention_mask`,
`position_ids`, `past_key_values.N.key/value` in, `logits` and `present.N.key/value` out.

The program itself is exported, not its `.module()` traced again (which failed on transformers
here): its dynamic axes are the ones it was saved with, each its own symbol (`s10`, `s53`), so
they are renamed after the export to the folder export's `batch`, `sequence`, `total_sequence`
and `past_sequence`. Then it is checked as a folder's export is: onnx.checker, and decode steps
against the cache its prefill wrote, whose logits must be the program's over the whole sequence.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from compress.config import ExportSection
from compress.errors import ConfigError, ExportError, first_line
from compress.models.decoder_graph import PAST_PREFIX
from compress.models.program_decoder import ProgramDecoder
from compress.torch.ort_fusions import renamed_dim

# each input's axes that carry one of the folder export's names
AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "total_sequence"},
    "position_ids": {0: "batch", 1: "sequence"},
    PAST_PREFIX: {0: "batch", 2: "past_sequence"},
}


def export_program_decoder(
    module: ProgramDecoder, example: list[np.ndarray], target: Path, section: ExportSection
) -> None:
    """Export the decoder program to `target` and check it (see the module's docstring)."""
    import onnx
    import torch

    from compress.models.onnx_files import needs_external_data
    from compress.torch.kv_export import check_decode_parity

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
            program.save(str(target), external_data=needs_external_data(module))
            del program  # its copy of the weights, held in reference cycles: freed before the
            gc.collect()  # parity sessions open
    except Exception as e:
        raise ExportError(
            f"torch -> ONNX export of the decoder program with its cache failed: {first_line(e)} "
            "(rerun with --debug for the traceback)"
        ) from e
    name_axes(target)
    try:
        onnx.checker.check_model(str(target), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {first_line(e)}") from e
    check_decode_parity(module, target, example[0][:2], section.parity_atol)  # type: ignore[arg-type]


def name_axes(path: Path) -> None:
    """Rename the program's symbols for the inputs' axes (AXES) everywhere in the graph; a sum of
    them in sorted order (`past_sequence + sequence`). Only the model file is rewritten: the
    weights stay where they were saved."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    names: dict[str, str] = {}
    for value in graph.input:
        key = PAST_PREFIX if value.name.startswith(PAST_PREFIX) else value.name
        dims = value.type.tensor_type.shape.dim
        for axis, name in AXES.get(key, {}).items():
            if axis < len(dims) and dims[axis].dim_param:
                names.setdefault(dims[axis].dim_param, name)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = renamed_dim(dim.dim_param, names)
    Path(path).write_bytes(proto.SerializeToString())
