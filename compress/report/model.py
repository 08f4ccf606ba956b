"""What a run produces, typed: the records whose serialization is report.json.

The pipeline builds a `Report`; report.md, report.html, JUnit, the terminal table, `compress
report` and compare, the batch summary and the benchmarks read it. `compress schema --report`
prints its JSON Schema, and `compress report` reads a report.json back into it (`read_report`).
A stage's `details` are its pass's own record (`Pass.Details`, declared next to its Params),
chosen by the stage's name when a report is read back.

Versions: `schema_version` is MAJOR (an int, today 1) or "MAJOR.MINOR". A reader accepts any
minor version of its major: a newer minor only adds keys, which it ignores. A newer major is
refused with a one-line message.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializeAsAny, ValidationInfo, field_validator, model_validator

from compress.data.text import TextTokenizer
from compress.measure.generation import GenerationFigures
from compress.measure.interference import MachineLoad
from compress.measure.latency import LatencyFigures
from compress.measure.size import Footprint
from compress.models.hf_provenance import ModelFolder
from compress.passes.base import PassDetails
from compress.records import Amount, Count, Positive, Record, Share

SCHEMA_VERSION = 1  # report.json's major version; a minor one only adds optional keys

Verdict = Literal["faster", "slower", "tie"]


class Metric(Record):
    name: str
    value: float | None
    tokens: Count | None = Field(
        default=None, description="perplexity and token_agreement: the tokens scored"
    )


class Paired(Record):
    """A stage against its input at one batch size, from the rounds they were timed in."""

    speedup: Amount
    ci: list[Amount] = Field(
        min_length=2, max_length=2, description="95% confidence interval of the speedup"
    )
    verdict: Verdict


class StageGeneration(GenerationFigures):
    decode_vs_baseline: Paired | None = Field(
        default=None, description="decode speedup over the baseline, paired over the rounds"
    )
    from_cache: bool | None = Field(
        default=None,
        description="true: generated in an earlier run on this machine (a stage reused from the "
        "stage cache); its decode speedup goes through the baseline, timed in both runs",
    )


class GenerationSettings(Record):
    prompt_tokens: Positive
    new_tokens: Positive
    batch_sizes: list[Positive] = Field(min_length=1)
    min_rounds: Positive
    machine: dict[str, MachineLoad] = Field(description="by batch size")


class GenerationSummary(Record):
    """The final stage against the baseline at report.generation's first batch size."""

    batch: Positive
    tokens_per_second: Amount
    decode_speedup: Amount
    decode_speedup_ci: list[Amount] = Field(min_length=2, max_length=2)


class Stage(Record):
    name: str
    size_bytes: Count
    gzip_bytes: Count
    params: Count
    macs: Count
    sparsity: Share
    latency_ms: dict[str, LatencyFigures] = Field(description="by batch size")
    latency_from_cache: bool | None = Field(
        default=None,
        description="true: timed in an earlier run on this machine (a stage reused from the "
        "stage cache); its speedups go through the baseline, timed in both runs",
    )
    threads: Positive
    metric: Metric | None
    reverted: bool
    from_cache: bool | None = Field(
        default=None, description="true: reused from the stage cache, not computed in this run"
    )
    details: SerializeAsAny[PassDetails] | None = Field(
        default=None, description="what the pass did: its pass's Details record"
    )
    fix_if_slower: str | None = None
    vs_input: dict[str, Paired] | None = Field(default=None, description="by batch size")
    generation: dict[str, StageGeneration] | None = Field(
        default=None, description="a decoder's generation (report.generation), by batch size"
    )
    slower_than_input: bool = Field(description="at the first batch size, by vs_input")
    slower_at_batch_sizes: list[Positive]

    @field_validator("details", mode="before")
    @classmethod
    def _details_of_its_pass(cls, value: Any, info: ValidationInfo) -> Any:
        """Read back from JSON: the record of the pass this stage is named after; details that
        do not fit it (a report from another version of that pass) are kept as they are."""
        if isinstance(value, dict):
            from pydantic import ValidationError

            from compress.passes.base import OtherDetails
            from compress.passes.registry import details_type

            try:
                return details_type(info.data.get("name", "")).model_validate(
                    value, context=info.context
                )
            except ValidationError:
                return OtherDetails.model_validate(value)
        return value

    def figure(self, batch: int) -> LatencyFigures:
        return self.latency_ms[str(batch)]


