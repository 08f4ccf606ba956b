"""`compress run`: compress one model as a config says, write model.onnx and the reports."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from cli.errors import reported_errors, stderr
from compress.errors import EXIT_GATE_FAILED

REPORT_WIDTH = 120


def run(
    model: Path = typer.Argument(..., help="Saved model: TorchScript, .pt2, state_dict or ONNX."),
    config: Path = typer.Option(..., "--config", "-c", help="The YAML recipe."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must be empty)."),
    force: bool = typer.Option(False, "--force", help="Replace results in a non-empty folder."),
    json_output: bool = typer.Option(False, "--json", help="Print only the report JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow a whole pickled module (runs code from the file)."
    ),
) -> None:
    """Compress MODEL with the passes in CONFIG; write OUT/model.onnx, report.json, report.md."""
    with reported_errors(debug):
        from compress.pipeline import run as run_job
        from compress.report import to_json

        def log(message: str) -> None:
            if not quiet:
                stderr.print(f"[dim]·[/] {message}", highlight=False)

        report = run_job(model, config, out, force, trust_pickle, log, show_progress=not quiet)
    if json_output:
        sys.stdout.write(to_json(report))
    else:
        from cli.render import print_report

        # Logs and pipes get a width that fits every column (rich assumes 80 off a terminal).
        width = None if sys.stdout.isatty() else REPORT_WIDTH
        print_report(report, Console(highlight=False, width=width))
    for warning in report["warnings"]:
        stderr.print(f"warning: {warning}", markup=False)
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    if failed:
        stderr.print(
            f"error: gate failed: {', '.join(failed)} (outputs written to {out})", markup=False
        )
        raise typer.Exit(EXIT_GATE_FAILED)
