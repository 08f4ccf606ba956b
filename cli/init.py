"""`compress init`: write a commented starter config for a saved model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from cli.errors import reported_errors, stderr


def init(
    model: Path = typer.Argument(..., help="Saved model: ONNX, .pt2, TorchScript or state_dict."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE (default: stdout)."),
    force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Write a commented starter config for MODEL.

    Its inputs are read from the model where it tells them (ONNX, .pt2); TODO comments say what
    to fill in where it does not.
    """
    with reported_errors(debug):
        from compress.errors import OutputDirError
        from compress.inputs import InputFile, refuse_overwriting
        from compress.outdir import check_writable
        from compress.staging import write_atomically
        from compress.starter import starter_config

        if out is not None:
            check_writable(out, "-o")
            refuse_overwriting(out, [InputFile("the model", model)], "-o", "choose another file")
            if os.path.lexists(out) and not force:
                raise OutputDirError(f"-o {out}: the file exists; pass --force to replace it")
        text = starter_config(model)
        if out is None:
            sys.stdout.write(text)
            return
        write_atomically(out, text)
    stderr.print(f"wrote {out}; check it with: compress validate {out}", markup=False)
