"""What `compress init` can read off a saved model file without running code from it: its
format, its inputs where it records them (ONNX, .pt2; a TorchScript archive's names), and what it
is made of (compress.starter.makeup)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import ModelLoadError
from compress.models import check_model_path, detect_format
from compress.starter.makeup import ModelMakeup

KINDS = {
    "onnx": "an ONNX model",
    "exported_program": "a torch.export program",
    "torchscript": "a TorchScript archive",
    "state_dict": "a state_dict",
    "safetensors": "a .safetensors state_dict",
    "pickled_module": "a whole pickled module",
    "hf_folder": "a model folder",
}


@dataclass
class ModelFacts:
    """What could be read off the file without running code from it."""

    format: str
    inputs: list[dict] | None = None  # model.inputs entries, when shapes are known
    input_names: list[str] = field(default_factory=list)
    fixed_batch: int | None = None
    makeup: ModelMakeup | None = None  # None: a pickled module is not read without running it
    decoder: bool = False  # a .pt2 causal LM with its key/value cache
    positions: int | None = None  # its longest sequence, where the program bounds it

    @property
    def convolutional(self) -> bool:
        """Mostly convolutions: static int8 (with calibration data) is what shrinks and speeds
        them; dynamic int8 leaves them in float."""
        return self.makeup is not None and self.makeup.kind == "convolutional"

    @property
    def torch_stage(self) -> bool:
        """Torch-stage passes (pruning) need a module they can change."""
        return self.format in ("exported_program", "state_dict", "safetensors", "pickled_module")


def inspect_model(path: Path) -> ModelFacts:
    from compress.config import ModelSection
    from compress.job.context import spec_samples
    from compress.models import load_model
    from compress.models.model_inputs import (
        fixed_batch_sizes,
        onnx_input_specs,
        program_fixed_batch,
        program_input_specs,
        torchscript_input_names,
    )
    from compress.models.program_decoder import is_cached_decoder
    from compress.starter.makeup import onnx_makeup, program_makeup, weights_makeup

    check_model_path(path)
    fmt = detect_format(path)
    if fmt == "safetensors":
        from compress.models.safetensors_file import load_state_dict

        return ModelFacts(fmt, makeup=weights_makeup(load_state_dict(path)))
    if fmt not in ("onnx", "exported_program", "torchscript"):
        state = _safe_state(path)
        if state is None:
            return ModelFacts("pickled_module")
        return ModelFacts("state_dict", makeup=weights_makeup(state))
    model = load_model(path, ModelSection(), path.parent).model
    if fmt == "onnx":
        sizes = fixed_batch_sizes(model)
        single = sizes.pop() if len(sizes) == 1 else None
        specs = onnx_input_specs(model)
        sample = spec_samples(specs, 1) if specs else None
        return _facts(fmt, specs, single, onnx_makeup(model, sample))
    if is_cached_decoder(model):  # a .pt2 with its cache: fed token ids and a mask
        facts = _facts(fmt, model.input_specs(), None, program_makeup(model.program))
        facts.decoder, facts.positions = True, model.layout.max_positions
        return facts
    if fmt == "exported_program":
        fixed = program_fixed_batch(model)
        return _facts(fmt, program_input_specs(model), fixed, program_makeup(model))
    makeup = weights_makeup(model.state_dict())
    return ModelFacts(fmt, input_names=torchscript_input_names(model), makeup=makeup)


def _facts(fmt: str, specs, fixed_batch: int | None, makeup: ModelMakeup) -> ModelFacts:
    inputs = [spec.model_dump() for spec in specs] if specs else None
    names = [spec.name for spec in specs] if specs else []
    return ModelFacts(fmt, inputs, names, fixed_batch, makeup)


def _safe_state(path: Path) -> dict | None:
    """A state_dict's tensors, or None for a whole pickled module: told apart by the safe
    unpickler, never by unpickling the module (that would run code from the file)."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return None
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot read the torch.save file ({e})") from None
    return state if isinstance(state, dict) else {}
