"""The report: measured stages, a summary against the baseline, gate verdicts, the environment.

Built as a typed `Report` (compress.report.model) and written as report.json (for machines,
`schema_version`ed) and report.md (for people and CI job summaries)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from compress.config import Config, GatesSection
from compress.measure.environment import environment
from compress.measure.interference import BUSY_ADVICE
from compress.measure.latency import SPEED_TOLERANCE, Latency, latency_settings
from compress.measure.metrics import metric_drop
from compress.report.budget_warnings import budget_warnings
from compress.report.generation import (
    busy_generation,
    generation_heading,
    generation_rows,
    generation_settings,
    generation_summary,
    stage_generation,
)
from compress.report.model import (
    SCHEMA_VERSION,
    BenchResult,
    Gate,
    Paired,
    Provenance,
    Report,
    Stage,
    Summary,
)

if TYPE_CHECKING:
    from compress.measure.generation import Generation
    from compress.measure.latency import Speedup


def stage_key(index: int, name: str) -> str:
    """How a stage is named in its latency measurement (two passes may share a name)."""
    return f"{index}:{name}"


def summarize(stages: list[Stage], first_batch: int, latency: Latency | None = None) -> Summary:
    base, final = stages[0], stages[-1]
    speedup = base.figure(first_batch).p50 / final.figure(first_batch).p50
    paired = None
    if latency is not None:  # the ratio of the p50s, or through the baseline for a carried stage
        last = stage_key(len(stages) - 1, final.name)
        paired = latency.batches[first_batch].speedup(stage_key(0, base.name), last)
        speedup = paired.ratio
    before = base.metric.value if base.metric else None
    after = final.metric.value if final.metric else None
    drop = (
        metric_drop(base.metric.name, before, after)
        if base.metric and before is not None and after is not None
        else None
    )
    return Summary(
        size_ratio=round(base.size_bytes / final.size_bytes, 4),
        gzip_ratio=round(base.gzip_bytes / final.gzip_bytes, 4),
        speedup=round(speedup, 4),
        speedup_ci=paired.interval() if paired else None,
        speedup_verdict=paired.verdict if paired else None,
        speedup_batch=first_batch,
        accuracy_drop=None if drop is None else round(drop, 6),
        final_size_mb=round(final.size_bytes / 1e6, 4),
    )


def paired_figures(paired: Speedup) -> Paired:
    return Paired(speedup=round(paired.ratio, 4), ci=paired.interval(), verdict=paired.verdict)


def compare_stages(stages: list[Stage], latency: Latency) -> list[Stage]:
    """Each stage with its speed against its input at every batch size, paired over the rounds
    they were timed in together: `vs_input` {"<batch>": {speedup, ci, verdict}}."""
    compared = stages[:1]
    for index, (previous, stage) in enumerate(zip(stages, stages[1:], strict=False), 1):
        reference, key = stage_key(index - 1, previous.name), stage_key(index, stage.name)
        vs_input = {
            str(batch): paired_figures(timings.speedup(reference, key))
            for batch, timings in latency.batches.items()
        }
        compared.append(stage.model_copy(update={"vs_input": vs_input}))
    return compared


def flag_slower_stages(
    stages: list[Stage], batch_sizes: list[int]
) -> tuple[list[Stage], list[str]]:
    """Each stage marked where it is slower than its input: by the paired interval
    (`vs_input`, see compare_stages) where it was measured, else by p50 beyond 3%.
    `slower_than_input` is the first batch size's verdict (what the speed guard and
    quantize.auto judge by), every batch size where it is slower is in `slower_at_batch_sizes`;
    and a warning naming each slowdown."""
    flagged, warnings = stages[:1], []
    for previous, stage in zip(stages, stages[1:], strict=False):
        slower = []
        for batch in batch_sizes:
            before, after = previous.figure(batch).p50, stage.figure(batch).p50
            paired = (stage.vs_input or {}).get(str(batch))
            is_slower = (
                after > before * SPEED_TOLERANCE if paired is None else (paired.verdict == "slower")
            )
            if is_slower:
                slower.append(batch)
                ci = f", 95% CI {paired.ci[0]:.2f}-{paired.ci[1]:.2f}x" if paired else ""
                warnings.append(
                    f"stage {stage.name} is slower than its input {previous.name} at batch "
                    f"{batch}: p50 {after:.3f} ms vs {before:.3f} ms ({before / after:.2f}x{ci})"
                    + (f"; {stage.fix_if_slower}" if stage.fix_if_slower else "")
                )
        update = {"slower_than_input": batch_sizes[0] in slower, "slower_at_batch_sizes": slower}
        flagged.append(stage.model_copy(update=update))
    return flagged, warnings


def busy_latency(latency: Latency) -> list[str]:
    """A warning per batch size timed while other processes used the CPU."""
    return [
        f"latency at batch {timings.batch} was timed on a busy machine "
        f"({timings.machine.describe()}): its figures and speedups may not repeat; {BUSY_ADVICE}"
        for timings in latency.busy()
    ]


def evaluate_gates(gates: GatesSection, summary: Summary) -> list[Gate]:
    """One verdict per configured gate; a missing value (no metric) counts as a failure."""
    generated = summary.generation
    checks = [
        ("max_accuracy_drop", summary.accuracy_drop, lambda v, lim: v <= lim),
        ("min_speedup", summary.speedup, lambda v, lim: v >= lim),
        ("min_size_ratio", summary.size_ratio, lambda v, lim: v >= lim),
        ("max_size_mb", summary.final_size_mb, lambda v, lim: v <= lim),
        (
            "min_tokens_per_second",
            generated.tokens_per_second if generated else None,
            lambda v, lim: v >= lim,
        ),
        (
            "min_decode_speedup",
            generated.decode_speedup if generated else None,
            lambda v, lim: v >= lim,
        ),
    ]
    return [
        Gate(name=gate, limit=limit, value=value, passed=value is not None and ok(value, limit))
        for gate, value, ok in checks
        if (limit := getattr(gates, gate)) is not None
    ]


def unsettled_latency(
    stages: list[Stage], batch_sizes: list[int], latency: Latency | None = None
) -> list[str]:
    """A warning per batch size whose medians had not settled when the time budget ended
    (`latency`, where given, tells settling apart from a busy machine, warned of apart)."""
    unsettled = [
        batch for batch in batch_sizes if not all(stage.figure(batch).stable for stage in stages)
    ]
    if latency is not None:
        unsettled = [b for b in unsettled if not latency.batches[b].settled]
    return [
        f"latency at batch {batch} had not settled within report.max_seconds: its figures are "
        "noisier than report.stable_within; close other work or raise max_seconds"
        for batch in unsettled
    ]


def build_report(
    stages: list[Stage],
    config: Config,
    provenance: Provenance,
    latency_input: str,
    outputs: list[str],
    judged: int,
    latency: Latency,
    generation: Generation | None = None,
) -> Report:
    """The report of measured `stages`; `latency_input` says where the timed samples came from,
    `outputs` names the model's outputs, of which the metric judged output `judged`; `latency`
    is the measurement the stages' figures come from."""
    settings = config.report
    batch_sizes = settings.batch_sizes
    stages, slower = flag_slower_stages(compare_stages(stages, latency), batch_sizes)
    summary = summarize(stages, batch_sizes[0], latency)
    generated = None
    if generation is not None:
        keys = [stage_key(i, stage.name) for i, stage in enumerate(stages)]
        by_stage = stage_generation(generation, keys)
        pairs = zip(stages, by_stage, strict=True)
        stages = [s.model_copy(update={"generation": g}) for s, g in pairs]
        first = generation.settings.batch_sizes[0]
        summary = summary.model_copy(update={"generation": generation_summary(by_stage, first)})
        generated = generation_settings(generation)
        slower += busy_generation(generation)
    gates = evaluate_gates(config.gates, summary)
    warnings = slower + busy_latency(latency) + unsettled_latency(stages, batch_sizes, latency)
    warnings += budget_warnings(stages, gates, settings.metric)
    return Report(
        schema_version=SCHEMA_VERSION,
        stages=stages,
        summary=summary,
        gates=gates,
        passed=all(g.passed for g in gates),
        warnings=warnings,
        metric=settings.metric,
        judged_output=outputs[judged] if outputs else None,
        outputs=outputs,
        batch_sizes=batch_sizes,
        latency=latency_settings(settings, latency_input) | {"machine": latency.machine()},
        generation=generated,
        provenance=provenance,
        environment=environment(settings.threads, config.seed, settings.pin_threads),
    )


