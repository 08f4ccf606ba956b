"""Hand-made report records for the tests of the report's renderers: stages with chosen sizes,
latencies and metric values, and a report around them with placeholder provenance."""

from __future__ import annotations

from typing import Any

from compress.report.model import Report, Stage, Summary

ENVIRONMENT = {
    **dict.fromkeys(("compress", "python", "torch", "onnx", "onnxruntime", "numpy"), "x"),
    **{"platform": "linux", "cpu": "cpu", "cpu_count": 2, "cpus_usable": 2, "threads": 1},
}
PROVENANCE = {
    **dict.fromkeys(("compress_version", "config_sha256", "model_sha256"), "x"),
    **{"model_file": "model.onnx", "config_file": "config.yaml", "source_format": "onnx"},
    "passes": "test",
}
LATENCY = {
    **{"threads": 1, "warmup_runs": 1, "min_runs": 5, "min_seconds": 0, "max_seconds": 10},
    **{"stable_within": 0.05, "input": "data.eval"},
}


def stage(name: str, size: int, p50: dict[str, float], top1: float | None, **fields) -> Stage:
    """A stage `size` bytes large, with the p50 (ms) per batch size given (p90 = p99 = p50);
    `fields` set the rest (details, reverted) or replace these defaults."""
    return Stage(
        **{
            "name": name,
            "size_bytes": size,
            "gzip_bytes": size // 2,
            "params": 10,
            "macs": 1000,
            "sparsity": 0.0,
            "threads": 1,
            "latency_ms": {
                batch: {"p50": ms, "p90": ms, "p99": ms, "runs": 10, "stable": True}
                for batch, ms in p50.items()
            },
            "metric": None if top1 is None else {"name": "top1", "value": top1},
            "reverted": False,
            "slower_than_input": False,
            "slower_at_batch_sizes": [],
        }
        | fields
    )


def hand_made_report(stages: list[Stage], summary: Summary, **fields: Any) -> Report:
    """A report of `stages`, at the batch sizes of the first stage's latency."""
    batch_sizes = [int(b) for b in stages[0].latency_ms]
    return Report(
        **{
            "schema_version": 1,
            "stages": stages,
            "summary": summary,
            "gates": [],
            "passed": True,
            "warnings": [],
            "metric": "top1",
            "judged_output": None,
            "outputs": [],
            "batch_sizes": batch_sizes,
            "latency": LATENCY | {"batch_sizes": batch_sizes},
            "provenance": PROVENANCE,
            "environment": ENVIRONMENT,
        }
        | fields
    )
