"""The speed guard: an ONNX pass with `on_slower: revert` is undone when it slows the model."""

from __future__ import annotations

import shutil
from pathlib import Path

from compress.context import Context
from compress.measure.latency import measure_latency
from compress.report import SLOWER_TOLERANCE


def revert_if_slower(source: Path, target: Path, ctx: Context, pass_name: str) -> bool:
    """Measure `target` against `source` at the first report batch size; if it is slower beyond
    noise, overwrite `target` with `source` and return True."""
    settings = ctx.config.config.report
    first_batch = settings.batch_sizes[0]
    one_batch = settings.model_copy(update={"batch_sizes": [first_batch]})
    latency = measure_latency(
        {"input": source, "output": target}, ctx.samples(first_batch), one_batch
    )
    before = latency["input"][str(first_batch)]["p50"]
    after = latency["output"][str(first_batch)]["p50"]
    if after <= before * SLOWER_TOLERANCE:
        return False
    ctx.log(
        f"{pass_name} made the model slower ({after:.3f} ms vs {before:.3f} ms at batch "
        f"{first_batch}); on_slower: revert keeps its input"
    )
    shutil.copyfile(source, target)
    return True
