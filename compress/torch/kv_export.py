"""torch -> ONNX for a decoder with its key/value cache (compress.models.decoder.DecoderModule).

One graph serves the prefill and every decode step, as ONNX Runtime GenAI's model builder writes
it: batch, sequence, past and total lengths are all dynamic. It is traced on a step after a
short cache (lengths of 2 or more: torch.export specialises an axis seen as 0 or 1), rewritten
into ONNX Runtime's fused operators (compress.torch.ort_fusions: RMSNorm, skip + norm, rotary
embeddings, attention), and then checked twice on that graph: the pipeline's parity check runs
the data through it as a prefill (empty cache), and `check_decode_parity` runs two decode steps
against the cache the prefill wrote, whose logits must match torch's forward over the whole
sequence. A model whose float weights do not fit ONNX's 2 GB protobuf limit is saved with them
in one external data file beside it.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from compress.config import ExportSection
from compress.errors import ConfigError, ExportError, first_line

if TYPE_CHECKING:
    from compress.models.decoder import DecoderLayout, DecoderModule

TRACE_TOKENS, TRACE_PAST = 3, 2  # the traced step: no axis of length 0 or 1
DECODE_STEPS = 2  # decode steps checked against torch


def export_decoder(
    module: DecoderModule, example: list[np.ndarray], target: Path, section: ExportSection
) -> str:
    """Export `module` to `target` (with `target`.data beside it when the weights are too large
    for one file) and check it: onnx.checker, then decode steps against torch. A line for the
    log that says what was fused."""
    from compress.models.onnx_files import needs_external_data
    from compress.torch.ort_fusions import fuse_described, rotary_as_matmul

    if not section.dynamic_batch:
        raise ConfigError(
            "export.dynamic_batch: a decoder is exported with its cache for any batch "
            "(generation runs at batch 1, the data at others); remove dynamic_batch: false"
        )
    layout = module.layout
    ids = np.ascontiguousarray(np.resize(example[0], (2, TRACE_TOKENS)))
    args = module.export_arguments(ids, TRACE_PAST)
    external = needs_external_data(module)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            with rotary_as_matmul(module):
                program = torch.onnx.export(
                    _FlatOutputs(module), args, dynamo=True, dynamic_shapes=_shapes(layout),
                    input_names=layout.input_names, output_names=layout.output_names,
                    opset_version=section.opset,
                )  # fmt: skip
            if program is None:  # the dynamo exporter always returns one; the legacy one not
                raise ExportError("torch.onnx.export (dynamo) returned no ONNX program")
            note = fuse_described(program.model, layout.max_positions)  # in place: the weights
            program.save(str(target), external_data=external)
            del program  # its copy of the weights (the constant-folded transposes of them)
            gc.collect()  # held in reference cycles: freed now, before the parity sessions
    except Exception as e:
        raise ExportError(
            f"torch -> ONNX export of the decoder with its cache failed: {first_line(e)} (rerun "
            "with --debug for the traceback)"
        ) from e
    check_fused(target)
    check_decode_parity(module, target, example[0][:2], section.parity_atol)
    return note


def check_fused(target: Path) -> None:
    """onnx.checker on an exported decoder, which knows ONNX Runtime's ONNX-domain operators
    (SimplifiedLayerNormalization) the fusions wrote."""
    import onnx

    from compress.models import ort_schemas

    try:
        ort_schemas.register()
        onnx.checker.check_model(str(target), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {first_line(e)}") from e


def _shapes(layout: DecoderLayout) -> tuple:
    """torch.export's dynamic_shapes for (input_ids, attention_mask, position_ids, *past)."""
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("sequence")
    total, past = torch.export.Dim("total_sequence"), torch.export.Dim("past_sequence")
    cache = tuple({0: batch, 2: past} for _ in layout.past_names)
    return ({0: batch, 1: tokens}, {0: batch, 1: total}, {0: batch, 1: tokens}, cache)


class _FlatOutputs(torch.nn.Module):
    """The module with its outputs as one flat tuple, in the layout's order (what the exporter
    names `logits`, `present.0.key`, ...)."""

    def __init__(self, module: DecoderModule) -> None:
        super().__init__()
        self.model = module

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        return tuple(self.model(input_ids, attention_mask, position_ids, *past).values())


def check_decode_parity(module: DecoderModule, path: Path, ids: np.ndarray, atol: float) -> float:
    """Prefill all but the last DECODE_STEPS tokens of `ids` in ONNX Runtime, then decode them one
    at a time against the cache it wrote; each step's logits must match torch's forward over the
    whole sequence (no cache) within `atol`. Returns the largest difference."""
    from compress.measure.decoder_feeds import completed_feeds, session_inputs
    from compress.measure.runtime import open_session

    ids = ids.astype(np.int64)
    if ids.shape[1] < DECODE_STEPS + 1:
        ids = np.resize(ids, (len(ids), DECODE_STEPS + 1))
    mask = np.ones_like(ids)
    with torch.no_grad():
        expected = module(torch.from_numpy(ids), torch.from_numpy(mask))["logits"].numpy()
    session = open_session(path, threads=1, lean=True)
    declared = session_inputs(session)
    names = [name for name, _, _ in declared]
    start = ids.shape[1] - DECODE_STEPS
    outputs = session.run(None, completed_feeds(declared, [ids[:, :start], mask[:, :start]]))
    worst = 0.0
    for step in range(start, ids.shape[1]):
        feed = dict(zip(names[:3], [ids[:, step : step + 1], mask[:, : step + 1]], strict=False))
        feed["position_ids"] = np.full((len(ids), 1), step, np.int64)
        feed |= dict(zip(names[3:], outputs[1:], strict=True))
        outputs = session.run(None, feed)
        worst = max(worst, float(np.max(np.abs(outputs[0][:, -1] - expected[:, step]))))
    if not worst <= atol:
        raise ExportError(
            f"decode parity check failed: max |onnx - torch| = {worst:.3g} on {DECODE_STEPS} "
            f"decode steps against the cache, above export.parity_atol {atol:g}; the exported "
            "cache does not compute what the model does"
        )
    return worst
