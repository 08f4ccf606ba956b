"""Which files under a directory are models, and which override YAMLs apply to each.

Decided by suffix and content together:
- a model suffix (.pt .pth .pt2 .ts .onnx ...) makes a file a model whatever it holds: the user
  put a model there, so one the loader cannot read is listed with the loader's reason and fails
  (a corrupt file must not vanish from the summary);
- a suffix of another known kind (YAML, npz, Python, text, images, archives) never does;
- any other file (no suffix, .bin, ...) is a model when the loader recognises its content;
- a folder holding config.json (or a sentence-transformers modules.json) is one model, a model
  folder as save_pretrained writes it: its files are not searched for more models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from compress.errors import ModelLoadError
from compress.models import detect_format
from compress.models.hf_folder import is_model_folder, read_layout

MODEL_SUFFIXES = {".pt", ".pth", ".pt2", ".ts", ".onnx", ".jit", ".torchscript", ".safetensors"}
OTHER_SUFFIXES = {
    *(".yaml", ".yml", ".json", ".toml", ".ini", ".cfg", ".lock"),
    *(".npz", ".npy", ".csv", ".tsv", ".data"),
    *(".py", ".pyc", ".sh", ".md", ".txt", ".rst", ".html", ".log"),
    *(".png", ".jpg", ".jpeg", ".gif", ".bmp"),
    *(".zip", ".tar", ".gz", ".whl"),
}
OVERRIDE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelEntry:
    path: Path  # absolute
    relative: str  # its path under the batch directory; names its output folder
    overrides: tuple[Path, ...] = ()  # applied in order over the shared config
    problem: str | None = None  # why the loader cannot read it: the model fails without a run


def find_models(root: Path, pattern: str | None, skip: tuple[Path, ...] = ()) -> list[ModelEntry]:
    """Models under `root` in a stable order; `pattern` (a glob on the path under `root`,
    e.g. `*.pt2` or `vision/*.onnx`) narrows the candidates; what `skip` names (the batch's
    output folder, its shared config) and hidden files are left out."""
    root = root.resolve()
    skipped = {p.resolve() for p in skip}
    if pattern:  # matching from the right already reaches any depth; `**/` would ask for one more
        pattern = pattern.removeprefix("**/")
    entries = []
    candidates = [root] if is_model_folder(root) else _files(root, skipped)
    for path in candidates:
        relative = path.relative_to(root).as_posix() if path != root else root.name
        if pattern and not PurePosixPath(relative).match(pattern):
            continue
        is_model, problem = _classify(path)
        if is_model:
            overrides = tuple(o for o in override_files(path) if o.resolve() not in skipped)
            entries.append(ModelEntry(path, relative, overrides, problem))
    return entries


def _files(root: Path, skipped: set[Path]):
    """Every file that may be a model, and every model folder (whose files are not searched)."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and Path(folder, d).resolve() not in skipped
        )
        for name in [d for d in dirs if is_model_folder(Path(folder, d))]:
            dirs.remove(name)
            yield Path(folder, name)
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder, name)


def _classify(path: Path) -> tuple[bool, str | None]:
    """(is it a model, why the loader cannot read it); see the module docstring."""
    if path.is_dir():  # a model folder: its files checked as the load checks them
        try:
            read_layout(path, trust_remote_code=True)  # the remote-code check is the run's
        except (ModelLoadError, OSError) as e:
            return True, str(e)
        return True, None
    suffix = path.suffix.lower()
    if suffix in OTHER_SUFFIXES:
        return False, None
    try:
        detect_format(path)
    except (ModelLoadError, OSError) as e:
        return suffix in MODEL_SUFFIXES, str(e)
    return True, None


def override_files(model: Path) -> list[Path]:
    """The model's folder's override (`<folder>/<folder name>.yaml`, for every model in it),
    then its own (`<folder>/<model name without suffix>.yaml`); the later one wins."""
    folder = model.parent
    found: list[Path] = []
    for name in (folder.name, model.stem):
        for suffix in OVERRIDE_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file() and candidate not in found:
                found.append(candidate)
                break
    return found
