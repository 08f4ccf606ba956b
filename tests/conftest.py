"""Shared paths and helpers: the CLI is driven in-process (CliRunner) so torch loads once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from compress_cli.main import app
from typer.testing import CliRunner

from compress.passes.base import PassResult, TorchPass
from compress.passes.registry import register

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
CONFIGS = ROOT / "configs"


@register("test.identity")
class IdentityTorchPass(TorchPass):
    """A torch-stage pass for tests: returns the model unchanged, so the torch path is covered.

    Sample YAML:
        - type: test.identity
    """

    def apply(self, given, ctx):
        return PassResult(given.module)


def invoke(*args: str):
    """Run `compress ARGS...`; the result has exit_code, stdout and stderr apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def run_cli(model, config, out, *extra):
    """`compress run MODEL -c CONFIG -o OUT EXTRA...`."""
    return invoke("run", model, "-c", config, "-o", out, *extra)


def assert_refused(result, out: Path, *needles: str) -> None:
    """Exit 2 with one `error:` line holding every needle, no traceback, nothing in `out`."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def small_onnx(path: Path, batch: int = 2, dynamic: bool = True) -> Path:
    """An untrained Flatten+Linear digits model as ONNX (legacy exporter: fast, fixed names)."""
    import torch

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    axes = {"x": {0: "batch"}} if dynamic else None
    torch.onnx.export(
        module,
        (torch.zeros(batch, 1, 8, 8),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes=axes,
    )
    return path


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    """A config in `folder`, with the sample data copied beside it (paths are relative)."""
    for npz in SAMPLES.glob("*.npz"):
        target = folder / npz.name
        if not target.exists():
            shutil.copyfile(npz, target)
    path = folder / name
    path.write_text(text)
    return path


CNN_CONFIG = """\
version: 1
data:
  calibration: {path: digits_calib.npz, inputs: [x], limit: 64}
  eval: {path: digits_eval.npz, inputs: [x], labels: y}
passes:
  - type: quantize.static
    per_channel: true
report: {batch_sizes: [8], min_runs: 5, min_seconds: 0, warmup_runs: 1}
"""
STATE_DICT_CONFIG = CNN_CONFIG.replace(  # the digits CNN given as a state_dict
    "version: 1\n", "version: 1\nmodel: {arch: arch.py:DigitsCNN}\n"
)


@pytest.fixture(scope="session", autouse=True)
def no_stage_cache():
    """Every run computes its stages (as `--no-cache`), so a test sees the passes it sets up run;
    the stage cache's own tests turn it on with a folder of their own (`stage_cache`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPRESS_NO_CACHE", "1")
        patch.delenv("COMPRESS_CACHE_DIR", raising=False)
        yield


@pytest.fixture
def stage_cache(tmp_path, monkeypatch) -> Path:
    """A stage cache of the test's own, on for `compress run` in-process and in workers."""
    folder = tmp_path / "stage-cache"
    monkeypatch.delenv("COMPRESS_NO_CACHE", raising=False)
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session", autouse=True)
def every_report_matches_its_schema(tmp_path_factory):
    """After the whole session: every report.json a run wrote (under pytest's temp folders)
    validates against `compress schema --report`. Hand-made reports (no provenance) and those
    of another major version (the refusal tests) are not runs' and are left out."""
    yield
    import json

    import jsonschema

    from compress.report.model import SCHEMA_VERSION, major_version, report_schema

    validator = jsonschema.Draft202012Validator(report_schema())
    problems = []
    for path in tmp_path_factory.getbasetemp().rglob("report.json"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):  # the hostile-file tests' own
            continue
        if not isinstance(report, dict) or "provenance" not in report:
            continue
        if major_version(report.get("schema_version")) != SCHEMA_VERSION:
            continue
        problems += [f"{path}: {error.message}" for error in validator.iter_errors(report)]
    assert not problems, "\n".join(problems[:20])


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny model folders written by save_pretrained (tests/hf_folders.py), made once for the
    session: tests read them and copy one to break it."""
    from tests.hf_folders import write_folders

    return write_folders(tmp_path_factory.mktemp("hf_folders"))


@pytest.fixture
def cnn_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, CNN_CONFIG)


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished runs of the CNN (static int8; dynamic int8 set from the command line), for
    the tests that render, compare and re-read reports. Their output folders, in that order."""
    folder = tmp_path_factory.mktemp("two_runs")
    config = write_config(folder, CNN_CONFIG + "gates: {min_size_ratio: 3, max_size_mb: 0.01}\n")
    outs = (folder / "static", folder / "dynamic")
    dynamic = ("--set", "passes=[{type: quantize.dynamic}]")
    for out, extra in zip(outs, ((), dynamic), strict=True):
        result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, *extra)
        assert result.exit_code == 3, result.stderr  # max_size_mb fails: a failed gate to show
    return outs


@pytest.fixture(scope="session")
def chromium():
    from tests.browser import Chromium, chromium_or_skip

    browser = Chromium(chromium_or_skip())
    yield browser
    browser.close()


def fixed_latency(p50: dict[str, float], batch_sizes: list[int], state: str = "quiet"):
    """A latency measurement with each model's timings fixed by the test (every run and round
    at its p50), on a machine in `state`."""
    from compress.measure.interference import MachineLoad
    from compress.measure.latency import ROUNDS, BatchTimings, Latency

    others = 0.0 if state == "quiet" else 1.0
    machine = MachineLoad(
        state=state, other_cpu_cores=others, preemptions_per_s=0.0, load_1m=None, seconds=1.0
    )
    return Latency(
        {
            batch: BatchTimings(
                batch,
                {name: [ms] * ROUNDS for name, ms in p50.items()},
                {name: [ms] * ROUNDS for name, ms in p50.items()},
                True,
                machine,
            )
            for batch in batch_sizes
        }
    )


def slower_after_the_first_stage(paths, samples, settings, carried=None, anchor=None):
    """Latencies fixed by the test: every stage after the first (a pass's output) twice as slow
    (measure_latency's signature; nothing is carried with the cache off)."""
    p50 = {name: 1.0 if i == 0 else 2.0 for i, name in enumerate(paths)}
    return fixed_latency(p50, settings.batch_sizes)
