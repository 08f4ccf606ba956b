"""A decoder's generation in the report: per stage and batch size its prefill, decode steps,
tokens per second and peak memory, with the decode speedup over the baseline paired over the
rounds they were timed in; the summary's figures the generation gates read; and its table."""

from __future__ import annotations

from compress.config import GenerationSection
from compress.measure.generation import Generation
from compress.measure.interference import BUSY_ADVICE
from compress.report.model import (
    GenerationSettings,
    GenerationSummary,
    Paired,
    StageGeneration,
)


def stage_generation(generation: Generation, keys: list[str]) -> list[dict[str, StageGeneration]]:
    """Each stage's figures by batch size (`keys`: the stages' names in the measurement, the
    baseline first)."""
    by_stage: list[dict[str, StageGeneration]] = []
    for index, key in enumerate(keys):
        figures = {}
        for batch, timings in generation.batches.items():
            paired = _paired(timings.decode_speedup(keys[0], key)) if index else None
            figures[str(batch)] = StageGeneration(
                **timings.figures(key).model_dump(), decode_vs_baseline=paired,
                from_cache=(key in timings.carried) or None,
            )  # fmt: skip
        by_stage.append(figures)
    return by_stage


def _paired(speedup) -> Paired:
    return Paired(speedup=round(speedup.ratio, 4), ci=speedup.interval(), verdict=speedup.verdict)


def generation_settings(generation: Generation) -> GenerationSettings:
    wanted: GenerationSection = generation.settings
    return GenerationSettings(
        prompt_tokens=wanted.prompt_tokens,
        new_tokens=wanted.new_tokens,
        batch_sizes=wanted.batch_sizes,
        min_rounds=wanted.min_rounds,
        machine={str(b): t.machine.rounded() for b, t in generation.batches.items()},
    )


def generation_summary(stages: list[dict[str, StageGeneration]], batch: int) -> GenerationSummary:
    final = stages[-1][str(batch)]
    paired = final.decode_vs_baseline
    return GenerationSummary(
        batch=batch,
        tokens_per_second=final.tokens_per_second,
        decode_speedup=paired.speedup if paired else 1.0,
        decode_speedup_ci=paired.ci if paired else [1.0, 1.0],
    )


def busy_generation(generation: Generation) -> list[str]:
    return [
        f"generation at batch {t.batch} was timed on a busy machine ({t.machine.describe()}): "
        f"its figures and speedups may not repeat; {BUSY_ADVICE}"
        for t in generation.busy()
    ]


def generation_rows(
    names: list[str],
    stages: list[dict[str, StageGeneration]],
    batch_sizes: list[int],
    named: str = "stage",
) -> tuple[list[str], list[list[str]]]:
    """The generation table: a row per stage (or file, `named` "model") and batch size."""
    headers = [
        named, "batch", "prefill ms", "decode p50 ms", "p90 ms", "tokens/s",
        "decode speedup", "peak MB",
    ]  # fmt: skip
    rows = []
    for name, figures in zip(names, stages, strict=True):
        for batch in batch_sizes:
            f = figures[str(batch)]
            paired = f.decode_vs_baseline
            versus = (
                f"{paired.speedup:.2f}x ({paired.ci[0]:.2f}-{paired.ci[1]:.2f})" if paired else "-"
            )
            rss = "n/a" if f.peak_rss_mb is None else f"{f.peak_rss_mb:.0f}"
            rows.append([
                name, str(batch), f"{f.prefill_ms:.2f}", f"{f.decode_ms_p50:.3f}",
                f"{f.decode_ms_p90:.3f}", f"{f.tokens_per_second:.1f}", versus, rss,
            ])  # fmt: skip
    return headers, rows


def generation_heading(settings: GenerationSettings) -> str:
    return (
        f"Generation: greedy, {settings.prompt_tokens}-token prompt then "
        f"{settings.new_tokens} new tokens over the key/value cache"
    )
