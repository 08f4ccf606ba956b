"""Render a report for a terminal (rich table); the JSON and Markdown forms live in the library."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from compress.report import fmt_value, stage_notes, table_rows


def report_table(report: dict[str, Any]) -> Table:
    headers, rows = table_rows(report)
    table = Table(title="compression report", title_justify="left", box=box.SIMPLE_HEAD)
    widest_stage = max(len(row[0]) for row in rows)
    for header in headers:
        if header == "stage":  # stage names are never cut short
            table.add_column(header, no_wrap=True, min_width=widest_stage)
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(report_table(report))
    s = report["summary"]
    console.print(
        f"size ratio {s['size_ratio']:.2f}x (gzipped {s['gzip_ratio']:.2f}x)  "
        f"speedup {s['speedup']:.2f}x "
        f"(batch {s['speedup_batch']})  accuracy drop {fmt_value(s['accuracy_drop'], '.4f')}"
    )
    for note in stage_notes(report):
        console.print(note, markup=False)
    for gate in report["gates"]:
        verdict = "[green]pass[/]" if gate["passed"] else "[bold red]FAIL[/]"
        console.print(
            f"gate {gate['name']}: {fmt_value(gate['value'], '.4f')} "
            f"(limit {gate['limit']}) {verdict}"
        )
