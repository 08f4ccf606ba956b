"""A stage's peak memory while it generates: the peak resident set (RSS) of a process of its
own that opens the ONNX file and runs one greedy generation, so stages measured one after the
other in the run's process do not hide each other's peaks. The child imports ONNX Runtime and
numpy, not torch, so its peak is the model's cost plus a small interpreter's."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TIMEOUT_S = 1800


def peak_rss_mb(path: Path, prompt: np.ndarray, new_tokens: int, threads: int) -> float | None:
    """MB at the peak of a process generating `new_tokens` after `prompt` with the model at
    `path`; None where the platform does not say or the process failed."""
    order = {"path": str(path), "prompt": prompt.tolist(), "new": new_tokens, "threads": threads}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "compress.measure.peak_memory"],
            input=json.dumps(order), capture_output=True, text=True, timeout=TIMEOUT_S,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return round(float(done.stdout.strip().splitlines()[-1]), 1)
    except (ValueError, IndexError):
        return None


def _peak_of_this_process_mb() -> float | None:
    """Linux: VmHWM, the peak of this program's own memory (ru_maxrss would also count the
    parent's, which the child shared until it ran this program); elsewhere ru_maxrss."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes there, KB here


def _main() -> None:
    from compress.measure.generation import check_decoder, generate
    from compress.measure.runtime import open_session

    order = json.loads(sys.stdin.read())
    session = open_session(Path(order["path"]), order["threads"])
    declared = check_decoder(session, Path(order["path"]).name)
    generate(session, declared, np.asarray(order["prompt"], np.int64), order["new"])
    print(_peak_of_this_process_mb())


if __name__ == "__main__":
    _main()
