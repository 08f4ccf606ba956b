"""`compress sweep`: the grid from --vary, checked before any work; the Pareto fronts and the
best variant; the outputs, exit codes and --resume of a real sweep on the digits CNN."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compress.batch import warm
from compress.errors import ConfigError
from compress.sweep.grid import grid, split_values
from compress.sweep.pareto import Point, best, front
from tests.helpers.batch import fewer_samples, misbehaving_model
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import ROOT, SAMPLES

VARY = "passes[0].per_channel=true,false"

POINTS = [
    Point("fast", p50_ms=1.0, size_bytes=900, metric=0.90, passed=True),
    Point("accurate", p50_ms=3.0, size_bytes=500, metric=0.99, passed=True),
    Point("middle", p50_ms=2.0, size_bytes=700, metric=0.95, passed=False),
    Point("worse", p50_ms=2.5, size_bytes=950, metric=0.94, passed=True),  # middle beats it
    Point("tied", p50_ms=1.02, size_bytes=400, metric=0.90, passed=True),  # fast within 3%
]


def test_the_fronts_hold_the_variants_no_other_beats_on_both_axes():
    assert front(POINTS, "p50_ms") == ["fast", "accurate", "middle"]  # tied: fast beats it
    assert front(POINTS, "size_bytes") == ["accurate", "tied"]
    assert front([Point("a", 1.0, 1, None, True), Point("b", 2.0, 1, None, True)], "p50_ms") == [
        "a"
    ]


def test_the_best_variant_passes_its_gates_by_the_objective():
    assert best(POINTS) == "tied"  # within 3% of the fastest, and smaller
    assert best(POINTS, "size") == "tied"
    assert best(POINTS, "accuracy") == "accurate"
    assert best([p for p in POINTS if p.name == "middle"]) is None  # failed its gates


def test_vary_values_split_outside_brackets_and_earlier_passes_vary_fastest():
    assert split_values("[32,1],[8], 'a,b'") == ["[32,1]", "[8]", "'a,b'"]
    variants = grid(["passes[1].per_channel=true,false", "passes[0].amount=0.3,0.5"])
    assert [v.settings[1][1] for v in variants] == ["0.3", "0.5", "0.3", "0.5"]
    assert variants[0].overrides == ["passes[1].per_channel=true", "passes[0].amount=0.3"]
    for bad in (["passes[0].amount"], ["passes[0].amount=0.3,,0.5"], ["x=1", "x=2"], []):
        with pytest.raises(ConfigError):
            grid(bad)


def sweep(config, out, *args: str):
    return invoke("sweep", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, *args)


@pytest.mark.parametrize(
    ("vary", "needle"),
    [
        ("passes[0].per_chanel=true,false", "per_chanel"),
        ("passes[0].calibration=minmax,sometimes", "sometimes"),
        ("passes[3].per_channel=true", "passes[3]"),
        ("passes[0].per_channel=[1,", "--vary passes[0].per_channel=[1,: not valid YAML"),
        ("report.min_runs=" + ",".join(map(str, range(5, 106))), "101 variants"),
        ("data.eval.path=missing.npz", "missing.npz"),
    ],
)
def test_a_bad_vary_is_refused_before_any_work(tmp_path, vary, needle):
    result = sweep(write_config(tmp_path, CNN_CONFIG), tmp_path / "o", "--vary", vary)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error: --vary") and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_a_sweep_writes_every_variant_the_fronts_and_the_best(tmp_path, stage_cache):
    config = write_config(tmp_path, CNN_CONFIG)
    out = tmp_path / "o"
    result = sweep(config, out, "--vary", "passes[0].per_channel=true,false", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "sweep.json").read_text())
    rows = {row["name"]: row for row in summary["variants"]}
    assert {r["settings"]["passes[0].per_channel"] for r in rows.values()} == {"true", "false"}
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in rows.values())
    chosen = summary["best"]
    assert chosen in rows and "latency" in rows[chosen]["front"]
    best_model = out / "variants" / chosen / "model.onnx"
    assert (out / "model.onnx").read_bytes() == best_model.read_bytes()
    report = json.loads((out / "report.json").read_text())
    per_channel = rows[chosen]["settings"]["passes[0].per_channel"]
    assert report["provenance"]["config_overrides"] == f"passes[0].per_channel={per_channel}"
    html = (out / "sweep.html").read_text()
    assert 'data-chart="pareto-latency"' in html and 'data-chart="pareto-size"' in html
    assert f"Best: **{chosen}**" in (out / "sweep.md").read_text()
    second = json.loads((out / "variants" / "v02" / "report.json").read_text())
    assert second["stages"][0].get("from_cache") is True  # the baseline was computed once

    # a sweep killed after its first variant resumes with the second alone
    (out / "variants" / "v02" / "done.json").unlink()
    resumed = sweep(config, out, "--vary", "passes[0].per_channel=true,false", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    again = {row["name"]: row["reused"] for row in json.loads(resumed.stdout)["variants"]}
    assert again == {"v01": True, "v02": False}

    # a resume refused (a link where a variant's folder should be) leaves OUT as it was
    (out / "variants" / "v02").rename(tmp_path / "v02")
    (out / "variants" / "v02").symlink_to(tmp_path / "v02")
    before = snapshot(out)
    refused = sweep(config, out, "--vary", "passes[0].per_channel=true,false", "--resume")
    assert_refused(refused, tmp_path / "nothing", "v02 is a link or a file")
    assert snapshot(out) == before
    (out / "variants" / "v02").unlink()
    (tmp_path / "v02").rename(out / "variants" / "v02")

    # other data, and a link planted in a finished variant: both are run again, and the link
    # is never copied (or followed)
    fewer_samples(tmp_path / "digits_eval.npz")
    private = tmp_path / "private.onnx"
    private.write_bytes(b"not for the sweep")
    private.chmod(0o600)
    (out / "variants" / "v01" / "model.onnx").unlink()
    (out / "variants" / "v01" / "model.onnx").symlink_to(private)
    rerun = sweep(config, out, "--vary", "passes[0].per_channel=true,false", "--resume", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    assert not any(row["reused"] for row in json.loads(rerun.stdout)["variants"])
    assert not (out / "model.onnx").is_symlink()
    assert (out / "model.onnx").read_bytes() != private.read_bytes()


def snapshot(folder):
    """Every entry under `folder` with its kind and bytes (links as their target)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = ("link", str(path.readlink()))
        elif path.is_file():
            found[str(path)] = ("file", path.read_bytes())
    return found