def to_json(report: Report) -> str:
    return json.dumps(report.written(), indent=2) + "\n"


def stage_label(stage: Stage) -> str:
    """A stage's name for people; says when the speed guard kept the pass's input, and when the
    stage was reused from the cache."""
    return (
        stage.name
        + (" (reverted)" if stage.reverted else "")
        + (" (cached)" if stage.from_cache else "")
    )


def fmt_value(value, spec: str) -> str:
    """A number for people; n/a where nothing was measured."""
    return "n/a" if value is None else format(value, spec)


def human_count(value: int) -> str:
    """3707520 -> 3.71M: counts read at a glance (report.json keeps the exact numbers)."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.2f}{suffix}"
    return str(value)


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The per-stage table, as headers and formatted cells (for Markdown and the terminal)."""
    batches = report.batch_sizes
    headers = [
        "stage",
        "size KB",
        "gzip KB",
        "params",
        "MACs",
        "zeros",
        *(f"p50 ms @{b}" for b in batches),  # the batch size after @
    ]
    rows = [
        [
            stage_label(stage),
            f"{stage.size_bytes / 1024:.1f}",
            f"{stage.gzip_bytes / 1024:.1f}",
            human_count(stage.params),
            human_count(stage.macs),
            f"{stage.sparsity:.0%}",
            *(f"{stage.figure(b).p50:.3f}" for b in batches),
            fmt_value(stage.metric.value if stage.metric else None, ".4f"),
        ]
        for stage in report.stages
    ]
    return [*headers, report.metric], rows


