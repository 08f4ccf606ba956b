"""`compress init`: a commented starter config for a saved model, with what the model tells.

An ONNX graph or a torch.export program gives its inputs' names, shapes and dtypes: the starter
declares them in `model.inputs` and validates and runs as written (on ones shaped like the
inputs, so size and latency are real and the metric waits for data). TorchScript records names
but not shapes, and a state_dict neither: their starter points `data.eval` at a placeholder
file, so `compress validate` names what to fill in before anything can run.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from compress.errors import ModelLoadError
from compress.models import detect_format

PLACEHOLDER_DATA = "eval.npz"
KINDS = {
    "onnx": "an ONNX model",
    "exported_program": "a torch.export program",
    "torchscript": "a TorchScript archive",
    "state_dict": "a state_dict",
    "pickled_module": "a whole pickled module",
}


@dataclass
class ModelFacts:
    """What could be read off the file without running code from it."""

    format: str
    inputs: list[dict] | None = None  # model.inputs entries, when shapes are known
    input_names: list[str] = field(default_factory=list)
    fixed_batch: int | None = None

    @property
    def torch_stage(self) -> bool:
        """Torch-stage passes (pruning) need a module they can change."""
        return self.format in ("exported_program", "state_dict", "pickled_module")


def inspect_model(path: Path) -> ModelFacts:
    from compress.config import ModelSection
    from compress.export import fixed_batch_sizes, program_fixed_batch
    from compress.model_inputs import (
        onnx_input_specs,
        program_input_specs,
        torchscript_input_names,
    )
    from compress.models import load_model

    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    fmt = detect_format(path)
    if fmt not in ("onnx", "exported_program", "torchscript"):
        return ModelFacts(_pickle_kind(path))
    model = load_model(path, ModelSection(), path.parent).model
    if fmt == "onnx":
        fixed = fixed_batch_sizes(model)
        return _facts(fmt, onnx_input_specs(model), fixed.pop() if len(fixed) == 1 else None)
    if fmt == "exported_program":
        return _facts(fmt, program_input_specs(model), program_fixed_batch(model))
    return ModelFacts(fmt, input_names=torchscript_input_names(model))


def _facts(fmt: str, specs, fixed_batch: int | None) -> ModelFacts:
    inputs = [spec.model_dump() for spec in specs] if specs else None
    names = [spec.name for spec in specs] if specs else []
    return ModelFacts(fmt, inputs, names, fixed_batch)


def _pickle_kind(path: Path) -> str:
    """state_dict, or a whole pickled module: told apart by the safe unpickler, never by
    unpickling the module (that would run code from the file)."""
    import torch

    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "pickled_module"
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot read the torch.save file ({e})") from None
    return "state_dict"


def starter_config(model_path: Path) -> str:
    """The commented YAML for `model_path`."""
    facts = inspect_model(Path(model_path))
    name = Path(model_path).name
    lines = [
        f"# compress recipe for {name} ({KINDS[facts.format]}), written by `compress init`.",
        f"# Check: compress validate THIS.yaml   Run: compress run {name} -c THIS.yaml -o out/",
        "# Every key: `compress schema` (JSON Schema for editors); pass parameters: `compress "
        "passes`.",
        "version: 1",
        *_model_section(facts),
        *_data_section(facts),
        *_passes_section(facts),
        *_export_report_gates(facts),
    ]
    return "\n".join(lines) + "\n"


def _flow(value) -> str:
    """A value as one line of YAML (names with odd characters get quoted)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()


def _model_section(facts: ModelFacts) -> list[str]:
    lines = ["model:"]
    if facts.format == "state_dict":
        lines += [
            "  # TODO: a state_dict holds weights only: name the code that builds the model",
            "  arch: arch.py:Model  # a file relative to this one, or package.module:Factory",
            "  arch_args: {}",
        ]
    if facts.format == "pickled_module":
        lines.append(
            "  # a whole pickled module: run with --trust-pickle (unpickling runs its code)"
        )
    if facts.inputs:
        lines.append(
            "  # read from the model (the first dim is the batch); used when no data is set"
        )
        lines.append("  inputs:")
        lines += [f"    - {_flow(spec)}" for spec in facts.inputs]
    if lines == ["model:"]:
        return ["model: {}"]
    return lines


def _data_section(facts: ModelFacts) -> list[str]:
    names = _flow(facts.input_names or ["x"])
    if facts.inputs:
        return [
            "# Real samples make the report complete: accuracy on data.eval, calibration for",
            "# static int8. .npz files whose keys are the inputs, relative to this file:",
            "# data:",
            f"#   calibration: {{path: calib.npz, inputs: {names}, limit: 256}}",
            f"#   eval: {{path: eval.npz, inputs: {names}, labels: y}}",
        ]
    what = "shapes" if facts.input_names else "inputs"
    keys = "its keys" if not facts.input_names else f"keys {names}"
    return [
        f"# TODO: the model's {what} cannot be read from {KINDS[facts.format]}: put real samples",
        f"# in {PLACEHOLDER_DATA} ({keys}, in the order the model takes them), or point at yours.",
        "data:",
        f"  eval: {{path: {PLACEHOLDER_DATA}, inputs: {names}}}  # add labels: y for top1",
        f"  # calibration: {{path: calib.npz, inputs: {names}, limit: 256}}  # for quantize.static",
    ]


def _passes_section(facts: ModelFacts) -> list[str]:
    lines = [
        "passes:",
        "  # int8 weights, activations quantized at run time: needs no data",
        "  - type: quantize.dynamic",
        "  # with data.calibration, static int8 (usually faster on convolutions):",
        "  # - type: quantize.static",
        "  #   per_channel: true",
    ]
    if facts.torch_stage:
        lines += [
            "  # structural pruning (a torch-stage pass: list it before the ONNX passes);",
            "  # with data.train it fine-tunes afterwards:",
            "  # - type: prune.channels",
            "  #   amount: 0.5",
        ]
    return lines


def _export_report_gates(facts: ModelFacts) -> list[str]:
    batches = [facts.fixed_batch] if facts.fixed_batch else [32, 1]
    dynamic = "false" if facts.fixed_batch and facts.format == "exported_program" else "true"
    return [
        f"export: {{opset: 18, dynamic_batch: {dynamic}}}",
        "report:",
        f"  batch_sizes: {_flow(batches)}  # the first is the one speedup and gates use",
        "  threads: 1",
        "  metric: agreement  # with top-1 labels in data.eval: top1",
        "gates:  # a gate that fails makes the run exit 3",
        "  min_size_ratio: 2",
        "  # max_accuracy_drop: 0.01  # needs data.eval",
    ]