def test_exit_3_when_no_variant_passes_and_1_when_every_one_failed(tmp_path):
    gated = write_config(tmp_path, CNN_CONFIG + "gates: {min_size_ratio: 100}\n")
    result = sweep(gated, tmp_path / "gated", "--vary", "passes[0].per_channel=true")
    assert result.exit_code == 3, result.stderr
    summary = json.loads((tmp_path / "gated" / "sweep.json").read_text())
    assert summary["best"] is None and not (tmp_path / "gated" / "model.onnx").exists()
    assert summary["variants"][0]["failed_gates"] == ["min_size_ratio"]
    failed = sweep(
        gated, tmp_path / "failed", "--vary", "passes[0].per_channel=true,false",
        "--timeout-per-variant", "0.5",
    )  # fmt: skip
    assert failed.exit_code == 1, failed.stderr
    rows = json.loads((tmp_path / "failed" / "sweep.json").read_text())["variants"]
    assert {row["status"] for row in rows} == {"timed_out"}


def test_a_model_that_does_not_fit_is_refused_before_any_variant(tmp_path):
    config = write_config(tmp_path, CNN_CONFIG)
    corrupt = tmp_path / "cut.pt2"
    corrupt.write_bytes((SAMPLES / "digits_cnn.pt2").read_bytes()[:3000])
    out = tmp_path / "o"
    result = invoke("sweep", corrupt, "-c", config, "-o", out, "--vary", VARY)
    assert_refused(result, out, "truncated or corrupt")
    crash = misbehaving_model(tmp_path, "crash.pt", "segfault")  # loading it kills the check
    result = invoke("sweep", crash, "-c", config, "-o", out, "--vary", VARY, "--trust-pickle")
    assert_refused(result, out, "cannot check", "died from SIGSEGV")


CHECK_ONLY = """
import sys
from pathlib import Path
from compress.sweep.runner import SweepOptions, check_sweep
options = SweepOptions(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), [sys.argv[4]])
print(len(check_sweep(options)), "torch" in sys.modules)
"""


@pytest.mark.skipif(not warm.available(), reason="the check runs in the sweep's process there")
def test_the_sweeps_own_process_checks_the_model_without_importing_torch(tmp_path):
    config = write_config(tmp_path, CNN_CONFIG)
    model, out = SAMPLES / "digits_cnn.pt2", tmp_path / "o"
    command = [sys.executable, "-c", CHECK_ONLY, model, config, out, VARY]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]  # two variants; torch loaded in the child only


def test_a_sweep_runs_its_variants_as_tasks_on_a_local_ray_runtime(tmp_path, stage_cache):
    """Ray's workers share the stage cache as local ones do: the baseline is computed once. An
    ONNX model: Ray's own start is most of the time, its jobs need not import torch too."""
    config = write_config(tmp_path, CNN_CONFIG)
    out = tmp_path / "o"
    model = small_onnx(tmp_path / "in.onnx")
    command = [sys.executable, "-m", "compress_cli", "sweep", str(model)]
    command += ["-c", str(config), "-o", str(out), "--vary", VARY, "--executor", "ray", "-j", "2"]
    command += ["--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["executor"] == "ray" and summary["jobs"] == 2
    assert [row["status"] for row in summary["variants"]] == ["ok", "ok"]
    assert (out / "model.onnx").read_bytes() == (
        out / "variants" / summary["best"] / "model.onnx"
    ).read_bytes()
    reports = [
        json.loads((out / "variants" / v / "report.json").read_text()) for v in ("v01", "v02")
    ]
    baselines = [report["stages"][0] for report in reports]
    assert sum(bool(stage.get("from_cache")) for stage in baselines) == 1
