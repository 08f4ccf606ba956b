"""The files a command reads, so that nothing it writes replaces one of them.

Files are compared by what they are, not by how they are named: the (device, inode) of the path
and of what a link there points to, so a symbolic link, a hard link or `./a/../b` to an input is
recognised as that input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compress.config import LoadedConfig
from compress.errors import OutputDirError


@dataclass(frozen=True)
class InputFile:
    label: str  # how the message names it: "the model", "data.eval.path"
    path: Path


def identities(path: Path) -> set[tuple[int, int]]:
    """(device, inode) of the entry at `path` and of the file a link there leads to."""
    found = set()
    for follow in (False, True):
        try:
            st = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


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
    for key, spec in arch_specs(config).items():
        target = spec.rsplit(":", 1)[0]
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


def refuse_overwriting(target: Path, inputs: list[InputFile], action: str, fix: str) -> None:
    """Refuse (exit 2) to write `target` when it is one of `inputs`: `action` is what would
    write it (`--force`, `--junit`), `fix` what to do instead."""
    taken = identities(target)
    for item in inputs:
        if taken & identities(item.path):
            named = "" if Path(item.path) == Path(target) else f" ({item.path})"
            raise OutputDirError(
                f"{target} is {item.label}{named}; {action} would overwrite it: {fix}"
            )
