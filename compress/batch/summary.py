"""The batch's summary: every model with its status and numbers, as summary.json (machines),
summary.csv (spreadsheets) and summary.md (people, CI job summaries); and the exit code."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from compress.errors import EXIT_FAILED, EXIT_GATE_FAILED, EXIT_OK
from compress.job.interrupts import uninterrupted
from compress.job.staging import StagingArea
from compress.report import fmt_value

SCHEMA_VERSION = 1
STATUSES = ("ok", "gate_failed", "failed", "timed_out")
CSV_COLUMNS = (
    *("model", "status", "size_ratio", "speedup", "accuracy_drop", "seconds", "threads"),
    *("reused", "output", "exit_code", "reason"),
)


def exit_code(rows: list[dict[str, Any]]) -> int:
    """1 when some model failed or timed out, else 3 when some gate failed, else 0."""
    statuses = {row["status"] for row in rows}
    if statuses & {"failed", "timed_out"}:
        return EXIT_FAILED
    return EXIT_GATE_FAILED if "gate_failed" in statuses else EXIT_OK


def build_summary(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        **settings,
        "counts": {status: sum(row["status"] == status for row in rows) for status in STATUSES},
        "exit_code": exit_code(rows),
        "models": rows,
    }


def to_csv(summary: dict[str, Any]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["models"])
    return text.getvalue()


def counts_line(summary: dict[str, Any]) -> str:
    """`5 models: 3 ok, 1 gate failed, 1 failed, 0 timed out`."""
    counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in summary["counts"].items())
    return f"{len(summary['models'])} models: {counts}"


def threads_line(summary: dict[str, Any]) -> str:
    """How the cores were shared, which latency numbers depend on."""
    threads = summary["threads_per_job"]
    return (
        f"{summary['jobs']} job(s) at once ({summary['executor']}) on {summary['cores']} cores: "
        f"each job's torch and OpenMP limited to {threads} thread(s), and report.threads (ONNX "
        f"Runtime latency) to at most {threads}"
    )


def table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-model table as headers and cells (for Markdown and the terminal)."""
    headers = ["model", "status", "size ratio", "speedup", "acc. drop", "seconds", "reason"]
    rows = [
        [
            row["model"] + (" (reused)" if row.get("reused") else ""),
            row["status"].replace("_", " "),
            fmt_value(row.get("size_ratio"), ".2f"),
            fmt_value(row.get("speedup"), ".2f"),
            fmt_value(row.get("accuracy_drop"), ".4f"),
            fmt_value(row.get("seconds"), ".1f"),
            row.get("reason") or "",
        ]
        for row in summary["models"]
    ]
    return headers, rows


def to_markdown(summary: dict[str, Any]) -> str:
    headers, rows = table_rows(summary)
    lines = ["# Batch summary", "", counts_line(summary), "", threads_line(summary), ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


SUMMARY_FILES = ("summary.json", "summary.csv", "summary.md")


def remove_summary(out_dir: Path) -> None:
    """A summary exists only once the batch that wrote it has ended: an earlier batch's must not
    stand beside a batch that is running, or was killed."""
    for name in SUMMARY_FILES:
        (out_dir / name).unlink(missing_ok=True)


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    """The three files appear together, as the batch's last act: a signal while they are
    renamed into place leaves none of them (see compress.job.interrupts)."""
    texts = (json.dumps(summary, indent=2) + "\n", to_csv(summary), to_markdown(summary))
    with StagingArea(out_dir, "-o") as area:
        for name, text in zip(SUMMARY_FILES, texts, strict=True):
            area.add_text(name, text)
        with uninterrupted(commit=True):
            area.place()
