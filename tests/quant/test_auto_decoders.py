"""quantize.auto on a decoder exported with its key/value cache: weight-only candidates
(quantize.int4 at 4 and 8 bits) beside dynamic, no static one; timed on decode steps when the
report times generation; judged by a token metric through the streaming path (no evaluation
holds more than a batch of logits); the model kept is within the budget."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tests.helpers.cli import invoke
from tests.helpers.hf_folders import sentences
from tests.helpers.latency import fixed_generation

# what a decode step of each model takes (ms) in the timings the test fixes: int4 clearly fastest
STEP_MS = {"int4-weights": 1.0, "int8-weights": 1.5, "dynamic": 2.0}
INPUT_MS = 3.0
WINDOW_LOGITS = 16 * 131 * 4  # one window's logits: 16 tokens of the tiny vocabulary, float32


GENERATION = "generation: {prompt_tokens: 8, new_tokens: 20, min_rounds: 2}"


def decoder_config(folder: Path, passes: str, generation: str = GENERATION) -> Path:
    (folder / "t.txt").write_text("\n".join(sentences(24)) + "\n")
    config = folder / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n"
        "  calibration: {path: t.txt, max_length: 16}\n"  # static candidates could calibrate
        "  eval: {path: t.txt, max_length: 16}\n"
        f"passes: [{passes}]\n"
        "gates: {max_accuracy_drop: 0.03}\n"
        "report: {batch_sizes: [1], metric: perplexity, min_runs: 5, min_seconds: 0, "
        f"max_seconds: 0.2, warmup_runs: 1{', ' if generation else ''}{generation}}}\n"
    )
    return config


@pytest.fixture
def decode_steps(monkeypatch):
    """quantize.auto's timings fixed by the test (decode steps of STEP_MS by the candidate a
    file holds, INPUT_MS for the input); every call's models and generation settings kept."""
    calls = []

    def step_ms(name: str, path: Path) -> float:
        return STEP_MS.get(path.name.split(".")[0], INPUT_MS)

    def measure(paths, settings, ids=None, peak_memory=None):
        calls.append((list(paths), settings))
        return fixed_generation(step_ms, paths, settings)

    monkeypatch.setattr("compress.measure.speed.measure_generation", measure)
    return calls


@pytest.fixture
def logits_held(monkeypatch):
    """Evaluations and comparisons hold at most two windows' logits a batch (the limits set
    small), and every batch of outputs one ran is kept: its largest output's bytes."""
    from compress.measure import evaluate, perplexity
    from compress.quant import int8

    limit = 2 * WINDOW_LOGITS
    monkeypatch.setattr(perplexity, "LOGITS_BYTES", limit)
    monkeypatch.setattr(evaluate, "LOGITS_BYTES", limit)
    monkeypatch.setattr(int8, "PER_CHANNEL_BYTES", limit)  # dynamic's per_channel: auto
    held = []
    run_batched = evaluate.run_batched

    def spy(session, inputs, batch_size, outputs=None):
        values = run_batched(session, inputs, batch_size, outputs)
        held.append(values[0].nbytes)
        return values

    monkeypatch.setattr(evaluate, "run_batched", spy)
    return held, limit


def test_auto_weighs_weight_only_candidates_on_decode_steps_and_keeps_one_within_budget(
    hf_folders, tmp_path, decode_steps, logits_held
):
    config = decoder_config(tmp_path, "{type: quantize.auto}")
    out = tmp_path / "out"
    result = invoke("run", hf_folders["llama"], "-c", config, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    details = report["stages"][-1]["details"]
    candidates = {c["name"]: c for c in details["candidates"]}
    # calibration data is there, but a decoder gets no static candidate
    assert list(candidates) == ["int4-weights", "int8-weights", "dynamic"]
    assert candidates["int8-weights"]["settings"] == {"bits": 8, "accuracy_level": 4}
    assert all(c["verdict"] for c in candidates.values())
    # every timing auto took was decode steps: the screening brief, the final one as reported
    assert details["timing"]["timed"] == "decode steps"
    # (accuracy_level: auto timed int4-weights' "level 0" and "level 4" so too; int8-weights
    # runs at level 4)
    timed = [(names, settings) for names, settings in decode_steps if "input" in names]
    assert len(timed) == 2 and len(decode_steps) == 3
    (screened, brief), (final, full) = timed
    assert set(screened) == {"input", *STEP_MS} and set(final) == {"input", "int4-weights"}
    assert "more than 10% slower (1.500 ms)" in candidates["int8-weights"]["verdict"]
    assert brief.generation.min_rounds == 3 and brief.max_seconds == 0
    assert full.generation.min_rounds == 2 and full.generation.new_tokens == 20
    assert "per decode step at batch 1 after a prompt of 8 tokens" in details["reason"]
    # the fastest within the budget is kept, and is what was written
    assert details["chosen"] == "int4-weights", details["reason"]
    chosen = candidates["int4-weights"]
    assert chosen["drop"] <= details["accuracy_budget"] == 0.03
    assert chosen["p50_ms"] == STEP_MS["int4-weights"] and chosen["eight_bit"]  # the head
    assert chosen["accuracy_level"] in (0, 4)
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    # the perplexity auto judged the candidate by is the model's, as the run measures it
    final = report["stages"][-1]["metric"]
    assert final["name"] == "perplexity" and final["value"] == pytest.approx(chosen["metric"])
    assert report["summary"]["accuracy_drop"] <= 0.03
    assert "| candidate | decode ms |" in (out / "report.md").read_text()
    # judging held at most two windows' logits at once, never the eval set's
    held, limit = logits_held
    assert held and max(held) <= limit


def test_auto_times_a_decoder_on_decode_steps_without_report_generation(
    hf_folders, tmp_path, decode_steps
):
    """No report.generation: a decoder is still judged by its decode steps, with the defaults
    within the model's 64 positions (as compress bench and the speed guard time it)."""
    config = decoder_config(tmp_path, "{type: quantize.auto}", generation="")
    result = invoke("run", hf_folders["llama"], "-c", config, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    details = json.loads(result.stdout)["stages"][-1]["details"]
    assert details["timing"]["timed"] == "decode steps"
    assert details["timing"]["shape"] == "per decode step at batch 1 after a prompt of 48 tokens"
    # the screening, the final timing, and int4's accuracy_level: auto: all decode steps
    assert len(decode_steps) == 3
    assert {settings.generation.prompt_tokens for _, settings in decode_steps} == {48}
