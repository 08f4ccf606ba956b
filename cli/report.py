"""`compress report`: render one report.json again, or compare several side by side."""

from __future__ import annotations

import io
import json
import sys
from enum import Enum
from pathlib import Path

import typer
from compress_cli.errors import reported_errors, stderr
from compress_cli.options import Debug
from rich.console import Console


class Format(str, Enum):
    table = "table"
    md = "md"
    html = "html"
    json = "json"


SUFFIX_FORMATS = {".md": Format.md, ".html": Format.html, ".htm": Format.html, ".json": Format.json}


def report(
    reports: list[Path] = typer.Argument(..., help="report.json files written by compress run."),
    fmt: Format | None = typer.Option(
        None,
        "--format",
        "-f",
        help="table, md, html or json (default: from -o's suffix, else table).",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Replace FILE if it exists."),
    debug: Debug = False,
) -> None:
    """Render one report again, or compare several side by side.

    Same model and different recipes, or one recipe across models: each run's final stage
    against its own baseline.
    """
    with reported_errors(debug):
        from compress_cli.render import stdout_console

        from compress.job.outdir import check_output_file
        from compress.job.staging import write_atomically
        from compress.models.run_files import InputFile
        from compress.report.compare import load_report, report_names

        if out is not None:
            check_output_file(out, force, [InputFile("an input report", p) for p in reports])
        chosen = fmt or SUFFIX_FORMATS.get(out.suffix.lower() if out else "", Format.table)
        named = dict(zip(report_names(reports), (load_report(p) for p in reports), strict=True))
        if chosen is Format.table and out is None:
            _print_table(named, stdout_console())
            return
        text = _render(named, chosen)
        if out is None:
            sys.stdout.write(text)
            return
        write_atomically(out, text)
    stderr.print(f"wrote {out}", markup=False)


def _render(named: dict, fmt: Format) -> str:
    """The text of one report (when there is one) or of the comparison, in `fmt`."""
    from compress.report import to_json, to_markdown
    from compress.report.compare import compare, comparison_markdown
    from compress.report.html import comparison_to_html, to_html

    if fmt is Format.table:
        text = io.StringIO()
        console = Console(file=text, width=160, color_system=None, highlight=False)
        _print_table(named, console)
        return text.getvalue()
    if len(named) == 1:
        [one] = named.values()
        return {Format.md: to_markdown, Format.html: to_html, Format.json: to_json}[fmt](one)
    comparison = compare(named)
    if fmt is Format.md:
        return comparison_markdown(comparison)
    if fmt is Format.html:
        return comparison_to_html(comparison, named)
    return json.dumps(comparison.written(), indent=2) + "\n"


def _print_table(named: dict, console: Console) -> None:
    from compress_cli.render import comparison_table, print_report

    from compress.report.compare import compare

    if len(named) == 1:
        [one] = named.values()
        print_report(one, console)
    else:
        console.print(comparison_table(compare(named)))
