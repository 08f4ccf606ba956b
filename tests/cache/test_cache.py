"""The stage cache: keys that change with everything a stage depends on and with nothing after
it, entries that are verified when read and rebuilt when damaged, writers that do not corrupt it,
and runs that write the same model with it as without it."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

from compress.cache.keys import stage_keys
from compress.cache.store import StageCache
from compress.config import load_config
from compress.measure.interference import MachineLoad
from tests.conftest import CNN_CONFIG, SAMPLES, invoke, write_config

TWO_PASSES = CNN_CONFIG.replace(
    "passes:\n",
    "passes:\n  - {type: prune.channels, amount: 0.25, finetune_epochs: 0}\n",
)


def keys_of(folder: Path, text: str, model: Path = SAMPLES / "digits_cnn.pt2") -> list[str]:
    folder.mkdir(exist_ok=True)
    config = load_config(write_config(folder, text))
    return stage_keys(model, config, list(range(len(config.passes))))


def test_a_stage_key_changes_with_what_the_stage_depends_on_and_not_with_later_passes(
    tmp_path, monkeypatch
):
    base = keys_of(tmp_path / "a", TWO_PASSES)
    assert len(base) == 3 and len(set(base)) == 3
    later = keys_of(tmp_path / "b", TWO_PASSES.replace("per_channel: true", "per_channel: false"))
    assert later[:2] == base[:2] and later[2] != base[2]  # a later pass's param: only its stage
    earlier = keys_of(tmp_path / "c", TWO_PASSES.replace("amount: 0.25", "amount: 0.5"))
    assert earlier[0] == base[0] and earlier[1:] != base[1:] and earlier[2] != base[2]
    seed = keys_of(tmp_path / "d", "seed: 7\n" + TWO_PASSES)
    assert all(a != b for a, b in zip(seed, base, strict=True))
    model = tmp_path / "other.pt2"
    model.write_bytes((SAMPLES / "digits_cnn.pt2").read_bytes() + b"\0")
    assert all(
        a != b for a, b in zip(keys_of(tmp_path / "e", TWO_PASSES, model), base, strict=True)
    )
    data = tmp_path / "f"
    keys_of(data, TWO_PASSES)
    with open(data / "digits_eval.npz", "ab") as f:  # the same config, other data bytes
        f.write(b"\0")
    changed = stage_keys(SAMPLES / "digits_cnn.pt2", load_config(data / "config.yaml"), [0, 1])
    assert all(a != b for a, b in zip(changed, base, strict=True))
    monkeypatch.setattr("compress.cache.keys.code_fingerprint", lambda: "onnxruntime 99")
    assert all(a != b for a, b in zip(keys_of(tmp_path / "g", TWO_PASSES), base, strict=True))


def entry(folder: Path, key: str, content: bytes) -> StageCache:
    cache = StageCache(folder)
    source = folder.parent / f"{key}.onnx"
    source.write_bytes(content)
    cache.put(key, source, {"name": "baseline", "reverted": False})
    return cache


def test_a_damaged_entry_is_dropped_never_used(tmp_path):
    cache = entry(tmp_path / "cache", "abc", b"model bytes")
    assert cache.get("abc", tmp_path / "out.onnx").path.read_bytes() == b"model bytes"
    (tmp_path / "cache" / "stages" / "abc" / "model.onnx").write_bytes(b"model bytez")
    assert cache.get("abc", tmp_path / "out2.onnx") is None
    assert not (tmp_path / "out2.onnx").exists() and not cache.has("abc")
    cache = entry(tmp_path / "cache", "abc", b"model bytes")
    (tmp_path / "cache" / "stages" / "abc" / "entry.json").write_text('{"format": 1, "key"')
    assert cache.get("abc", tmp_path / "out3.onnx") is None and not cache.has("abc")


def test_the_least_recently_used_entries_go_first(tmp_path):
    cache = StageCache(tmp_path / "cache", max_bytes=7_000)  # room for two
    for index, key in enumerate(("old", "used", "other")):
        entry(tmp_path / "cache", key, bytes(3000))
        os.utime(tmp_path / "cache" / "stages" / key / "entry.json", (index, index))
    cache.get("used", tmp_path / "read.onnx")  # now the most recent
    entry(tmp_path / "cache", "new", bytes(3000))
    cache.evict()
    assert [cache.has(k) for k in ("old", "used", "other", "new")] == [False, True, False, True]


def _write_and_read(folder: str, number: int) -> bool:
    """One of several processes storing the same key and reading it back."""
    cache = StageCache(Path(folder))
    source = Path(folder).parent / f"source{number}.onnx"
    source.write_bytes(b"the same stage" * 10_000)
    for attempt in range(20):
        cache.put("shared", source, {"name": "baseline", "writer": number})
        hit = cache.get("shared", Path(folder).parent / f"read{number}-{attempt}.onnx")
        if hit is None or hit.path.read_bytes() != source.read_bytes():
            return False
    return True


def test_processes_writing_the_same_stage_do_not_corrupt_the_cache(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_write_and_read, [(str(tmp_path / "cache"), n) for n in range(4)])
    assert all(results)
    assert [p.name for p in (tmp_path / "cache" / "stages").iterdir()] == ["shared"]
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # no half-written entry left


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


def test_cache_info_and_clear(tmp_path, stage_cache):
    entry(stage_cache, "abc", bytes(2000))
    info = invoke("cache", "info", "--json")
    assert info.exit_code == 0 and '"entries": 1' in info.stdout
    cleared = invoke("cache", "clear")
    assert cleared.exit_code == 0 and "removed 1 stage(s)" in cleared.stdout
    assert not StageCache(stage_cache).has("abc")


def test_a_cache_dir_that_cannot_be_one_is_refused_in_one_line(tmp_path, stage_cache):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    result = run(write_config(tmp_path, CNN_CONFIG), tmp_path / "o", "--cache-dir", afile)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --cache-dir") and "not a folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    shutil.rmtree(stage_cache, ignore_errors=True)


def test_an_edited_entry_json_is_a_miss_not_a_crash(tmp_path, stage_cache):
    """entry.json is checked like any input: one whose fields are not what this version wrote
    (hand-edited, or another version's) makes the stage be computed again."""
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
    settles = TWO_PASSES.replace("warmup_runs: 1}", "warmup_runs: 1, stable_within: 0.9}")
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


def test_model_facts_that_do_not_fit_their_baseline_load_the_model(tmp_path, stage_cache):
    """entry.json is not under the entry's hash: facts edited to name another output are not
    believed, and the run loads and checks the model as without a cache."""
    config = write_config(tmp_path, TWO_PASSES)
    assert run(config, tmp_path / "cold").exit_code == 0
    for entry in stage_cache.rglob("entry.json"):
        meta = json.loads(entry.read_text())
        if "model" in meta:
            meta["model"]["judged_output"] = 7
            entry.write_text(json.dumps(meta))
    again = run(config, tmp_path / "again", "--set", "passes[1].per_channel=false")
    assert again.exit_code == 0, again.stderr
    assert "the model is not loaded" not in again.stderr
    assert "stage 0 (baseline): reused from the stage cache" in again.stderr
