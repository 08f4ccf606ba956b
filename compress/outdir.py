"""The output folder: refused when not empty (unless forced), written only by atomic renames;
single output files (-o, --junit) are checked before a run and written the same way."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from compress.errors import OutputDirError

OUTPUT_FILES = ("model.onnx", "report.json", "report.md", "report.html")


def check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"output path {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputDirError(
            f"output folder {out_dir} is not empty; pass --force to replace its "
            "results or choose another -o"
        )


def clear_previous_results(out_dir: Path) -> None:
    """A forced run must not leave an older run's results behind if it fails."""
    for name in OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)


def publish(out_dir: Path, model_file: Path, texts: dict[str, str]) -> None:
    """Copy the model and write the texts under temporary names, then rename them into place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        partial = out_dir / ".model.onnx.partial"
        shutil.copyfile(model_file, partial)
        staged.append((partial, out_dir / "model.onnx"))
        for name, text in texts.items():
            partial = out_dir / f".{name}.partial"
            partial.write_text(text)
            staged.append((partial, out_dir / name))
    except BaseException:
        for partial, _ in staged:
            partial.unlink(missing_ok=True)
        raise
    for partial, final in staged:
        os.replace(partial, final)


def check_writable(path: Path, option: str) -> None:
    """Refuse a file path whose folder does not exist (before a run spends any time)."""
    folder = Path(path).resolve().parent
    if Path(path).is_dir():
        raise OutputDirError(f"{option} {path}: is a folder; give a file path")
    if not folder.is_dir():
        raise OutputDirError(f"{option} {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise OutputDirError(f"{option} {path}: folder {folder} is not writable; choose another")


def write_atomically(path: Path, text: str) -> None:
    """Write under a temporary name and rename, so no reader sees half a file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
