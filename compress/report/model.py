"""What a run produces, typed: the pydantic models whose serialization is report.json.

`build_report` validates every report it builds against `Report` (a key added, renamed or of
another type is an error at once, not a surprise for a CI job), `compress schema --report`
prints its JSON Schema, and `compress report` reads a report.json through it. A pass's own
`details` stay a free-form object here: each pass documents them in the README.

Versions: `schema_version` is MAJOR (an int, today 1) or "MAJOR.MINOR". A reader accepts any
minor version of its major: a newer minor only adds keys, which it ignores. A newer major is
refused with a one-line message.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1  # report.json's major version; a minor one only adds optional keys


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyFigures(Strict):
    """One stage at one batch size, in milliseconds."""

    p50: float
    p90: float
    p99: float
    runs: int
    stable: bool = Field(description="its median settled, on a machine not found busy")


class Metric(Strict):
    name: str
    value: float | None


class Paired(Strict):
    """A stage against its input at one batch size, from the rounds they were timed in."""

    speedup: float
    ci: list[float] = Field(description="95% confidence interval of the speedup")
    verdict: Literal["faster", "slower", "tie"]


class Stage(Strict):
    name: str
    size_bytes: int
    gzip_bytes: int
    params: int
    macs: int
    sparsity: float
    latency_ms: dict[str, LatencyFigures] = Field(description="by batch size")
    threads: int
    metric: Metric | None
    reverted: bool
    details: dict[str, Any] | None = Field(default=None, description="what the pass did")
    fix_if_slower: str | None = None
    vs_input: dict[str, Paired] | None = Field(default=None, description="by batch size")
    slower_than_input: bool
    slower_at_batch_sizes: list[int]


class Summary(Strict):
    size_ratio: float
    gzip_ratio: float
    speedup: float
    speedup_ci: list[float] | None = None
    speedup_verdict: Literal["faster", "slower", "tie"] | None = None
    speedup_batch: int
    accuracy_drop: float | None
    final_size_mb: float


class Gate(Strict):
    name: str
    limit: float
    value: float | None
    passed: bool


class MachineLoad(Strict):
    state: Literal["quiet", "busy", "unknown"]
    other_cpu_cores: float | None
    preemptions_per_s: float | None
    load_1m: float | None
    seconds: float


class LatencySettings(Strict):
    batch_sizes: list[int]
    threads: int
    warmup_runs: int
    min_runs: int
    min_seconds: float
    max_seconds: float
    stable_within: float
    input: str
    machine: dict[str, MachineLoad] | None = Field(default=None, description="by batch size")


class Environment(Strict):
    compress: str
    python: str
    torch: str
    onnx: str
    onnxruntime: str
    numpy: str
    platform: str
    cpu: str
    cpu_flags: list[str] | None = None
    cpu_governor: str | None = None
    cpu_count: int | None
    cpus_usable: int | None
    threads: int
    pinned: bool | None = None
    seed: int | None = None


class Report(Strict):
    schema_version: int | str
    stages: list[Stage] = Field(min_length=1)
    summary: Summary
    gates: list[Gate]
    passed: bool
    warnings: list[str]
    metric: str
    judged_output: str | None
    outputs: list[str]
    batch_sizes: list[int]
    latency: LatencySettings
    provenance: dict[str, str]
    environment: Environment


def major_version(version: object) -> int | None:
    """1 for 1, "1" or "1.3"; None for anything else."""
    text = str(version) if isinstance(version, (int, str)) and not isinstance(version, bool) else ""
    major = text.split(".", 1)[0]
    return int(major) if major.isdigit() else None


def report_schema() -> dict[str, Any]:
    """report.json's JSON Schema (`compress schema --report`)."""
    schema = Report.model_json_schema()
    schema["title"] = f"compress report.json, schema_version {SCHEMA_VERSION}"
    return schema
