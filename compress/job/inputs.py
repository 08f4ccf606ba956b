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
    inputs += _arch_file("model.arch", cfg.model.arch, base)
    for index, spec in enumerate(config.passes):
        inputs += _pass_files(f"passes[{index}]", spec.params, base)
    return inputs


def _pass_files(key: str, params, base: Path) -> list[InputFile]:
    """A distill pass's teacher (a path, or {path, arch}) and student architecture files."""
    found: list[InputFile] = []
    teacher = getattr(params, "teacher", None)
    if isinstance(teacher, (str, Path)):
        found += _model_files(f"{key}.teacher", base / teacher)
    elif teacher is not None and getattr(teacher, "path", None) is not None:
        found += _model_files(f"{key}.teacher.path", base / teacher.path)
        found += _arch_file(f"{key}.teacher.arch", getattr(teacher, "arch", None), base)
    student = getattr(params, "student", None)
    found += _arch_file(f"{key}.student.arch", getattr(student, "arch", None), base)
    return found


def _model_files(label: str, path: Path) -> list[InputFile]:
    """A model file; or every file that loading the model folder (or tokenizer folder) at `path`
    reads, each labelled with its name in the folder."""
    if not path.is_dir():
        return [InputFile(label, path)]
    from compress.models.hf_folder import files_read

    return [InputFile(f"{label} ({name})", file) for name, file in files_read(path)]


def _arch_file(key: str, spec: str | None, base: Path) -> list[InputFile]:
    """The file of a 'path/to/file.py:Factory' architecture (none for 'package.module:Name')."""
    target = spec.rsplit(":", 1)[0] if isinstance(spec, str) else ""
    return [InputFile(key, base / target)] if target.endswith(".py") else []


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
