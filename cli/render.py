"""Render a report for a terminal (rich table); the JSON and Markdown forms live in the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from compress_cli.terminal import color_system
from rich import box
from rich.console import Console
from rich.table import Table

from compress.report import fmt_value, speedup_interval, stage_notes, table_rows

if TYPE_CHECKING:
    from compress.report.compare import Comparison
    from compress.report.model import BenchComparison, BenchResult, Report

REPORT_WIDTH = 120


def stdout_console() -> Console:
    """Logs and pipes get a width that fits every column (rich assumes 80 off a terminal)."""
    width = None if sys.stdout.isatty() else REPORT_WIDTH
    return Console(highlight=False, width=width, color_system=color_system())


def report_table(report: Report) -> Table:
    headers, rows = table_rows(report)
    return _table("compression report", headers, rows)


def generation_table(report: Report) -> Table:
    from compress.report import stage_label
    from compress.report.generation import generation_heading, generation_rows

    settings = report.generation
    assert settings is not None  # shown only for a report that timed generation
    names = [stage_label(stage) for stage in report.stages]
    by_stage = [stage.generation or {} for stage in report.stages]
    headers, rows = generation_rows(names, by_stage, settings.batch_sizes)
    return _table(generation_heading(settings).lower(), headers, rows)


def bench_generation_table(measured: BenchResult) -> Table:
    """`compress bench` of a decoder: each file's generation (with --compare, B's decode
    speedup over A, timed in alternation)."""
    from compress.report.generation import generation_heading, generation_rows

    generation = measured.generation
    assert generation is not None  # shown only for a decoder
    # with --compare, A and B as in the comparison above: two paths would not leave room
    names = ["A", "B"] if measured.compare else [Path(measured.model).name]
    by_model = list(generation.models.values())
    headers, rows = generation_rows(names, by_model, generation.settings.batch_sizes, "model")
    return _table(generation_heading(generation.settings).lower(), headers, rows)


def comparison_table(comparison: Comparison) -> Table:
    from compress.report.compare import comparison_rows

    headers, rows = comparison_rows(comparison)
    return _table("compression reports compared", headers, rows)


def _table(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    """The first column (stage names, or figure names) is never cut short; the others align
    right."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    widest_stage = max(len(row[0]) for row in rows)
    for header in headers:
        if header == headers[0]:
            table.add_column(header, no_wrap=True, min_width=widest_stage)
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def print_bench(measured: BenchResult, console: Console) -> None:
    """What `compress bench` measured: latency per batch size, the footprint, the settings."""
    from compress.report import human_count, measured_with

    table = Table(title=measured.model, title_justify="left", box=box.SIMPLE_HEAD)
    for header in ("batch", "p50 ms", "p90 ms", "p99 ms", "runs", "settled"):
        table.add_column(header, justify="right", no_wrap=True)
    for batch, figures in measured.latency_ms.items():
        cells = [f"{value:.3f}" for value in (figures.p50, figures.p90, figures.p99)]
        table.add_row(batch, *cells, str(figures.runs), "yes" if figures.stable else "no")
    console.print(table)
    console.print(
        f"size {measured.size_bytes / 1024:.1f} KB (gzipped {measured.gzip_bytes / 1024:.1f}"
        f" KB)  params {human_count(measured.params)}  MACs {human_count(measured.macs)}",
    )
    if measured.compare is not None:
        print_comparison(measured, measured.compare, console)
    if measured.generation is not None:
        console.print(bench_generation_table(measured))
    for warning in measured.warnings:
        console.print(f"warning: {warning}", markup=False)
    console.print(measured_with(measured) + ".", markup=False)


def print_comparison(measured: BenchResult, other: BenchComparison, console: Console) -> None:
    """`compress bench A --compare B` (`other`): B against A per batch size, paired."""
    table = Table(
        title=f"{other.model} against {measured.model} (timed in alternation)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for header in ("batch", "A p50 ms", "B p50 ms", "B speedup", "95% CI", "verdict"):
        table.add_column(header, justify="right", no_wrap=True)
    for batch, paired in other.speedup.items():
        low, high = paired.ci
        table.add_row(
            batch,
            f"{measured.latency_ms[batch].p50:.3f}",
            f"{other.latency_ms[batch].p50:.3f}",
            f"{paired.speedup:.2f}x",
            f"{low:.2f}-{high:.2f}x",
            {"faster": "B faster", "slower": "B slower", "tie": "tie"}[paired.verdict],
        )
    console.print(table)


def print_report(report: Report, console: Console) -> None:
    console.print(report_table(report))
    if report.generation is not None:
        console.print(generation_table(report))
    s = report.summary
    console.print(
        f"size ratio {s.size_ratio:.2f}x (gzipped {s.gzip_ratio:.2f}x)  "
        f"speedup {s.speedup:.2f}x{speedup_interval(s)} "
        f"(batch {s.speedup_batch})  accuracy drop {fmt_value(s.accuracy_drop, '.4f')}"
    )
    for note in stage_notes(report):
        console.print(note, markup=False)
    for gate in report.gates:
        verdict = "[green]pass[/]" if gate.passed else "[bold red]FAIL[/]"
        console.print(
            f"gate {gate.name}: {fmt_value(gate.value, '.4f')} (limit {gate.limit:g}) {verdict}"
        )
