"""`compress analyze`: rank the nodes int8 quantization hurts most; write OUT/sensitivity.*."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from compress_cli.errors import reported_errors, stderr
from compress_cli.options import (
    Debug,
    JsonOutput,
    Overrides,
    Quiet,
    TrustPickle,
    TrustRemoteCode,
)
from compress_cli.process import private_tempdir
from rich.markup import escape

from compress.errors import one_line


def analyze(
    model: Path = typer.Argument(
        ...,
        help="Saved model: a model folder (save_pretrained), .pt2, TorchScript, state_dict "
        "(torch.save or .safetensors) or ONNX.",
    ),
    config: Path = typer.Option(
        ..., "--config", "-c", help="A recipe with a quantize.static, .dynamic or .auto pass."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must be empty)."),
    overrides: Overrides = None,
    force: bool = typer.Option(False, "--force", help="Replace results in a non-empty folder."),
    json_output: JsonOutput = False,
    quiet: Quiet = False,
    debug: Debug = False,
    trust_pickle: TrustPickle = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Quantize MODEL once as CONFIG's int8 pass would and rank every quantized node by the
    error it adds; write OUT/sensitivity.json, sensitivity.md and sensitivity.html.

    No model is kept. quantize.auto: its static per-channel candidate, else its dynamic one.
    """
    with reported_errors(debug, library_stdout_hidden=True), private_tempdir():
        from compress.job.analyze import analyze as analyze_model

        def log(message: str) -> None:
            if not quiet:
                stderr.print(f"[dim]·[/] {escape(one_line(message))}", highlight=False)

        result = analyze_model(
            model, config, out, force, trust_pickle, log, overrides or (), trust_remote_code
        )
    if json_output:
        sys.stdout.write(json.dumps(result.written(), indent=2) + "\n")
        return
    from compress.report import markdown_table
    from compress.report.sensitivity import analysis_summary, node_rows

    headers, rows = node_rows(result.sensitivity, limit=10)
    typer.echo("\n".join([*analysis_summary(result), "", *markdown_table(headers, rows)]))
    typer.echo(f"\nwritten: {out}/sensitivity.json, sensitivity.md, sensitivity.html")
