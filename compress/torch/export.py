"""torch -> ONNX: one self-contained file, dynamic batch, onnx.checker, parity against torch."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.config import ExportSection
from compress.errors import ExportError, first_line
from compress.measure.evaluate import EVAL_BATCH, Judge
from compress.models.onnx_files import needs_external_data
from compress.torch.outputs import named_tensors, with_tensor_outputs

if TYPE_CHECKING:
    import torch

BATCH_DIM = "batch"
TOKEN_DIM = "sequence"


def export_to_onnx(
    model,
    fmt: str,
    example: list[np.ndarray],
    input_names: list[str],
    output_names: list[str],
    target: Path,
    section: ExportSection,
) -> str | None:
    """Export `model` (a module, ScriptModule or ExportedProgram) to `target` and check it; a
    line for the log where the export has more to say (a decoder's fused operators)."""
    import onnx
    import torch

    from compress.models.decoder import is_decoder
    from compress.models.program_decoder import is_program_decoder
    from compress.torch.kv_export import export_decoder
    from compress.torch.program_kv_export import export_program_decoder
    from compress.torch.torchlib_once import read_once

    read_once()
    if is_program_decoder(model):  # a .pt2 with its cache: the program itself is exported
        return export_program_decoder(model, example, target, section)
    if is_decoder(model):  # its own inputs and outputs: the cache's
        return export_decoder(model, example, target, section)
    args = tuple(torch.from_numpy(a) for a in example)
    external = needs_external_data(model)
    try:
        # The exporters print progress on stdout (which belongs to --json output) and log
        # warnings about optional packages; our own log says what is happening.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            if fmt == "torchscript":  # torch.export cannot trace a ScriptModule
                axes = {n: {0: BATCH_DIM} for n in [*input_names, *output_names]}
                torch.onnx.export(
                    model,
                    args,
                    str(target),
                    dynamo=False,
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=section.opset,
                    dynamic_axes=axes if section.dynamic_batch else None,
                )
            elif fmt == "exported_program":  # its shapes were fixed when it was saved
                program = torch.onnx.export(
                    model,
                    (),
                    dynamo=True,
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=section.opset,
                )
                _save(program, target, external)
            else:
                shapes = dynamic_shapes(model, args, section.dynamic_batch)
                exported = with_tensor_outputs(model, args)
                if exported is not model and shapes:  # its forward takes `*inputs`: one tuple
                    shapes = (shapes,)
                program = torch.onnx.export(
                    exported,
                    args,
                    dynamo=True,
                    dynamic_shapes=shapes,
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=section.opset,
                )
                _save(program, target, external)
    except Exception as e:
        raise ExportError(
            f"torch -> ONNX export failed: {first_line(e)} (rerun with --debug for the traceback)"
        ) from e
    try:
        onnx.checker.check_model(str(target), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {first_line(e)}") from e
    return None


def _save(program: torch.onnx.ONNXProgram | None, target: Path, external: bool) -> None:
    """Save what the dynamo exporter made: weights inside the one file, or in its external data
    file when they pass what one file holds (compress.models.onnx_files)."""
    if program is None:  # the dynamo exporter always returns a program; the legacy one does not
        raise ExportError("torch.onnx.export (dynamo) returned no ONNX program")
    program.save(str(target), external_data=external)


def dynamic_shapes(model, args: tuple, dynamic_batch: bool) -> tuple | None:
    """torch.export's dynamic_shapes: the batch axis of every input (unless
    export.dynamic_batch is false) and, for a model that declares a token axis (a model folder,
    compress.models.hf_module), the token axis of its token inputs (integer [batch, tokens]
    arrays: input_ids, attention_mask, ...), up to the positions the model has."""
    import torch

    batch = torch.export.Dim(BATCH_DIM) if dynamic_batch else None
    tokens = None
    if getattr(model, "dynamic_tokens", False):
        limit = getattr(model, "max_tokens", None)
        tokens = torch.export.Dim(TOKEN_DIM, max=limit) if limit else torch.export.Dim(TOKEN_DIM)
    shapes = []
    for arg in args:
        axes = {0: batch} if batch is not None else {}
        if tokens is not None and arg.ndim == 2 and not arg.is_floating_point():
            axes[1] = tokens
        shapes.append(axes or None)
    return tuple(shapes) if any(shapes) else None


def torch_outputs(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a torch callable; every tensor it returns, as a flat list of arrays."""
    return list(named_torch_outputs(model, inputs).values())


def torch_output(
    model, inputs: list[np.ndarray], index: int, metric: str | None = None
) -> np.ndarray:
    """A torch callable's output `index` (of every tensor it returns, in order) on all
    `inputs`, in batches of EVAL_BATCH, without gradients; for a token `metric`, its token
    summaries (compress.measure.perplexity: logits never kept)."""
    from compress.measure.perplexity import TOKEN_METRICS, summarized

    if metric in TOKEN_METRICS:
        return summarized(lambda part: torch_outputs(model, part)[index], inputs)
    return np.concatenate(
        [
            torch_outputs(model, [a[start : start + EVAL_BATCH] for a in inputs])[index]
            for start in range(0, len(inputs[0]), EVAL_BATCH)
        ]
    )


def score_torch(judge: Judge, model) -> float:
    """`judge`'s metric of a torch callable (measured as an ONNX file's is, on its output)."""
    return judge.score_outputs(torch_output(model, judge.inputs, judge.output, judge.metric))


@dataclass(frozen=True)
class TorchJudge:
    """A Judge of torch models (compress.torch.training's EpochScore): `metric` names what it
    scores, calling it scores a model."""

    judge: Judge

    @property
    def metric(self) -> str:
        return self.judge.metric

    def __call__(self, model) -> float:
        return score_torch(self.judge, model)


def named_torch_outputs(model, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Run a torch callable; every tensor it returns (compress.torch.outputs), by name, in order."""
    import torch

    with torch.no_grad():
        out = model(*(torch.from_numpy(a) for a in inputs))
    return {name: o.detach().cpu().numpy() for name, o in named_tensors(out)}


PARITY_BYTES = 128 * 2**20  # the outputs of one chunk of the parity check (one sample of a
# 0.5B decoder with a 152k vocabulary: 78 MB of logits)


def check_parity(
    onnx_path: Path, model, inputs: list[np.ndarray], atol: float, where: str
) -> float:
    """Max |ONNX Runtime - torch| over all outputs of the torch callable `model` and the ONNX
    file on `inputs`; ExportError above `atol`. Compared in chunks whose outputs fit in
    PARITY_BYTES (a decoder's logits of 64 samples are gigabytes), never all at once."""
    from compress.measure.runtime import open_session, run_batched

    session = open_session(onnx_path, threads=1, lean=True)
    one = torch_outputs(model, [a[:1] for a in inputs])
    rows = max(1, PARITY_BYTES // max(sum(o.nbytes for o in one), 1))
    diff = 0.0
    for start in range(0, len(inputs[0]), rows):
        part = [a[start : start + rows] for a in inputs]
        reference = one if start == 0 and rows == 1 else torch_outputs(model, part)
        got = run_batched(session, part, batch_size=rows)
        if len(got) != len(reference):
            raise ExportError(f"parity: ONNX gives {len(got)} outputs, torch {len(reference)}")
        diff = max(diff, *(_largest_difference(g, r) for g, r in zip(got, reference, strict=True)))
        del reference, got  # before the next chunk's are made
    if not diff <= atol:  # also catches NaN
        raise ExportError(
            f"parity check failed: max |onnx - torch| = {diff:.3g} on "
            f"{len(inputs[0])} samples from {where}, above export.parity_atol "
            f"{atol:g}; the exported graph does not compute what the model does"
        )
    return diff


def _largest_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| in float64, a sample at a time: the differences of a chunk of
    decoder logits would be another chunk's worth of float64 (not a float64 copy of each)."""
    if got.ndim == 0 or got.shape != expected.shape or len(got) == 0:
        return float(np.max(np.abs(np.subtract(got, expected, dtype=np.float64))))
    rows = zip(got, expected, strict=True)
    return max(float(np.max(np.abs(np.subtract(g, e, dtype=np.float64)))) for g, e in rows)


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Write provenance into the model's metadata_props (its weights stay where they were
    saved: in the file, or in its external data file)."""
    import onnx

    from compress.models.onnx_files import has_external_data, save_onnx

    proto = onnx.load(str(path), load_external_data=False)
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    if has_external_data(proto):  # only the small model file changes: the weights stay put
        Path(path).write_bytes(proto.SerializeToString())
    else:
        save_onnx(proto, path)
