"""Can a user trust compress's timings? Repeatability on a quiet machine, and honesty beside a
CPU hog (issue 17's goals), on the samples' quantize.auto recipes.

    python bench/timing.py            # about 6 minutes on a 2-core machine

- The same run twice in a row: the speedups at every report batch size within 5% of each other.
- `compress bench` on the written model.onnx (with the run's config) reproduces the report's
  final p50 within 10%.
- quantize.auto's choice on each sample is the same in 5 of 5 runs.
- With a busy loop on one core for the whole run: the report says busy (at some batch size) in
  every run, and auto makes no choice the quiet runs contradict (it keeps the input, or picks
  what the quiet runs picked).

Run it on a quiet machine: the quiet goals measure compress, not the neighbours.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import print_goals  # noqa: E402
from compress.job.pipeline import run  # noqa: E402
from compress.report.model import BenchResult, Report  # noqa: E402

SAMPLES = [
    ("digits CNN", ROOT / "sample_models/digits_cnn.pt2", ROOT / "configs/auto-int8.yaml"),
    (
        "text transformer",
        ROOT / "sample_models/text_transformer.ts",
        ROOT / "configs/auto-int8-text.yaml",
    ),  # noqa: E501
]
RUNS = 5
SAME_SPEEDUP, SAME_P50 = 0.05, 0.10


def _run(model: Path, config: Path, out: Path) -> Report:
    return run(model, config, out, force=True)


def _bench(model: Path, config: Path) -> BenchResult:
    """`compress bench MODEL -c CONFIG --json` as a user runs it: in a process of its own."""
    command = [
        sys.executable,
        "-m",
        "compress_cli",
        "bench",
        str(model),
        "-c",
        str(config),
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return BenchResult.read(json.loads(done.stdout))


def _chosen(report: Report) -> str | None:
    return getattr(report.final.details, "chosen", None)


def _busy(report: Report) -> bool:
    return any(figures.state == "busy" for figures in (report.latency.machine or {}).values())


def quiet_checks(name: str, model: Path, config: Path, folder: Path) -> tuple[list, list]:
    """RUNS quiet runs: repeatability of speedups, `compress bench`, and auto's choice."""
    reports = [_run(model, config, folder / f"quiet{i}") for i in range(RUNS)]
    checks = []
    first, second = reports[0], reports[1]
    for batch in first.baseline.latency_ms:
        one, two = (
            r.baseline.latency_ms[batch].p50 / r.final.latency_ms[batch].p50
            for r in (first, second)
        )
        checks.append(
            (
                f"{name}: the same run twice gives speedups within {SAME_SPEEDUP:.0%} at batch "
                f"{batch} ({one:.3f}x and {two:.3f}x)",
                abs(one - two) <= SAME_SPEEDUP * max(one, two),
            )
        )
    measured = _bench(folder / "quiet0" / "model.onnx", config)
    for batch, figures in first.final.latency_ms.items():
        again = measured.latency_ms[batch].p50
        checks.append(
            (
                f"{name}: compress bench reproduces the final p50 within {SAME_P50:.0%} at batch "
                f"{batch} ({figures.p50:.3f} ms in the report, {again:.3f} ms again)",
                abs(again - figures.p50) <= SAME_P50 * figures.p50,
            )
        )
    choices = [_chosen(r) for r in reports]
    checks.append(
        (
            f"{name}: quantize.auto makes the same choice in {RUNS} of {RUNS} runs ({choices})",
            len(set(choices)) == 1,
        )
    )
    busy = sum(_busy(r) for r in reports)
    checks.append((f"{name}: no quiet run was called busy ({busy} of {RUNS})", busy == 0))
    return checks, choices


def hog_checks(name: str, model: Path, config: Path, folder: Path, quiet: list) -> list:
    """RUNS runs beside a busy loop on one core: busy said every time, no contradicted choice."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        reports = [_run(model, config, folder / f"hog{i}") for i in range(RUNS)]
    finally:
        hog.kill()
        hog.wait()
    said = sum(_busy(r) for r in reports)
    choices = [_chosen(r) for r in reports]
    allowed = {None, *quiet}
    return [
        (f"{name}: beside a CPU hog the report says busy in {said} of {RUNS} runs", said == RUNS),
        (
            f"{name}: beside a CPU hog auto makes no choice the quiet runs contradict "
            f"({choices}; quiet runs chose {sorted(set(map(str, quiet)))})",
            all(choice in allowed for choice in choices),
        ),
    ]


def timing_checks() -> list[tuple[str, bool]]:
    checks = []
    with tempfile.TemporaryDirectory() as folder:
        for name, model, config in SAMPLES:
            quiet, choices = quiet_checks(name, model, config, Path(folder) / name)
            checks += quiet + hog_checks(name, model, config, Path(folder) / name, choices)
    return checks


def main() -> int:
    checks = timing_checks()
    return print_goals(checks)


if __name__ == "__main__":
    sys.exit(main())
