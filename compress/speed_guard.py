"""Speed checks between a pass's input and output: the speed guard (`on_slower: revert` undoes
a pass that slows the model) and the timing quantize.auto chooses by."""

from __future__ import annotations

import shutil
from pathlib import Path

from compress.context import Context
from compress.measure.latency import measure_latency
from compress.report import SLOWER_TOLERANCE


def first_batch_p50(
    paths: dict[str, Path], ctx: Context, min_runs: int | None = None
) -> tuple[int, dict[str, float]]:
    """p50 ms of each model at the first report batch size, measured interleaved; with
    `min_runs`, a brief measurement of that many runs each instead of the report's settings."""
    settings = ctx.config.config.report
    batch = settings.batch_sizes[0]
    update: dict = {"batch_sizes": [batch]}
    if min_runs is not None:
        update |= {"min_runs": min_runs, "min_seconds": 0.0, "max_seconds": 0.0}
    one_batch = settings.model_copy(update=update)
    latency = measure_latency(paths, ctx.samples(batch), one_batch)
    return batch, {name: latency[name][str(batch)]["p50"] for name in paths}


def clearly_faster(ms: float, input_ms: float) -> bool:
    """Faster than the input beyond run-to-run noise (a tie is not a win)."""
    return ms * SLOWER_TOLERANCE <= input_ms


def clearly_slower(ms: float, input_ms: float) -> bool:
    """Slower than the input beyond run-to-run noise (the report's `slower_than_input` rule)."""
    return ms > input_ms * SLOWER_TOLERANCE


def revert_if_slower(source: Path, target: Path, ctx: Context, pass_name: str) -> bool:
    """Measure `target` against `source` at the first report batch size; if it is slower beyond
    noise, overwrite `target` with `source` and return True."""
    batch, p50 = first_batch_p50({"input": source, "output": target}, ctx)
    before, after = p50["input"], p50["output"]
    if after <= before * SLOWER_TOLERANCE:
        return False
    ctx.log(
        f"{pass_name} made the model slower ({after:.3f} ms vs {before:.3f} ms at batch "
        f"{batch}); on_slower: revert keeps its input"
    )
    shutil.copyfile(source, target)
    return True
