"""Several report.json files side by side: the same model under different recipes, or one recipe
across models. Each report is reduced to its baseline and final stage, its summary and gates;
the comparison is itself JSON (for machines) and renders as Markdown, a table and HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from compress.config.limits import MAX_REPORT_BYTES
from compress.errors import ReportFileError
from compress.files import read_bounded
from compress.records import Record
from compress.report import fmt_value, markdown_table
from compress.report.model import (
    SCHEMA_VERSION,
    Environment,
    Gate,
    LatencyFigures,
    Metric,
    Report,
    Stage,
    Summary,
    major_version,
)

REQUIRED_KEYS = ("stages", "summary", "gates", "batch_sizes", "metric", "environment")


class StageFigures(Record):
    """A stage's figures in a comparison (`stage`: the final stage's name)."""

    stage: str | None = None
    size_bytes: int
    gzip_bytes: int
    params: int
    macs: int
    latency_ms: dict[str, LatencyFigures]
    metric: Metric | None

    @classmethod
    def of(cls, stage: Stage, named: bool = False) -> StageFigures:
        return cls(
            stage=stage.name if named else None,
            size_bytes=stage.size_bytes,
            gzip_bytes=stage.gzip_bytes,
            params=stage.params,
            macs=stage.macs,
            latency_ms=stage.latency_ms,
            metric=stage.metric,
        )


class ComparedReport(Record):
    name: str
    model_file: str | None
    passes: str | None
    metric: str
    baseline: StageFigures
    final: StageFigures
    summary: Summary
    gates: list[Gate]
    passed: bool
    warnings: int
    environment: Environment


class Comparison(Record):
    """Several reports side by side: what `compress report A B --format json` writes."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["comparison"] = "comparison"
    batch_sizes: list[int]
    reports: list[ComparedReport]


def load_report(path: Path) -> Report:
    """A report written by `compress run`; ReportFileError says what is wrong with the file."""
    path = Path(path)
    data = read_bounded(
        path, MAX_REPORT_BYTES, "report", ReportFileError, "a report.json file",
        "a report.json is far smaller; give the report.json of a run",
    )  # fmt: skip
    try:
        report = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ReportFileError(f"{path}: not UTF-8 text; give the report.json of a run") from None
    except json.JSONDecodeError as e:
        raise ReportFileError(
            f"{path}: not JSON ({e.msg}, line {e.lineno}); give the report.json of a run"
        ) from None
    except RecursionError:
        raise ReportFileError(f"{path}: JSON nested too deeply to be a report") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(report, dict) or key not in report]
    if missing:
        raise ReportFileError(
            f"{path}: not a compress report (no {', '.join(missing)}); give the report.json "
            "that `compress run` wrote"
        )
    version = report.get("schema_version")
    major = major_version(version)
    if major is None or major > SCHEMA_VERSION:
        raise ReportFileError(
            f"{path}: report schema_version {version} is newer than this compress reads "
            f"({SCHEMA_VERSION}.x); render it with the compress version that wrote it, or "
            "upgrade compress"
            if major
            else f"{path}: report schema_version {version!r} is not a version; give the "
            "report.json that `compress run` wrote"
        )
    try:
        return Report.read(report)
    except (ValueError, RecursionError) as e:  # pydantic's ValidationError is a ValueError
        raise ReportFileError(
            f"{path}: not a report this compress reads ({_first_error(e)}); "
            "give the report.json that `compress run` wrote"
        ) from None


def _first_error(error: Exception) -> str:
    """'stages.0.size_bytes: Field required', or the error's kind."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    if not isinstance(error, ValidationError):
        return str(error)
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def report_names(paths: list[Path]) -> list[str]:
    """Short, distinct names: a run's folder (out/int8/report.json -> int8), else the file
    name; the full path where two would read the same."""
    names = [p.parent.name if p.name == "report.json" and p.parent.name else p.stem for p in paths]
    return [str(p) if names.count(n) > 1 else n for n, p in zip(names, paths, strict=True)]


def compare(named: dict[str, Report]) -> Comparison:
    """The machine-readable comparison of reports, by name, in the order given."""
    batch_sizes: list[int] = []
    for report in named.values():
        batch_sizes += [b for b in report.batch_sizes if b not in batch_sizes]
    return Comparison(
        batch_sizes=batch_sizes,
        reports=[_entry(name, report) for name, report in named.items()],
    )


def _entry(name: str, report: Report) -> ComparedReport:
    return ComparedReport(
        name=name,
        model_file=report.provenance.model_file,
        passes=report.provenance.passes,
        metric=report.metric,
        baseline=StageFigures.of(report.baseline),
        final=StageFigures.of(report.final, named=True),
        summary=report.summary,
        gates=report.gates,
        passed=all(g.passed for g in report.gates),
        warnings=len(report.warnings),
        environment=report.environment,
    )


def comparison_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Side by side: one column per report (its final stage against its own baseline), one row
    per figure, so that a few runs fit a terminal however many figures there are."""
    entries = comparison.reports

    def row(label: str, cell) -> list[str]:
        return [label, *(cell(entry) for entry in entries)]

    def metric(entry: ComparedReport) -> str:
        value = entry.final.metric
        return f"{entry.metric} {value.value:.4f}" if value and value.value is not None else "n/a"

    rows = [
        row("model", lambda e: e.model_file or "?"),
        row("passes", lambda e: e.passes or "?"),
        row("size KB", lambda e: f"{e.final.size_bytes / 1024:.1f}"),
        row("size ratio", lambda e: f"{e.summary.size_ratio:.2f}x"),
        row("gzip ratio", lambda e: f"{e.summary.gzip_ratio:.2f}x"),
        *(
            row(f"p50 ms @{b}", lambda e, b=b: p50_cell(e.final.latency_ms, b))
            for b in comparison.batch_sizes
        ),
        row("speedup", lambda e: f"{e.summary.speedup:.2f}x @{e.summary.speedup_batch}"),
        row("metric", metric),
        row("accuracy drop", lambda e: fmt_value(e.summary.accuracy_drop, ".4f")),
        row("gates", lambda e: gates_cell(e.gates)),
    ]
    return ["", *(entry.name for entry in entries)], rows


def p50_cell(latency: dict[str, LatencyFigures], batch: int) -> str:
    figures = latency.get(str(batch))
    return f"{figures.p50:.3f}" if figures else "n/a"


def gates_cell(gates: list[Gate]) -> str:
    failed = [g.name for g in gates if not g.passed]
    if not gates:
        return "none"
    return f"{len(gates)} pass" if not failed else "FAIL: " + ", ".join(failed)


def comparison_markdown(comparison: Comparison) -> str:
    headers, rows = comparison_rows(comparison)
    lines = ["# Compression reports compared", "", *markdown_table(headers, rows), ""]
    lines.append(
        "Each column is a run's final stage; ratios and speedup are against its own baseline."
    )
    cpus = {entry.environment.cpu for entry in comparison.reports}
    if len(cpus) > 1:
        lines.append(f"> **Note:** measured on different CPUs ({', '.join(sorted(cpus))}).")
    return "\n".join(lines) + "\n"
