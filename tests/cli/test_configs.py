"""Every recipe in configs/ runs on the model its header names, meets its non-timing gates, and
writes the very model.onnx it wrote before (a change of code that changes a model shows here)."""

import hashlib
import json
import os
import platform
import re
from importlib.metadata import version

import pytest

from compress.measure.environment import cpu_flags
from compress.measure.latency import SPEED_TOLERANCE
from tests.helpers.cli import invoke
from tests.helpers.paths import CONFIGS, ROOT

RECIPES = sorted(CONFIGS.glob("*.yaml"))


def model_for(config):
    found = re.search(
        r"compress run (\S+) -c configs/" + re.escape(config.name), config.read_text()
    )
    assert found, f"{config.name} must say how it is run: '# compress run MODEL -c configs/...'"
    return ROOT / found.group(1)


def test_there_are_recipes():
    assert {"int8-static.yaml", "int8-dynamic.yaml"} <= {c.name for c in RECIPES}


_reports = {}


# Latency here only has to be measured, not precise (the benchmark checks speed): every stage is
# timed for its minimum runs rather than seconds per batch size. quantize.auto's recipes
# keep most of the recipe's timing: their choice of candidate rests on it. At most 0.2 s per
# batch size: under make test the other worker keeps the machine busy, so medians never settle
# and each batch size would take report.max_seconds' 5 s. Only these --set: the overrides are in
# model.onnx's provenance, which tests/golden holds byte for byte.
BRIEF_TIMING = ("--set", "report.min_seconds=0", "--set", "report.max_seconds=0.2")
# quantize.auto's recipes: the recipe's timing, but at most 1 s per batch size rather than 5: they
# run alone (make test's serial part), where medians settle well within it.
AUTO_TIMING = ("--set", "report.max_seconds=1")


def recipe_report(config, tmp_path_factory):
    """Run a recipe once per test session; later tests read the same report."""
    if config.name not in _reports:
        out = tmp_path_factory.mktemp(config.stem) / "out"
        timing = AUTO_TIMING if "quantize.auto" in config.read_text() else BRIEF_TIMING
        arguments = ("-c", config, "-o", out, "--json", "--quiet", *timing)
        result = invoke("run", model_for(config), *arguments)
        _reports[config.name] = (result, out)
    return _reports[config.name]


def timed(config):
    """quantize.auto's recipes run in make test's serial part: what they keep rests on timing,
    which a second test worker's load would make busy throughout."""
    if "quantize.auto" in config.read_text():
        return pytest.param(config, marks=pytest.mark.serial)
    return config


def timing_gates(report) -> set[str]:
    """The gates whose outcome rests on the machine: the speedup, and the size ratio where
    quantize.auto kept its input because the machine stayed busy (it never picks by size
    alone, which could keep a slower model)."""
    autos = [s["details"] for s in report["stages"] if s["name"] == "quantize.auto"]
    kept_busy = any(a.get("chosen") is None and a["timing"]["machine"] == "busy" for a in autos)
    return {"min_speedup", "min_size_ratio"} if kept_busy else {"min_speedup"}


@pytest.mark.parametrize("config", [timed(c) for c in RECIPES], ids=lambda c: c.stem)
def test_recipe_runs(tmp_path_factory, config):
    result, out = recipe_report(config, tmp_path_factory)
    report = json.loads(result.stdout)  # stdout holds nothing but the report
    assert result.exit_code in (0, 3), result.stderr
    failed = {g["name"] for g in report["gates"] if not g["passed"]}
    # Timing gates depend on the machine; the benchmark checks speed, tests check the rest.
    assert not failed - timing_gates(report), report["gates"]
    assert sorted(p.name for p in out.iterdir()) == [
        "model.onnx",
        "report.html",
        "report.json",
        "report.md",
    ]
    assert json.loads((out / "report.json").read_text()) == report