def stage_notes(report: Report) -> list[str]:
    """One line per thing a pass reported doing (the candidate kept, nodes kept in float), and
    per stage whose latency was timed in an earlier run."""
    through = "(stage cache); its speedups go through the baseline, timed in both runs"
    carried = f"latency as timed in an earlier run on this machine {through}"
    generated = f"generation as timed in an earlier run on this machine {through}"
    return [
        f"{stage.name}: {line}"
        for stage in report.stages
        for line in [
            *(stage.details.lines() if stage.details is not None else []),
            *([carried] if stage.latency_from_cache else []),
            *([generated] if any(g.from_cache for g in (stage.generation or {}).values()) else []),
        ]
    ]


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def details_table(stage: Stage, metric: str) -> list[str]:
    """The Markdown of the table a stage's Details give (quantize.auto's candidates), if any."""
    table = stage.details.table(metric) if stage.details is not None else None
    if table is None:
        return []
    return ["", f"### {stage.name}: {table.title}", "", *markdown_table(table.headers, table.rows)]


def speedup_interval(summary: Summary) -> str:
    """' (95% CI 1.88-1.95x)', or '' for a report without one."""
    if not summary.speedup_ci:
        return ""
    low, high = summary.speedup_ci
    return f" (95% CI {low:.2f}-{high:.2f}x)"


