"""The output folder: refused when not empty (unless forced), written only by atomic renames."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from compress.errors import OutputDirError

OUTPUT_FILES = ("model.onnx", "report.json", "report.md")


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


def write_atomic(path: Path, text: str) -> None:
    """Write under a temporary name, then rename: a reader, or a writer killed halfway, never
    leaves half a file under the real name."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
