"""Benchmark row for `compress batch`: 8 models with --jobs 2 against --jobs 1, wall clock.

Each run is the real command in its own process (`python -m compress_cli batch`), timed from
outside.
The goal is a 1.7x shorter wall clock on 2 cores. Also timed: what a fresh Python costs before
it does any work (its start and the torch import): on Linux the warm server pays it once per
batch and thread count, and each model's worker is forked from it.
Run alone with `python bench/run.py batch`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = 8
GOAL = 1.7
MODEL = ROOT / "sample_models" / "digits_cnn.pt2"
CONFIG = ROOT / "configs" / "int8-static.yaml"


def timed(command: list[str]) -> float:
    """Wall seconds of `command`, without the stage cache: the models are copies of one file,
    which the cache would compute once."""
    started = time.perf_counter()
    env = {**os.environ, "COMPRESS_NO_CACHE": "1"}
    subprocess.run(command, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def batch_seconds(models: Path, out: Path, jobs: int) -> float:
    command = [sys.executable, "-m", "compress_cli", "batch", str(models), "-c", str(CONFIG)]
    return timed(command + ["-o", str(out), "--jobs", str(jobs), "--quiet"])


def worker_start_seconds() -> float:
    """Median of 3: a fresh interpreter importing the CLI and torch, as the warm server does
    once (and every worker where there is none)."""
    command = [sys.executable, "-c", "import compress_cli.main, torch"]
    return statistics.median(timed(command) for _ in range(3))


def batch_row() -> tuple[dict, tuple[str, bool]]:
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        for index in range(MODELS):
            shutil.copyfile(MODEL, models / f"cnn{index}.pt2")
        serial = batch_seconds(models, Path(tmp) / "jobs1", 1)
        parallel = batch_seconds(models, Path(tmp) / "jobs2", 2)
    row = {
        "models": MODELS,
        "model": MODEL.name,
        "config": CONFIG.name,
        "jobs1_seconds": round(serial, 2),
        "jobs2_seconds": round(parallel, 2),
        "ratio": round(serial / parallel, 3),
        "worker_start_seconds": round(worker_start_seconds(), 2),
    }
    print(
        f"batch: {MODELS} x {MODEL.name} ({CONFIG.name}): --jobs 1 {serial:.1f} s, --jobs 2 "
        f"{parallel:.1f} s, {row['ratio']:.2f}x; a fresh Python's start-up (python + torch "
        f"import) {row['worker_start_seconds']:.2f} s, paid once by the warm server"
    )
    check = (
        f"batch: --jobs 2 at least {GOAL}x faster than --jobs 1 on {MODELS} models "
        f"(measured {row['ratio']:.2f}x)",
        row["ratio"] >= GOAL,
    )
    return row, check