def machine_words(report: Report | BenchResult) -> str:
    """'; timed on a quiet machine', '; busy machine at batch 8 (...)', or '' (older reports)."""
    machine = report.latency.machine
    if not machine:
        return ""
    busy = [
        f"batch {batch} ({figures.describe()})"
        for batch, figures in machine.items()
        if figures.state == "busy"
    ]
    if busy:
        return "; timed on a busy machine at " + ", ".join(busy)
    states = {figures.state for figures in machine.values()}
    return "; timed on a quiet machine" if states == {"quiet"} else ""


def measured_with(report: Report | BenchResult) -> str:
    """How and where the figures were measured (for a re-measure to match), without a full
    stop; `report` is a report or what `compress bench` measured."""
    env, latency = report.environment, report.latency
    cores = f" ({env.cpu_count} cores)" if env.cpu_count else ""
    text = f"Measured with ONNX Runtime {env.onnxruntime} on {env.cpu}{cores}, "
    text += f"{env.threads} thread(s)" + (" pinned to cores" if env.pinned else "")
    if env.cpu_flags is not None:
        text += f", int8 instructions: {', '.join(env.cpu_flags) or 'none of AVX2/VNNI/AMX'}"
    text += f", governor {env.cpu_governor}" if env.cpu_governor else ""
    text += f", seed {env.seed}" if env.seed is not None else ""
    source = latency.input
    source = "ones shaped like model.inputs" if source == "model.inputs" else f"{source} samples"
    same = ", the same for every stage" if isinstance(report, Report) else ""
    text += (
        f"; latency after {latency.warmup_runs} warm-up runs, until each p50 is known "
        f"within ±{latency.stable_within:.0%} or {latency.max_seconds:g} s per batch "
        f"size, on {source}{same}{machine_words(report)}"
    )
    return text


def generation_lines(report: Report) -> list[str]:
    """The generation table, where report.generation timed it."""
    if report.generation is None:
        return []
    names = [stage_label(stage) for stage in report.stages]
    by_stage = [stage.generation or {} for stage in report.stages]
    headers, rows = generation_rows(names, by_stage, report.generation.batch_sizes)
    return ["", f"**{generation_heading(report.generation)}**", "", *markdown_table(headers, rows)]


def judged_output_line(report: Report) -> list[str]:
    """Which output the metric judged, when the model has more than one."""
    if len(report.outputs) < 2:
        return []
    return [
        "",
        f"**{report.metric}** judged on output `{report.judged_output}` "
        f"(the model's outputs: {', '.join(report.outputs)}; `report.output` picks another)",
    ]


def to_markdown(report: Report) -> str:
    headers, rows = table_rows(report)
    lines = ["# Compression report", "", *markdown_table(headers, rows)]
    s = report.summary
    lines += [
        "",
        f"**Size ratio** {s.size_ratio:.2f}x (gzipped {s.gzip_ratio:.2f}x) · "
        f"**speedup** {s.speedup:.2f}x{speedup_interval(s)} at "
        f"batch {s.speedup_batch} · **accuracy drop** {fmt_value(s.accuracy_drop, '.4f')}",
    ]
    if report.gates:
        lines += ["", "| gate | limit | value | result |", "|---|---|---|---|"]
        lines += [
            f"| {g.name} | {g.limit:g} | {fmt_value(g.value, '.4f')} | "
            f"{'pass' if g.passed else '**FAIL**'} |"
            for g in report.gates
        ]
    lines += generation_lines(report)
    lines += judged_output_line(report)
    notes = stage_notes(report)
    lines += ["", *(f"- {note}" for note in notes)] if notes else []
    for stage in report.stages:
        lines += details_table(stage, report.metric)
    lines += ["", *(f"> **Warning:** {w}" for w in report.warnings)] if report.warnings else []
    folder, tokenizer = report.provenance.model_folder, report.provenance.tokenizer
    lines += ["", f"Model folder: {folder.describe()}."] if folder else []
    lines += ["", f"Text tokenized by {tokenizer.describe()}."] if tokenizer else []
    lines += ["", measured_with(report) + "; p50/p90/p99 in report.json.", ""]
    return "\n".join(lines) + "\n"