# sha256 of each recipe's model.onnx, the libraries that made them, and the CPU they were made on.
# quantize.auto's recipes are left out: which candidate they keep rests on timing. The same code
# and libraries write other bytes on a CPU whose float kernels differ (torch's, oneDNN's and
# MKL's pick their code by instruction set: fine-tuning, calibration and the export's folding
# round differently), so each kind of CPU has its own models, and one not recorded skips. After a
# change meant to change a model, or on a new kind of CPU: COMPRESS_WRITE_GOLDEN=1 pytest
# tests/cli/test_configs.py -k same_model, and say why in the commit.
GOLDEN = ROOT / "tests" / "golden" / "recipe_models.json"
MODEL_LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "torch-pruning", "numpy")
# The instruction sets the float kernels choose by (x86; Arm's: NEON, SVE, the bf16 dot product).
KERNEL_FLAGS = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16",
)  # fmt: skip
UNTIMED = [c for c in RECIPES if "quantize.auto" not in c.read_text()]


def cpu_kind() -> str:
    """The golden models' key for this CPU: its kernel instruction sets and architecture."""
    return " ".join([platform.machine(), *cpu_flags(KERNEL_FLAGS)])


def read_golden(libraries: dict[str, str]) -> dict:
    """The golden file; models made with other libraries are dropped (not comparable)."""
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if golden.get("made_with") != libraries:
        return {"made_with": libraries, "cpus": {}, "stale": golden.get("made_with")}
    return golden


@pytest.mark.parametrize("config", UNTIMED, ids=lambda c: c.stem)
def test_a_recipe_writes_the_same_model_as_before(tmp_path_factory, config):
    _, out = recipe_report(config, tmp_path_factory)
    digest = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    golden = read_golden({name: version(name) for name in MODEL_LIBRARIES})
    models = golden["cpus"].setdefault(cpu_kind(), {})
    if os.environ.get("COMPRESS_WRITE_GOLDEN"):
        models[config.name] = digest
        golden.pop("stale", None)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    if golden.get("stale"):
        pytest.skip(f"the golden models were made with {golden['stale']}: not comparable")
    if config.name not in models:
        pytest.skip(
            f"no golden model for {config.name} on a CPU with {cpu_kind()} (recorded: "
            f"{'; '.join(golden['cpus']) or 'none'}): its float kernels may round differently"
        )
    assert models[config.name] == digest, "the recipe's model.onnx changed"


@pytest.mark.serial  # with the recipes' own runs (timed)
@pytest.mark.parametrize("config", ["auto-int8.yaml", "auto-int8-text.yaml"])
def test_auto_never_keeps_a_candidate_slower_than_its_input(tmp_path_factory, config):
    result, _ = recipe_report(CONFIGS / config, tmp_path_factory)
    stage = json.loads(result.stdout)["stages"][-1]
    details = stage["details"]
    assert {c["name"] for c in details["candidates"]} >= {"static-per-channel"}
    assert all(c["verdict"] for c in details["candidates"])  # each says why it was (not) kept
    # the node ranking shown: one a candidate's fallback measured, else static per-channel's
    ranked = details["sensitivity"]
    assert ranked["nodes"] and ranked["candidate"] in {c["name"] for c in details["candidates"]}
    chosen = [c for c in details["candidates"] if c["verdict"] == "chosen"]
    # the last stage is the written model.onnx, measured with its provenance metadata (< 1 KB)
    if details.get("chosen") is None:  # left out of the JSON when None
        assert not chosen and 0 <= stage["size_bytes"] - details["input"]["size_bytes"] < 1024
    else:
        [pick] = chosen
        assert pick["name"] == details["chosen"]
        assert 0 <= stage["size_bytes"] - pick["size_bytes"] < 1024
        # faster, or as fast within noise and smaller (compress.quant.auto_choice)
        assert pick["p50_ms"] <= details["input"]["p50_ms"] * SPEED_TOLERANCE
        assert pick["size_bytes"] < details["input"]["size_bytes"]
        assert pick["drop"] <= details["accuracy_budget"]


