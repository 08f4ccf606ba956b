"""`compress init`: write a commented starter config for a saved model."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from compress_cli.errors import reported_errors, stderr
from compress_cli.options import Debug, TrustRemoteCode


def init(
    model: Path = typer.Argument(
        ...,
        help="Saved model: a model folder (save_pretrained), ONNX, .pt2, TorchScript or "
        "state_dict (torch.save or .safetensors).",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE (default: stdout)."),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Samples for calibration and evaluation: an .npz (keys named as the model's "
        "inputs), a .csv, a folder of images, or text for a model folder (.txt: one example "
        "per line, .jsonl, .csv); checked against the model.",
    ),
    tokenizer: Path | None = typer.Option(
        None,
        "--tokenizer",
        help="For a .pt2 language model: the folder its tokenizer was saved to "
        "(save_pretrained); --data text is read with it and judged by perplexity.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    debug: Debug = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Write a commented starter config for MODEL.

    Its inputs are read from the model where it tells them (ONNX, .pt2, a model folder); TODO
    comments say what to fill in where it does not. The passes fit what the model is made of:
    static int8 for a convolutional model (it needs calibration data: --data fills it in),
    quantize.auto for a model folder's encoder or classifier given --data, 4-bit weights judged
    by perplexity for a language model, dynamic int8 otherwise.
    """
    with reported_errors(debug):
        from compress.job.outdir import check_output_file
        from compress.job.staging import write_atomically
        from compress.models.run_files import InputFile
        from compress.starter.config import check_starter_runs, starter_config

        if out is not None:
            read = [InputFile("the model", model)]
            read += [InputFile("--data", data)] if data is not None else []
            read += [InputFile("--tokenizer", tokenizer)] if tokenizer is not None else []
            check_output_file(out, force, read)
        config_dir = out.parent if out is not None else Path.cwd()
        text = starter_config(model, data, config_dir, trust_remote_code, tokenizer)
        if data is not None:
            check_starter_runs(model, text, config_dir, data, trust_remote_code)
        if out is None:
            sys.stdout.write(text)
            return
        write_atomically(out, text)
    stderr.print(f"wrote {out}; check it with: compress validate {out}", markup=False)