class Summary(Record):
    size_ratio: Amount
    gzip_ratio: Amount
    speedup: Amount
    speedup_ci: list[Amount] | None = Field(default=None, min_length=2, max_length=2)
    speedup_verdict: Verdict | None = None
    speedup_batch: Positive
    accuracy_drop: float | None
    final_size_mb: Amount
    generation: GenerationSummary | None = None


class Gate(Record):
    name: str
    limit: float
    value: float | None
    passed: bool


class LatencySettings(Record):
    batch_sizes: list[Positive] = Field(min_length=1)
    threads: Positive
    warmup_runs: Count
    min_runs: Count
    min_seconds: Amount
    max_seconds: Amount
    stable_within: Amount
    input: str
    machine: dict[str, MachineLoad] | None = Field(default=None, description="by batch size")


class Environment(Record):
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


class Provenance(Record):
    """What the run was made from."""

    compress_version: str
    model_file: str
    config_file: str
    config_sha256: str = Field(description="the config file's bytes plus the --set overrides")
    config_overrides: str | None = None
    model_sha256: str = Field(description="a model folder's: of its files' sha256 together")
    source_format: str
    passes: str = Field(description="the pass types, comma-separated, or none")
    model_folder: ModelFolder | None = Field(
        default=None, description="a model folder: the files read, its architecture and task"
    )
    tokenizer: TextTokenizer | None = Field(
        default=None, description="text data: the tokenizer and its settings"
    )


class BenchComparison(Footprint):
    model: str
    latency_ms: dict[str, LatencyFigures] = Field(description="by batch size")
    speedup: dict[str, Paired] = Field(description="over the first model, by batch size")


class BenchGeneration(Record):
    """`compress bench` of a decoder: greedy generation of each file, timed in alternation."""

    settings: GenerationSettings
    models: dict[str, dict[str, StageGeneration]] = Field(
        description="by file (`model`, and `compare` with its decode speedup over `model`), "
        "then by batch size"
    )


class BenchResult(Footprint):
    """What `compress bench` measured of one ONNX file (and, with --compare, of a second)."""

    model: str
    latency_ms: dict[str, LatencyFigures] = Field(description="by batch size")
    latency: LatencySettings
    environment: Environment
    warnings: list[str]
    compare: BenchComparison | None = None
    generation: BenchGeneration | None = Field(
        default=None, description="a decoder's greedy generation (report.generation)"
    )


class Report(Record):
    schema_version: int | str
    stages: list[Stage] = Field(min_length=1)
    summary: Summary
    gates: list[Gate]
    passed: bool
    warnings: list[str]
    metric: str
    judged_output: str | None
    outputs: list[str]
    batch_sizes: list[Positive] = Field(min_length=1)
    latency: LatencySettings
    generation: GenerationSettings | None = Field(
        default=None, description="report.generation: how a decoder's generation was timed"
    )
    provenance: Provenance
    environment: Environment

    @model_validator(mode="after")
    def _timed_at_its_batch_sizes(self) -> Report:
        """Every stage has figures at every batch size, which every view reads."""
        for index, stage in enumerate(self.stages):
            missing = [b for b in self.batch_sizes if str(b) not in stage.latency_ms]
            if missing:
                raise ValueError(f"stages.{index}.latency_ms has no batch {missing[0]}")
        if self.summary.speedup_batch not in self.batch_sizes:
            raise ValueError(f"summary.speedup_batch {self.summary.speedup_batch} is not timed")
        return self

    @property
    def baseline(self) -> Stage:
        return self.stages[0]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def major_version(version: object) -> int | None:
    """1 for 1, "1" or "1.3"; None for anything else."""
    text = str(version) if isinstance(version, (int, str)) and not isinstance(version, bool) else ""
    major = text.split(".", 1)[0]
    return int(major) if major.isdigit() else None


def report_schema() -> dict[str, Any]:
    """report.json's JSON Schema (`compress schema --report`): a stage's details are any of the
    installed passes' Details records."""
    from pydantic import BaseModel
    from pydantic.json_schema import JsonSchemaMode, models_json_schema

    from compress.passes.registry import all_passes

    details = list(dict.fromkeys(p.Details for p in all_passes().values()))
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (Report, "validation"),
        *((d, "validation") for d in details),
    ]
    keys, schema = models_json_schema(models, ref_template="#/$defs/{model}")
    stage = schema["$defs"]["Stage"]["properties"]["details"]
    stage["anyOf"] = [keys[(d, "validation")] for d in details] + [{"type": "null"}]
    return schema["$defs"].pop("Report") | {
        "title": f"compress report.json, schema_version {SCHEMA_VERSION}",
        "$defs": schema["$defs"],
    }
