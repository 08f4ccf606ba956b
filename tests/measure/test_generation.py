"""A decoder's generation is what is timed: a greedy loop over the key/value cache in ONNX
Runtime that picks transformers' tokens, timed per stage in interleaved rounds (prefill, decode
steps, tokens per second, peak memory, the decode speedup with its interval), gated on tokens
per second (exit 3); a generation that does not fit the model is one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress.config import ExportSection, ModelSection
from compress.measure.decoder_feeds import session_inputs
from compress.measure.generation import generate
from compress.measure.runtime import open_session
from compress.models import load_model
from compress.torch import export  # export.export_to_onnx: made once a session (conftest)
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.hf_folders import sentences, token_arrays, transformers_greedy

QUICK = "report: {batch_sizes: [2], min_runs: 5, min_seconds: 0, max_seconds: 0.2, warmup_runs: 1"


def config(folder, generation: str, extra: str = "") -> object:
    (folder / "t.txt").write_text("\n".join(sentences(6)) + "\n")
    path = folder / "c.yaml"
    path.write_text(
        "version: 1\ndata:\n  calibration: {path: t.txt, max_length: 16}\n"
        f"{QUICK}, generation: {generation}}}\n{extra}"
    )
    return path


def test_the_greedy_loop_picks_transformers_tokens(hf_folders, tmp_path):
    folder = hf_folders["gpt2"]
    module = load_model(folder, ModelSection(), folder.parent).model
    path = tmp_path / "gpt2.onnx"
    tokens = token_arrays(2)
    export.export_to_onnx(
        module, "hf_folder", [tokens["input_ids"], tokens["attention_mask"]], [], [], path,
        ExportSection(),
    )  # fmt: skip
    prompt = np.array([[7, 12, 40, 9, 5], [3, 8, 8, 100, 2]], np.int64)
    expected = transformers_greedy(module, prompt, 6)
    session = open_session(path, threads=1)
    generated = generate(session, session_inputs(session), prompt, 6)
    assert (generated.tokens == expected).all()
    assert len(generated.decode_ms) == 5 and generated.prefill_ms > 0


def test_a_run_times_generation_per_stage_and_gates_on_tokens_per_second(hf_folders, tmp_path):
    generation = "{prompt_tokens: 8, new_tokens: 4, batch_sizes: [1, 2], min_rounds: 2}"
    gates = "passes: [{type: quantize.dynamic}]\ngates: {min_tokens_per_second: 1.0e+9}\n"
    path = config(tmp_path, generation, gates)
    out = tmp_path / "out"
    result = invoke("run", hf_folders["llama"], "-c", path, "-o", out, "--json")
    assert result.exit_code == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["generation"]["prompt_tokens"] == 8
    assert set(report["generation"]["machine"]) == {"1", "2"}
    base, quantized = (stage["generation"] for stage in report["stages"])
    for figures in (base, quantized):
        for batch in ("1", "2"):
            f = figures[batch]
            assert f["decode_ms_p90"] >= f["decode_ms_p50"] > 0 and f["prefill_ms"] > 0
            assert f["tokens_per_second"] == pytest.approx(
                int(batch) * 1000 / f["decode_ms_p50"], rel=1e-3
            )
            assert f["rounds"] >= 2 and 10 < f["peak_rss_mb"] < 4000
    assert base["1"].get("decode_vs_baseline") is None
    paired = quantized["1"]["decode_vs_baseline"]
    assert paired["ci"][0] <= paired["speedup"] <= paired["ci"][1]
    gate = report["gates"][0]
    assert gate["name"] == "min_tokens_per_second" and not gate["passed"]
    assert gate["value"] == quantized["1"]["tokens_per_second"]
    markdown = (out / "report.md").read_text()
    assert "8-token prompt then 4 new tokens" in markdown and "tokens/s" in markdown
    assert "decode speedup" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("folder", "generation", "needle"),
    [
        ("llama", "{prompt_tokens: 60, new_tokens: 8}", "take 68 positions, more than the 64"),
        ("base", "{prompt_tokens: 8, new_tokens: 4}", "takes no key/value cache"),
    ],
)
def test_a_generation_that_does_not_fit_is_one_line(
    hf_folders, tmp_path, folder, generation, needle
):
    path = config(tmp_path, generation)
    result = invoke("run", hf_folders[folder], "-c", path, "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "report.generation:", needle)


def test_a_generation_gate_needs_the_generation_timed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ngates: {min_tokens_per_second: 10}\n")
    result = invoke("validate", path)
    assert result.exit_code == 2 and "add report.generation" in result.stderr


def test_an_exported_decoder_runs_again_from_its_onnx_file(hf_folders, tmp_path):
    """Without data, an ONNX decoder is fed made-up token ids and a mask of one length (its
    position ids and empty cache filled in), and its generation is timed from the file."""
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"version: 1\n{QUICK}}}\n")
    assert invoke("run", hf_folders["llama"], "-c", plain, "-o", tmp_path / "float").exit_code == 0
    timed = tmp_path / "timed.yaml"
    generation = "{prompt_tokens: 8, new_tokens: 4, min_rounds: 2}"
    timed.write_text(
        f"version: 1\npasses: [{{type: quantize.dynamic}}]\n{QUICK}, generation: {generation}}}\n"
    )
    result = invoke(
        "run", tmp_path / "float" / "model.onnx", "-c", timed, "-o", tmp_path / "out", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["generation"]["tokens_per_second"] > 0

    # compress bench times a decoder as it is used, generation's defaults with no config
    float_model, int8_model = tmp_path / "float" / "model.onnx", tmp_path / "out" / "model.onnx"
    brief = ("--set", "report.batch_sizes=[1]", "--set", "report.max_seconds=0.2")
    result = invoke("bench", float_model, "--compare", int8_model, "--json", *brief)
    assert result.exit_code == 0, result.stderr
    generation = json.loads(result.stdout)["generation"]
    # generation's defaults within the 64 positions the export recorded in the file
    assert (generation["settings"]["prompt_tokens"], generation["settings"]["new_tokens"]) == (
        48,
        16,
    )
    timed, compared = generation["models"]["model"]["1"], generation["models"]["compare"]["1"]
    assert timed["tokens_per_second"] > 0 and "decode_vs_baseline" not in timed
    low, high = compared["decode_vs_baseline"]["ci"]
    assert low <= compared["decode_vs_baseline"]["speedup"] <= high
    assert compared["peak_rss_mb"] > 0
    shorter = (
        "--set",
        "report.generation.prompt_tokens=8",
        "--set",
        "report.generation.new_tokens=4",
    )
    table = invoke("bench", int8_model, *brief, *shorter)
    assert table.exit_code == 0 and "4 new tokens over the key/value cache" in table.stdout
    assert "prefill" in table.stdout  # the generation table (headers wrap beside a long path)
    too_long = invoke("bench", int8_model, *brief, "--set", "report.generation.prompt_tokens=60")
    assert too_long.exit_code == 2 and "more than the 64 model.onnx has" in too_long.stderr


def test_int4_accuracy_level_auto_on_a_decoder_is_chosen_by_its_decode_steps(hf_folders, tmp_path):
    """The report times a decoder by its generation, so quantize.int4 picks its MatMulNBits
    level by the decode steps over the cache (a batch-1 one-token shape), not by a prefill."""
    generation = "{prompt_tokens: 8, new_tokens: 4, min_rounds: 2, peak_memory: false}"
    passes = "passes: [{type: quantize.int4, accuracy_level: auto}]\n"
    path = config(tmp_path, generation, passes)
    result = invoke("run", hf_folders["llama"], "-c", path, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    details = json.loads(result.stdout)["stages"][-1]["details"]
    assert details["accuracy_level"] in (0, 4)
    assert "level 4 decodes" in details["accuracy_level_timing"]
    assert f"accuracy_level {details['accuracy_level']}:" in details["accuracy_level_timing"]
