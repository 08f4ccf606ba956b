"""The files a run reads: the model (every file of a model folder that its load reads), the
config, the data, a tokenizer folder, distill teachers and architecture files. The stage cache
key hashes them, and a command's outputs never replace one of them (compress.job.inputs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.config import LoadedConfig


@dataclass(frozen=True)
class InputFile:
    label: str  # how the message names it: "the model", "data.eval.path"
    path: Path


def run_inputs(model_path: Path, config: LoadedConfig) -> list[InputFile]:
    """Every file a run reads: the model, the config, the data, teachers and architecture files."""
    base, cfg = config.base_dir, config.config
    inputs = [*_model_files("the model", Path(model_path)), InputFile("the config", config.path)]
    if cfg.model.tokenizer is not None:
        inputs += _model_files("model.tokenizer", base / cfg.model.tokenizer)
    for role in ("calibration", "eval", "train", "validation"):
        source = getattr(cfg.data, role)
        if source is not None:
            inputs.append(InputFile(f"data.{role}.path", base / source.path))
    for index, spec in enumerate(config.passes):
        inputs += _teacher_files(f"passes[{index}]", spec.params, base)
    for key, arch in arch_specs(config).items():
        target = arch.rsplit(":", 1)[0]
        if target.endswith(".py"):  # 'package.module:Name' is found on the Python path
            inputs.append(InputFile(key, base / target))
    return inputs


def arch_specs(config: LoadedConfig) -> dict[str, str]:
    """Every architecture the config names, by its key: model.arch, and a distill pass's
    teacher.arch and student.arch ('path/to/file.py:Factory' or 'package.module:Factory')."""
    specs = {"model.arch": config.config.model.arch}
    for index, spec in enumerate(config.passes):
        for role in ("teacher", "student"):
            section = getattr(spec.params, role, None)
            specs[f"passes[{index}].{role}.arch"] = getattr(section, "arch", None)
    return {key: spec for key, spec in specs.items() if isinstance(spec, str)}


def _teacher_files(key: str, params, base: Path) -> list[InputFile]:
    """A distill pass's teacher model file (a path, or {path, arch})."""
    teacher = getattr(params, "teacher", None)
    if isinstance(teacher, (str, Path)):
        return _model_files(f"{key}.teacher", base / teacher)
    if teacher is not None and getattr(teacher, "path", None) is not None:
        return _model_files(f"{key}.teacher.path", base / teacher.path)
    return []


def _model_files(label: str, path: Path) -> list[InputFile]:
    """A model file; or every file that loading the model folder (or tokenizer folder) at `path`
    reads, each labelled with its name in the folder."""
    if not path.is_dir():
        return [InputFile(label, path)]
    from compress.models.hf_folder import files_read

    return [InputFile(f"{label} ({name})", file) for name, file in files_read(path)]
