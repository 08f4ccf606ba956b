"""The speed guard: `on_slower: revert` undoes a pass that made the model slower than its input,
judged by timing the two together as the report times models (compress.measure.speed): a
decoder exported with its key/value cache on its decode steps over the cache (report.generation,
or its defaults where the config has none), any other model at the first report batch size."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from compress.job.context import Context
from compress.measure.decoder_feeds import is_decoder_file
from compress.measure.speed import model_timer


@dataclass
class Guarded:
    """What the speed guard did: `reverted` the pass, and a `note` for the stage's details."""

    reverted: bool
    note: str = ""


def revert_if_slower(source: Path, target: Path, ctx: Context, pass_name: str) -> Guarded:
    """Time `target` against `source` (a decoder graph's decode steps, else the first report
    batch size); if it is slower (paired interval), overwrite `target` with `source`. A machine
    that stays busy reverts nothing."""
    decoder = is_decoder_file(source) and is_decoder_file(target)
    timer = model_timer(ctx.config.config.report, decoder, ctx.samples, ctx.log, ctx.positions)
    check = timer({"input": source, "output": target}, False)
    before, after = check.p50["input"], check.p50["output"]
    timing = f"{after:.3f} ms vs {before:.3f} ms {check.shape}"
    if check.busy:
        note = f"on_slower: revert could not judge ({timing}): {check.machine_note()}"
        ctx.log(f"{pass_name}: {note}; its output is kept")
        return Guarded(False, note)
    paired = check.speedup("input", "output")
    interval = f"{paired.ratio:.2f}x, 95% CI {paired.low:.2f}-{paired.high:.2f}x"
    if paired.verdict != "slower":
        return Guarded(False, f"not slower than its input ({timing}, {interval})")
    ctx.log(
        f"{pass_name} made the model slower ({timing}, {interval}); on_slower: revert keeps "
        "its input"
    )
    shutil.copyfile(source, target)
    return Guarded(True, f"reverted: slower than its input ({timing}, {interval})")
