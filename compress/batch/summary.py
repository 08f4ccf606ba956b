"""The batch's summary: every model with its status and numbers, as summary.json (machines),
summary.csv (spreadsheets) and summary.md (people, CI job summaries); and the exit code."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from compress.errors import EXIT_FAILED, EXIT_GATE_FAILED, EXIT_OK
from compress.job.interrupts import uninterrupted
from compress.job.staging import StagingArea
from compress.records import Record
from compress.report import fmt_value

SCHEMA_VERSION = 1
STATUSES = ("ok", "gate_failed", "failed", "timed_out")
Status = Literal["ok", "gate_failed", "failed", "timed_out"]
CSV_COLUMNS = (
    *("model", "status", "size_ratio", "speedup", "accuracy_drop", "seconds", "threads"),
    *("reused", "output", "exit_code", "reason"),
)


class BatchRow(Record):
    """One model of the batch: its status and numbers (every row has every key; null where a
    figure does not apply), as summary.json lists it and its done.json marker holds it."""

    model: str = Field(description="its path under DIR")
    status: Status
    reason: str | None
    exit_code: int | None = Field(description="the worker's; negative: killed by that signal")
    size_ratio: float | None
    speedup: float | None
    accuracy_drop: float | None
    seconds: float | None
    threads: int
    output: str = Field(description="its folder under OUTDIR")
    reused: bool = Field(description="--resume found it done and kept it")
    model_sha256: str | None
    config_sha256: str | None
    inputs_sha256: str | None = Field(
        default=None, description="everything else its run read: data, architectures, versions"
    )


class BatchSummary(Record):
    """summary.json: how the batch ran, the count of each status, the exit code, every model."""

    schema_version: int = SCHEMA_VERSION
    directory: str
    config: str
    pattern: str | None
    executor: str
    jobs: int
    cores: int
    threads_per_job: int
    timeout_per_model: float | None
    seconds: float
    counts: dict[str, int]
    exit_code: int
    models: list[BatchRow]


def exit_code(rows: list[BatchRow]) -> int:
    """1 when some model failed or timed out, else 3 when some gate failed, else 0."""
    statuses = {row.status for row in rows}
    if statuses & {"failed", "timed_out"}:
        return EXIT_FAILED
    return EXIT_GATE_FAILED if "gate_failed" in statuses else EXIT_OK


def build_summary(rows: list[BatchRow], settings: dict[str, Any]) -> BatchSummary:
    """`settings`: how the batch ran (BatchSummary's fields before `counts`)."""
    return BatchSummary(
        **settings,
        counts={status: sum(row.status == status for row in rows) for status in STATUSES},
        exit_code=exit_code(rows),
        models=rows,
    )


def to_csv(summary: BatchSummary) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.written() for row in summary.models)
    return text.getvalue()


def counts_line(summary: BatchSummary) -> str:
    """`5 models: 3 ok, 1 gate failed, 1 failed, 0 timed out`."""
    counts = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in summary.counts.items())
    return f"{len(summary.models)} models: {counts}"


def threads_line(summary: BatchSummary) -> str:
    """How the cores were shared, which latency numbers depend on."""
    threads = summary.threads_per_job
    return (
        f"{summary.jobs} job(s) at once ({summary.executor}) on {summary.cores} cores: "
        f"each job's torch and OpenMP limited to {threads} thread(s), and report.threads (ONNX "
        f"Runtime latency) to at most {threads}"
    )


def table_rows(summary: BatchSummary) -> tuple[list[str], list[list[str]]]:
    """The per-model table as headers and cells (for Markdown and the terminal)."""
    headers = ["model", "status", "size ratio", "speedup", "acc. drop", "seconds", "reason"]
    rows = [
        [
            row.model + (" (reused)" if row.reused else ""),
            row.status.replace("_", " "),
            fmt_value(row.size_ratio, ".2f"),
            fmt_value(row.speedup, ".2f"),
            fmt_value(row.accuracy_drop, ".4f"),
            fmt_value(row.seconds, ".1f"),
            row.reason or "",
        ]
        for row in summary.models
    ]
    return headers, rows


def to_markdown(summary: BatchSummary) -> str:
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


def write_summary(out_dir: Path, summary: BatchSummary) -> None:
    """The three files appear together, as the batch's last act: a signal while they are
    renamed into place leaves none of them (see compress.job.interrupts)."""
    texts = (json.dumps(summary.written(), indent=2) + "\n", to_csv(summary), to_markdown(summary))
    with StagingArea(out_dir, "-o") as area:
        for name, text in zip(SUMMARY_FILES, texts, strict=True):
            area.add_text(name, text)
        with uninterrupted(commit=True):
            area.place()
