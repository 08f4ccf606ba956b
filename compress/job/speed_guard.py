"""The speed guard: `on_slower: revert` undoes a pass that made the model slower than its input,
judged by timing the two together (compress.measure.speed)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from compress.job.context import Context
from compress.measure.speed import first_batch_timing


@dataclass
class Guarded:
    """What the speed guard did: `reverted` the pass, and a `note` for the stage's details."""

    reverted: bool
    note: str = ""


def revert_if_slower(source: Path, target: Path, ctx: Context, pass_name: str) -> Guarded:
    """Time `target` against `source` at the first report batch size; if it is slower (paired
    interval), overwrite `target` with `source`. A machine that stays busy reverts nothing."""
    settings = ctx.config.config.report
    check = first_batch_timing({"input": source, "output": target}, settings, ctx.samples, ctx.log)
    before, after = check.p50["input"], check.p50["output"]
    timing = f"{after:.3f} ms vs {before:.3f} ms at batch {check.batch}"
    if check.busy:
        note = f"on_slower: revert could not judge ({timing}): {check.machine_note()}"
        ctx.log(f"{pass_name}: {note}; its output is kept")
        return Guarded(False, note)
    paired = check.timings.speedup("input", "output")
    interval = f"{paired.ratio:.2f}x, 95% CI {paired.low:.2f}-{paired.high:.2f}x"
    if paired.verdict != "slower":
        return Guarded(False, f"not slower than its input ({timing}, {interval})")
    ctx.log(
        f"{pass_name} made the model slower ({timing}, {interval}); on_slower: revert keeps "
        "its input"
    )
    shutil.copyfile(source, target)
    return Guarded(True, f"reverted: slower than its input ({timing}, {interval})")
