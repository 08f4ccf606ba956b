"""The stage cache: keys that change with everything a stage depends on and with nothing after
it, entries that are verified when read and rebuilt when damaged, writers that do not corrupt it,
and runs that write the same model with it as without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compress.measure.interference import MachineLoad
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.hf_folders import sentences
from tests.helpers.paths import SAMPLES

TWO_PASSES = CNN_CONFIG.replace(
    "passes:\n",
    "passes:\n  - {type: prune.channels, amount: 0.25, finetune_epochs: 0}\n",
)


def run(config: Path, out: Path, *options: str):
    return invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, "--json", *options)


def test_a_run_reuses_the_stages_it_shares_and_writes_the_same_model(tmp_path, stage_cache):
    config = write_config(tmp_path, TWO_PASSES)
    plain = run(config, tmp_path / "plain", "--no-cache")
    assert plain.exit_code == 0, plain.stderr
    assert not stage_cache.exists() or not list(stage_cache.rglob("model.onnx"))
    cold, warm = run(config, tmp_path / "cold"), run(config, tmp_path / "warm")
    assert cold.exit_code == 0 and warm.exit_code == 0, cold.stderr + warm.stderr
    assert "reused from the stage cache" not in cold.stderr
    assert warm.stderr.count("reused from the stage cache") == 3
    models = {(tmp_path / name / "model.onnx").read_bytes() for name in ("plain", "cold", "warm")}
    assert len(models) == 1  # byte-identical with and without the cache
    report = (tmp_path / "warm" / "report.json").read_text()
    assert report.count('"from_cache": true') == 3
    assert "evaluating top1" not in warm.stderr  # the metric of every stage came with it
    figures = [
        [(s["size_bytes"], s["macs"], s["metric"]) for s in json.loads(r)["stages"]]
        for r in (report, (tmp_path / "cold" / "report.json").read_text())
    ]
    assert figures[0] == figures[1]
    assert "quantize.static (cached)" in (tmp_path / "warm" / "report.md").read_text()
    changed = run(config, tmp_path / "changed", "--set", "passes[1].per_channel=false")
    assert changed.stderr.count("reused from the stage cache") == 2  # baseline and prune
    assert "pass 1: quantize.static" in changed.stderr


def test_a_damaged_cached_stage_is_rebuilt_in_a_run(tmp_path, stage_cache):
    config = write_config(tmp_path, CNN_CONFIG)
    assert run(config, tmp_path / "first").exit_code == 0
    for model in stage_cache.rglob("model.onnx"):
        model.write_bytes(model.read_bytes()[:-10])  # truncated
    again = run(config, tmp_path / "again")
    assert again.exit_code == 0, again.stderr
    assert "reused from the stage cache" not in again.stderr
    first, second = (tmp_path / n / "model.onnx" for n in ("first", "again"))
    assert first.read_bytes() == second.read_bytes()


def test_an_edited_entry_json_is_a_miss_not_a_crash(tmp_path, stage_cache):
    """An entry.json that compress did not write as it is (hand-edited, or another version's)
    makes the stage be computed again."""
    config = write_config(tmp_path, CNN_CONFIG)
    assert run(config, tmp_path / "first").exit_code == 0
    for entry in stage_cache.rglob("entry.json"):
        meta = json.loads(entry.read_text())
        entry.write_text(json.dumps(meta | {"name": ["not", "a", "name"]}))
    again = run(config, tmp_path / "again")
    assert again.exit_code == 0, again.stderr
    assert "reused from the stage cache" not in again.stderr
    third = run(config, tmp_path / "third")  # the edited entries were replaced by good ones
    assert third.stderr.count("reused from the stage cache") == 2


class QuietWatch:
    """CpuWatch on a machine found quiet: a test's timings are worth carrying whatever else the
    machine runs (a timing taken while it is busy is never carried)."""

    load = MachineLoad(
        state="quiet", other_cpu_cores=0.0, preemptions_per_s=0.0, load_1m=None, seconds=1.0
    )

    def __enter__(self) -> QuietWatch:
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_a_rerun_carries_the_latency_of_reused_stages_and_times_the_baseline_again(
    tmp_path, stage_cache, monkeypatch
):
    monkeypatch.setattr("compress.measure.latency.CpuWatch", QuietWatch)
    # timing is what this test checks: the default time budget, so that every stage settles
    settles = TWO_PASSES.replace("max_seconds: 0.2, ", "").replace(
        "warmup_runs: 1}", "warmup_runs: 1, stable_within: 0.9}"
    )
    config = write_config(tmp_path, settles)
    assert run(config, tmp_path / "cold").exit_code == 0
    changed = run(config, tmp_path / "changed", "--set", "passes[1].per_channel=false")
    assert changed.exit_code == 0, changed.stderr
    assert "measuring latency of baseline, quantize.static\n" in changed.stderr
    assert "latency of prune.channels: as timed in an earlier run on this machine" in changed.stderr
    cold, warm = (
        json.loads((tmp_path / n / "report.json").read_text()) for n in ("cold", "changed")
    )
    assert [s.get("latency_from_cache") for s in warm["stages"]] == [None, True, None]
    assert warm["stages"][1]["latency_ms"] == cold["stages"][1]["latency_ms"]  # as timed then
    paired = warm["stages"][2]["vs_input"]["8"]  # against the carried stage: through the baseline
    assert paired["ci"][0] <= paired["speedup"] <= paired["ci"][1] and paired["ci"][1] < 1e6
    base, final = (warm["stages"][i]["latency_ms"]["8"]["p50"] for i in (0, 2))
    assert abs(warm["summary"]["speedup"] - base / final) < 1e-3  # both timed in this run

    monkeypatch.setattr(  # another machine's timing is never carried
        "compress.job.stage_reuse.machine_fingerprint", lambda: {"host": "another"}
    )
    moved = run(config, tmp_path / "moved", "--set", "passes[1].per_channel=false")
    assert moved.exit_code == 0, moved.stderr
    assert "measuring latency of baseline, prune.channels, quantize.static" in moved.stderr
    assert "latency_from_cache" not in (tmp_path / "moved" / "report.json").read_text()


NO_TORCH = """\
import sys
from compress_cli.main import app
try:
    app(sys.argv[1:], prog_name="compress")
except SystemExit as e:
    print(f"exit {e.code}")
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def test_a_rerun_whose_torch_stages_are_all_cached_never_loads_the_model(tmp_path, stage_cache):
    """No torch import, no model load: a changed int8 setting after a cached prune reads the
    model's facts and the pre-processed stage from the cache."""
    config = write_config(tmp_path, TWO_PASSES)
    assert run(config, tmp_path / "cold").exit_code == 0
    command = [sys.executable, "-c", NO_TORCH, "run", str(SAMPLES / "digits_cnn.pt2"), "-c"]
    command += [str(config), "-o", str(tmp_path / "again"), "--set", "passes[1].per_channel=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.stdout.splitlines()[-2:] == ["exit 0", "torch not imported"], done.stderr[-2000:]
    assert "the model is not loaded" in done.stderr
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    assert report["provenance"]["source_format"] == "exported_program"
    assert report["environment"]["torch"]  # its version, from the package's metadata
    changed = json.loads((tmp_path / "cold" / "report.json").read_text())
    assert report["provenance"]["model_sha256"] == changed["provenance"]["model_sha256"]


def test_a_rerun_without_the_model_still_checks_what_the_report_settings_ask_of_it(
    tmp_path, stage_cache
):
    """The baseline's entry keeps the model's outputs, not the report settings: a rerun that
    names another report.output, or times generation, is checked against them (and the cached
    baseline's graph) as a loaded model would be."""
    config = write_config(tmp_path, TWO_PASSES)
    assert run(config, tmp_path / "cold").exit_code == 0
    again = run(config, tmp_path / "again", "--set", "report.output=probabilities")
    assert again.exit_code == 2 and "report.output" in again.stderr, again.stderr
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())
    timed = run(config, tmp_path / "timed", "--set", "report.generation={prompt_tokens: 4}")
    assert timed.exit_code == 2 and "takes no key/value cache" in timed.stderr, timed.stderr


def test_a_rerun_carries_the_generation_of_reused_stages_through_the_baseline(
    hf_folders, tmp_path, stage_cache, monkeypatch
):
    """A decoder's generation, the slowest of its figures, is timed once per stage: a rerun
    times the baseline again and compares the reused stage's decode speed through it."""
    monkeypatch.setattr("compress.measure.generation.CpuWatch", QuietWatch)
    (tmp_path / "t.txt").write_text("\n".join(sentences(6)) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n  calibration: {path: t.txt, max_length: 16}\n"
        "passes: [{type: quantize.dynamic}]\n"
        "report: {batch_sizes: [1], min_runs: 5, min_seconds: 0, max_seconds: 0.2, "
        "stable_within: 0.9, generation: {prompt_tokens: 8, new_tokens: 6, min_rounds: 3, "
        "peak_memory: false}}\n"
    )
    runs = {}
    for name in ("cold", "warm"):
        out = tmp_path / name
        result = invoke("run", hf_folders["llama"], "-c", config, "-o", out, "--json")
        assert result.exit_code == 0, result.stderr
        runs[name] = (result.stderr, json.loads((out / "report.json").read_text()))
    stderr, warm = runs["warm"]
    assert "new tokens) of baseline\n" in stderr
    assert "generation of quantize.dynamic: as timed in an earlier run on this machine" in stderr
    cold = runs["cold"][1]
    then, now = (run["stages"][1]["generation"]["1"] for run in (cold, warm))
    assert now.pop("from_cache") is True and then.get("from_cache") is None
    assert now | {"decode_vs_baseline": None} == then | {"decode_vs_baseline": None}  # as timed
    notes = (tmp_path / "warm" / "report.md").read_text()
    assert "quantize.dynamic: generation as timed in an earlier run on this machine" in notes
    base = warm["stages"][0]["generation"]["1"]
    assert base["rounds"] >= 3 and base != cold["stages"][0]["generation"]["1"]  # timed again
    paired = warm["stages"][1]["generation"]["1"]["decode_vs_baseline"]
    assert paired["ci"][0] <= paired["speedup"] <= paired["ci"][1] < 1e6
    earlier = cold["stages"][1]["generation"]["1"]["decode_vs_baseline"]["speedup"]
    assert paired["speedup"] == pytest.approx(earlier, rel=1e-3)  # its speed against the anchor