def test_static_int8_on_the_transformer_keeps_the_softmax_path_in_float(tmp_path_factory):
    result, out = recipe_report(CONFIGS / "int8-static-text.yaml", tmp_path_factory)
    stage = json.loads(result.stdout)["stages"][-1]
    details = stage["details"]
    # the mask (-1e4) and the scores would share one int8 scale (cosine 0.04): the pass keeps
    # the mask path in float from the start, so the first attempt already meets the budget
    assert details["attempts"][0]["drop"] <= 0.01
    assert details["budget_met"] and stage["metric"]["value"] >= 0.99
    mask_path = details["mask_float_nodes"]
    assert 0 < len(mask_path) <= 8
    assert sum(name.endswith("Softmax") for name in mask_path) == 2  # one per layer
    assert "on the mask path kept in float" in (out / "report.md").read_text()


def test_demo_recipe_prunes_distills_and_quantizes_within_half_a_point(tmp_path_factory):
    demo = re.search(r"-c (configs/\S+)", (ROOT / "Makefile").read_text().split("demo:")[1])
    assert demo and demo.group(1) == "configs/digits-prune-distill-int8.yaml"
    result, _ = recipe_report(CONFIGS / "digits-prune-distill-int8.yaml", tmp_path_factory)
    report = json.loads(result.stdout)
    names = [s["name"] for s in report["stages"]]
    assert names == ["baseline", "prune.channels", "distill", "quantize.static"]
    top1 = [s["metric"]["value"] for s in report["stages"]]
    assert top1[1] < top1[0] - 0.2  # pruning alone costs accuracy ...
    assert top1[0] - top1[3] <= 0.005  # ... which distillation wins back, through int8 too
    assert report["summary"]["size_ratio"] >= 10
    assert report["stages"][0]["macs"] / report["stages"][3]["macs"] > 3.5
    distill = report["stages"][2]["details"]
    assert distill["metric"]["on"] == "data.validation" and distill["epochs_run"] >= 1


def test_transformer_student_is_smaller_and_runs(tmp_path_factory):
    import numpy as np

    from compress.measure.runtime import open_session

    result, out = recipe_report(CONFIGS / "text-distill-student.yaml", tmp_path_factory)
    report = json.loads(result.stdout)
    baseline, student, final = report["stages"]
    assert "TextTransformer" in student["details"]["student"]
    assert student["params"] < baseline["params"] / 5
    assert student["details"]["metric"]["before"] < 0.3  # it started from initial weights
    assert baseline["metric"]["value"] - final["metric"]["value"] <= 0.03
    text = np.load(CONFIGS.parent / "sample_models" / "text_eval.npz")
    session = open_session(out / "model.onnx", threads=1)
    feeds = {"input_ids": text["input_ids"][:5], "attention_mask": text["attention_mask"][:5]}
    assert session.run(None, feeds)[0].shape == (5, 10)


def test_static_int8_stores_the_same_weights_in_a_quarter_of_the_bytes(tmp_path_factory):
    result, _ = recipe_report(CONFIGS / "int8-static.yaml", tmp_path_factory)
    report = json.loads(result.stdout)
    baseline, final = report["stages"]
    assert final["name"] == "quantize.static" and report["summary"]["size_ratio"] >= 3
    assert baseline["metric"]["value"] - final["metric"]["value"] <= 0.01
    assert final["params"] == baseline["params"]  # same weights, stored in int8


def test_recovery_recipe_equalizes_then_corrects_and_picks_a_calibration(tmp_path_factory):
    result, out = recipe_report(CONFIGS / "int8-static-recovery.yaml", tmp_path_factory)
    baseline, equalized, quantized = json.loads(result.stdout)["stages"]
    spread = equalized["details"]["range_spread"]
    assert equalized["details"]["pairs"] >= 4 and spread["after"] < spread["before"]
    assert equalized["metric"]["value"] >= 0.99999  # the same function in float
    details = quantized["details"]
    assert details["bias_correction"]["layers"] > 0
    errors = details["calibration"]["output_error"]
    assert details["calibration"]["method"] == min(errors, key=errors.get)
    assert baseline["metric"]["value"] - quantized["metric"]["value"] <= 0.001
    assert "bias correction in" in (out / "report.md").read_text()
