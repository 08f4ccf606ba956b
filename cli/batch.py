"""`compress batch`: compress every model under a folder, one worker process each; a progress
bar while it runs, the summary table at the end."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from compress_cli.errors import reported_errors, stderr
from compress_cli.options import (
    CacheDir,
    Debug,
    Executor,
    JsonOutput,
    NoCache,
    Quiet,
    RayAddress,
    TrustPickle,
    TrustRemoteCode,
)
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import TaskID

    from compress.batch.summary import BatchRow, BatchSummary

STATUS_STYLE = {"ok": "green", "gate_failed": "yellow", "failed": "bold red", "timed_out": "red"}


def batch(
    models_dir: Path = typer.Argument(..., help="Folder of saved models, searched recursively."),
    config: Path = typer.Option(
        ..., "--config", "-c", help="Shared YAML recipe; NAME.yaml beside a model overrides it."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: a subfolder per model."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Models at once; each gets cores/N threads."),
    pattern: str = typer.Option(
        None, "--pattern", help="Glob on the path under DIR, e.g. '*.pt2' (default: all models)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Keep models done with the same model and config; redo the rest."
    ),
    force: bool = typer.Option(False, "--force", help="Redo every model in a non-empty OUT."),
    timeout_per_model: float = typer.Option(
        None, "--timeout-per-model", help="Stop a model's job after this many seconds."
    ),
    executor: Executor = "local",
    ray_address: RayAddress = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    trust_pickle: TrustPickle = False,
    trust_remote_code: TrustRemoteCode = False,
    json_output: JsonOutput = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Compress every model under MODELS_DIR with CONFIG; exit 1 if one failed, 3 if a gate did.

    The models' runs share the stage cache (--cache-dir, --no-cache as `compress run`)."""
    with reported_errors(debug):
        from compress.batch.runner import BatchOptions, run_batch

        options = BatchOptions(
            models_dir=models_dir,
            config=config,
            out_dir=out,
            jobs=jobs,
            pattern=pattern,
            resume=resume,
            force=force,
            timeout=timeout_per_model,
            executor=executor,
            ray_address=ray_address,
            cache_dir=cache_dir,
            no_cache=no_cache,
            trust_pickle=trust_pickle,
            trust_remote_code=trust_remote_code,
            debug=debug,
        )
        with BarProgress(quiet) as progress:
            summary = run_batch(options, progress)
    if json_output:
        sys.stdout.write(json.dumps(summary.written(), indent=2) + "\n")
    else:
        print_summary(summary, Console(highlight=False, width=None if sys.stdout.isatty() else 120))
    if summary.exit_code:
        stderr.print(
            f"error: {sum(n for s, n in summary.counts.items() if s != 'ok')} of "
            f"{len(summary.models)} models did not pass (see {out / 'summary.md'})",
            markup=False,
        )
        raise typer.Exit(summary.exit_code)


class BarProgress:
    """A progress bar on stderr (drawn on a terminal only) and one line per finished model (or
    sweep variant: `named` says how a row is named)."""

    def __init__(self, quiet: bool, named: Callable[[Any], str] = lambda row: row.model):
        from rich.progress import Progress

        self.quiet, self.named = quiet, named
        self.bar = Progress(console=stderr, transient=True, disable=quiet)
        self.task: TaskID | None = None

    def __enter__(self) -> BarProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def planned(self, total: int) -> None:
        self.task = self.bar.add_task("compressing", total=total)

    def finished(self, row: BatchRow) -> None:
        if self.task is not None:  # planned() adds the bar's task first
            self.bar.advance(self.task)
        if self.quiet:
            return
        style = STATUS_STYLE[row.status]
        reused = " (reused)" if row.reused else ""
        detail = f": {row.reason}" if row.reason else ""
        self.bar.console.print(
            f"[{style}]{row.status}[/] " + escape(f"{self.named(row)}{reused}{detail}"),
            highlight=False,
        )


def print_summary(summary: BatchSummary, console: Console) -> None:
    from compress.batch.summary import counts_line, table_rows, threads_line

    headers, rows = table_rows(summary)
    table = Table(title="batch summary", title_justify="left", box=box.SIMPLE_HEAD)
    for header in headers:
        numeric = header not in ("model", "status", "reason")
        table.add_column(header, justify="right" if numeric else "left", overflow="fold")
    for row, cells in zip(summary.models, rows, strict=True):
        cells = [escape(cell) for cell in cells]
        cells[1] = f"[{STATUS_STYLE[row.status]}]{cells[1]}[/]"
        table.add_row(*cells)
    console.print(table)
    console.print(counts_line(summary), markup=False)
    console.print(threads_line(summary), markup=False)
