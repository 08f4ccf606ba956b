"""Render a report for a terminal (rich table); the JSON and Markdown forms live in the library."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from compress.report import fmt_value, stage_label


def report_table(report: dict[str, Any]) -> Table:
    batches = [str(b) for b in report["batch_sizes"]]
    table = Table(title="compression report", title_justify="left")
    for header in [
        "stage",
        "size KB",
        "params",
        *(f"p50 ms @{b}" for b in batches),
        report["metric"],
    ]:
        table.add_column(header, justify="left" if header == "stage" else "right")
    for stage in report["stages"]:
        metric = stage["metric"]["value"] if stage["metric"] else None
        table.add_row(
            stage_label(stage),
            f"{stage['size_bytes'] / 1024:.1f}",
            f"{stage['params']:,}",
            *(f"{stage['latency_ms'][b]['p50']:.3f}" for b in batches),
            fmt_value(metric, ".4f"),
        )
    return table


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(report_table(report))
    s = report["summary"]
    console.print(
        f"size ratio {s['size_ratio']:.2f}x  speedup {s['speedup']:.2f}x "
        f"(batch {s['speedup_batch']})  accuracy drop {fmt_value(s['accuracy_drop'], '.4f')}"
    )
    for gate in report["gates"]:
        verdict = "[green]pass[/]" if gate["passed"] else "[bold red]FAIL[/]"
        console.print(
            f"gate {gate['name']}: {fmt_value(gate['value'], '.4f')} "
            f"(limit {gate['limit']}) {verdict}"
        )
