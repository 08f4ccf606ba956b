"""A decoder judged as its users read it, on running text in windows: the ONNX export's perplexity
is the one transformers' own loss gives on the same windows, the baseline agrees with itself on
every token, a budget is a relative increase of perplexity, and the report gives the token
count."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from compress.config import ExportSection, ModelSection
from compress.job.preflight import check_config
from compress.job.text_data import with_tokens
from compress.measure.evaluate import Judge
from compress.measure.metrics import metric_drop
from compress.models import load_model
from compress.torch import export  # export.export_to_onnx: made once a session (conftest)
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.hf_folders import sentences, token_arrays

QUICK = (
    "report: {batch_sizes: [2], metric: %s, min_runs: 5, min_seconds: 0, max_seconds: 0.3, "
    "warmup_runs: 1}\n"
)


def text_config(folder, metric: str, extra: str = "") -> object:
    (folder / "t.txt").write_text("\n".join(sentences(12)) + "\n")
    config = folder / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n  eval: {path: t.txt, max_length: 16}\n" + QUICK % metric + extra
    )
    return config


@pytest.fixture(scope="module")
def llama(hf_folders, tmp_path_factory):
    folder = hf_folders["llama"]
    module = load_model(folder, ModelSection(), folder.parent).model
    target = tmp_path_factory.mktemp("ppl") / "llama.onnx"
    tokens = token_arrays(2)
    example = [tokens["input_ids"], tokens["attention_mask"]]
    export.export_to_onnx(module, "hf_folder", example, [], [], target, ExportSection())
    return folder, module, target


def test_onnx_perplexity_is_transformers_loss_on_the_same_windows(llama, tmp_path):
    folder, module, path = llama
    _, _, datasets = with_tokens(check_config(text_config(tmp_path, "perplexity")), folder, False)
    data = datasets["eval"]
    assert data.labels.shape == data.inputs["input_ids"].shape and len(data) >= 3
    nll, counted = 0.0, 0
    with torch.no_grad():
        for ids, mask, labels in zip(*data.inputs.values(), data.labels, strict=True):
            loss = module.model(
                input_ids=torch.from_numpy(ids[None]),
                attention_mask=torch.from_numpy(mask[None]),
                labels=torch.from_numpy(labels[None]),
            ).loss
            scored = int((labels[1:] != -100).sum())
            nll, counted = nll + float(loss) * scored, counted + scored
    expected = float(np.exp(nll / counted))
    judge = Judge(path, data, "perplexity", 0)
    assert judge.reference_value == pytest.approx(expected, rel=1e-4)
    assert data.tokenizer.scored_tokens == counted
    agreement = Judge(path, data, "token_agreement", 0)
    assert agreement.reference_value == 1.0 and agreement.score(path) == 1.0


def test_a_budget_is_a_relative_increase_of_perplexity():
    assert metric_drop("perplexity", 20.0, 20.6) == pytest.approx(0.03)
    assert metric_drop("perplexity", 20.0, 19.0) == pytest.approx(-0.05)  # better: no drop
    assert metric_drop("token_agreement", 1.0, 0.97) == pytest.approx(0.03)


def test_a_run_keeps_perplexity_within_a_relative_budget_and_reports_its_tokens(
    hf_folders, tmp_path
):
    """The gate is the int8 fallback's budget: all-int8 raises perplexity by ~4e-4 (relative),
    so nodes go back to float until the rise is within 1e-6."""
    gate = "gates: {max_accuracy_drop: 0.000001}\npasses: [{type: quantize.dynamic}]\n"
    config = text_config(tmp_path, "perplexity", gate)
    result = invoke("run", hf_folders["llama"], "-c", config, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    assert "round 0: 0 node(s) in float" in result.stderr and "over budget" in result.stderr
    report = json.loads(result.stdout)
    base, quantized = (stage["metric"] for stage in report["stages"])
    assert (
        base["tokens"]
        == quantized["tokens"]
        == report["provenance"]["tokenizer"]["scored_tokens"]
        > 0
    )
    drop = report["summary"]["accuracy_drop"]
    assert drop == pytest.approx((quantized["value"] - base["value"]) / base["value"], abs=1e-6)
    assert drop <= 1e-6
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"{base['tokens']:,} tokens scored" in markdown


def test_token_metrics_need_a_decoders_text(hf_folders, tmp_path):
    config = text_config(tmp_path, "perplexity")
    result = invoke("run", hf_folders["base"], "-c", config, "-o", tmp_path / "out")
    assert_refused(result, tmp_path / "out", "report.metric: perplexity judges a decoder")


def test_static_int8_calibrates_a_decoder_on_text_and_keeps_its_cache_in_float(
    hf_folders, tmp_path
):
    """Calibration runs prefills from an empty cache (which has no range to measure), and a
    decode step reads the cache back: the nodes that read or write it stay in float."""
    config = text_config(tmp_path, "token_agreement", "passes: [{type: quantize.static}]\n")
    config.write_text(
        config.read_text().replace("  eval:", "  calibration: {path: t.txt}\n  eval:")
    )
    out = tmp_path / "out"
    result = invoke("run", hf_folders["llama"], "-c", config, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    stage = json.loads(result.stdout)["stages"][-1]
    kept = set(stage["details"]["cache_float_nodes"])
    graph = onnx.load(str(out / "model.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    cache = [producers[o.name] for o in graph.output if o.name.startswith("present.")]
    assert len(cache) == 4 and {n.name for n in cache} <= kept  # two layers' keys and values
    past = {i.name for i in graph.input if i.name.startswith("past_key_values.")}
    readers = [n for n in graph.node if past.intersection(n.input)]
    assert readers and "QuantizeLinear" not in {n.op_type for n in readers}  # read as float
    assert "DequantizeLinear" in {n.op_type for n in graph.node}  # the rest is int8
    assert stage["metric"]["value"] > 0.5, stage["metric"]
