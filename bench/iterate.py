"""Benchmark rows for iterating on a recipe (issue 19): the stage cache and `compress sweep`.

1. The digits prune -> distill -> int8 recipe run with a fresh stage cache, then again with one
   int8 setting changed (`--set passes[2].per_channel=false`), and again with only a gate
   tightened (`--set gates.min_speedup=1.01`, which no pass of the recipe reads): each re-run's
   wall time against the first's (goal: under 25%), and the gate re-run publishes the same
   graph and weights as the first run (its provenance metadata aside).
2. A 3 x 2 sweep over prune.channels' amount and the int8 pass's per_channel on the digits CNN
   (configs/prune-int8.yaml: prune with 5 fine-tune epochs, then static int8), against the six
   separate runs without the cache (goal: under half their total wall time).

Every run is the real command in its own process, timed from outside, one after the other.
Run alone with `python bench/run.py iterate`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "sample_models" / "digits_cnn.pt2"
RECIPE = ROOT / "configs" / "digits-prune-distill-int8.yaml"
SWEPT = ROOT / "configs" / "prune-int8.yaml"
AMOUNTS, PER_CHANNEL = ("0.3", "0.4", "0.5"), ("true", "false")
RERUN_GOAL, SWEEP_GOAL = 0.25, 0.5


def timed(args: list[str], cache: Path | None) -> float:
    """Wall seconds of `compress ARGS`, with the stage cache in `cache` (None: without)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMPRESS_")}
    env |= {"COMPRESS_CACHE_DIR": str(cache)} if cache else {"COMPRESS_NO_CACHE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "compress_cli", *args, "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise RuntimeError(f"compress {' '.join(args)} failed: {done.stderr.strip()[-300:]}")
    return seconds


def rerun_rows(folder: Path) -> tuple[dict, list[tuple[str, bool]]]:
    cache = folder / "cache"
    run = ["run", str(MODEL), "-c", str(RECIPE)]
    first = timed([*run, "-o", str(folder / "first")], cache)
    again = timed(
        [*run, "-o", str(folder / "again"), "--set", "passes[2].per_channel=false"], cache
    )
    gate = timed([*run, "-o", str(folder / "gate"), "--set", "gates.min_speedup=1.01"], cache)
    row = {"first_s": round(first, 2), "changed_int8_s": round(again, 2), "gate_s": round(gate, 2)}
    same = same_model(folder / "first" / "model.onnx", folder / "gate" / "model.onnx")
    checks = []
    for what, seconds in (("one int8 setting changed", again), ("only a gate tightened", gate)):
        share = seconds / first
        checks.append(
            (
                f"the prune -> distill -> int8 recipe again with {what} takes {share:.0%} of the "
                f"first run's wall time ({seconds:.1f} s vs {first:.1f} s; goal under "
                f"{RERUN_GOAL:.0%})",
                share < RERUN_GOAL,
            )
        )
    checks.append(
        (
            "the gate re-run publishes the first run's graph and weights (metadata aside): "
            + ("the same" if same else "they differ"),
            same,
        )
    )
    return row, checks


def same_model(first: Path, second: Path) -> bool:
    """The same graph and weights: the files with their metadata (provenance) left out."""
    import onnx

    protos = [onnx.load(str(path)) for path in (first, second)]
    for proto in protos:
        del proto.metadata_props[:]
    return protos[0].SerializeToString() == protos[1].SerializeToString()


def sweep_row(folder: Path) -> tuple[dict, tuple[str, bool]]:
    separate = 0.0
    for amount in AMOUNTS:
        for per_channel in PER_CHANNEL:
            out = folder / f"run-{amount}-{per_channel}"
            sets = [
                "--set",
                f"passes[0].amount={amount}",
                "--set",
                f"passes[1].per_channel={per_channel}",
            ]
            separate += timed(["run", str(MODEL), "-c", str(SWEPT), "-o", str(out), *sets], None)
    vary = ["--vary", f"passes[0].amount={','.join(AMOUNTS)}"]
    vary += ["--vary", f"passes[1].per_channel={','.join(PER_CHANNEL)}"]
    swept = timed(
        ["sweep", str(MODEL), "-c", str(SWEPT), "-o", str(folder / "sweep"), *vary],
        folder / "cache",
    )
    row = {"six_runs_s": round(separate, 2), "sweep_s": round(swept, 2)}
    share = swept / separate
    return row, (
        f"a 3 x 2 sweep (prune amount x int8 per_channel) on the digits CNN takes {share:.0%} "
        f"of the six separate runs' wall time ({swept:.1f} s vs {separate:.1f} s; goal under "
        f"{SWEEP_GOAL:.0%})",
        share < SWEEP_GOAL,
    )


def iterate_table() -> tuple[dict, list[tuple[str, bool]]]:
    with tempfile.TemporaryDirectory() as folder:
        rerun, rerun_checks = rerun_rows(Path(folder) / "rerun")
        swept, sweep_check = sweep_row(Path(folder) / "sweep")
    return {"rerun": rerun, "sweep": swept}, [*rerun_checks, sweep_check]


def main() -> int:
    _, checks = iterate_table()
    for text, met in checks:
        print(f"[{'met' if met else 'missed'}] {text}")
    return 0 if all(met for _, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
