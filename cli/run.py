"""`compress run`: compress one model as a config says, write model.onnx and the reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from compress_cli.errors import reported_errors, stderr
from compress_cli.options import (
    CacheDir,
    Debug,
    JsonOutput,
    NoCache,
    Overrides,
    Quiet,
    TrustPickle,
    TrustRemoteCode,
)
from compress_cli.process import private_tempdir
from rich.markup import escape

from compress.errors import EXIT_GATE_FAILED, one_line

if TYPE_CHECKING:
    from compress.report.model import Report


def run(
    model: Path = typer.Argument(
        ...,
        help="Saved model: a model folder (save_pretrained), .pt2, TorchScript, state_dict "
        "(torch.save or .safetensors) or ONNX.",
    ),
    config: Path = typer.Option(..., "--config", "-c", help="The YAML recipe."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (must be empty)."),
    overrides: Overrides = None,
    junit: Path | None = typer.Option(
        None, "--junit", help="Also write the gates as JUnit XML test cases to this file."
    ),
    force: bool = typer.Option(False, "--force", help="Replace results in a non-empty folder."),
    json_output: JsonOutput = False,
    quiet: Quiet = False,
    debug: Debug = False,
    trust_pickle: TrustPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
) -> None:
    """Compress MODEL with the passes in CONFIG; write OUT/model.onnx and the reports.

    The reports are OUT/report.json, report.md and report.html. With GITHUB_STEP_SUMMARY set,
    the Markdown report is appended to that file. Stages an earlier run computed from the same
    model, data, settings and versions are reused from the stage cache (see `compress cache`).
    """
    with reported_errors(debug, library_stdout_hidden=True), private_tempdir():
        from compress_cli.progress import terminal_progress

        from compress.cache.store import open_cache
        from compress.job.pipeline import run as run_job
        from compress.progress import silent
        from compress.report import to_json

        def log(message: str) -> None:
            if not quiet:
                stderr.print(f"[dim]·[/] {escape(one_line(message))}", highlight=False)

        def warn(message: str) -> None:
            stderr.print(f"warning: {one_line(message)}", markup=False)

        report = run_job(
            model,
            config,
            out,
            force,
            trust_pickle,
            log,
            silent if quiet else terminal_progress,
            overrides=overrides or (),
            junit=junit,
            cache=open_cache(cache_dir, no_cache, warn),
            trust_remote_code=trust_remote_code,
        )
        _append_step_summary(report)
    if json_output:
        sys.stdout.write(to_json(report))
    else:
        from compress_cli.render import print_report, stdout_console

        print_report(report, stdout_console())
    for warning in report.warnings:
        stderr.print(f"warning: {one_line(warning)}", markup=False)
    from compress.report.ci import gate_failure

    failed = [gate_failure(g) for g in report.gates if not g.passed]
    if failed:  # each with its value and limit: the reason, not only the gate's name
        stderr.print(
            f"error: gate failed: {'; '.join(failed)} (outputs written to {out})", markup=False
        )
        raise typer.Exit(EXIT_GATE_FAILED)


def _append_step_summary(report: Report) -> None:
    """The Markdown report appended to a GitHub job summary, when GITHUB_STEP_SUMMARY is set."""
    from compress.report import to_markdown
    from compress.report.ci import append_step_summary

    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            append_step_summary(Path(summary), to_markdown(report))
        except OSError as e:  # the run itself succeeded; the summary is a courtesy
            stderr.print(f"warning: cannot append to GITHUB_STEP_SUMMARY: {e}", markup=False)
