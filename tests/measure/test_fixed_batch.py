"""A torch.export program saved with a fixed batch (no dynamic_shapes) runs at that batch
everywhere: data is chunked and the last chunk padded, padded rows' outputs dropped."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from tests.helpers.cli import assert_refused, run_cli

FIXED = 4
SAMPLES = 10  # not a multiple of FIXED: the last chunk is padded
REPORT = "report: {min_runs: 5, min_seconds: 0, warmup_runs: 1, max_seconds: 0}\n"


class TinyText(nn.Module):
    """Token ids and an attention mask -> 3 classes (masked mean of embeddings)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled)


class TextWithFeatures(TinyText):
    """TinyText returning a dict, its logits second."""

    def forward(self, input_ids, attention_mask):
        logits = super().forward(input_ids, attention_mask)
        return {"features": torch.tanh(logits[:, :2]), "logits": logits}


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )


def text_data(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((count, 12), np.int64)
    mask[:, 8:] = 0
    return {
        "input_ids": rng.integers(0, 50, (count, 12)),
        "attention_mask": mask,
        "y": rng.integers(0, 3, count),
    }


def image_data(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(count, 1, 8, 8)).astype(np.float32),
        "y": rng.integers(0, 10, count),
    }


def save_fixed(module: nn.Module, data: dict[str, np.ndarray], path):
    names = [n for n in data if n != "y"]
    example = tuple(torch.from_numpy(data[n][:FIXED]) for n in names)
    torch.export.save(torch.export.export(module.eval(), example), path)
    return path


def config_for(tmp_path, data: dict[str, np.ndarray], settings: str = "") -> tuple:
    np.savez(tmp_path / "data.npz", **data)
    inputs = ", ".join(n for n in data if n != "y")
    text = (
        "version: 1\ndata:\n"
        f"  calibration: {{path: data.npz, inputs: [{inputs}]}}\n"
        f"  eval: {{path: data.npz, inputs: [{inputs}], labels: y}}\n"
        "passes:\n  - type: quantize.static\n" + settings + REPORT
    )
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return config, tmp_path / "out"


def expected_top1(module: nn.Module, data: dict[str, np.ndarray]) -> float:
    with torch.no_grad():
        logits = module(*(torch.from_numpy(v) for k, v in data.items() if k != "y"))
    logits = logits["logits"] if isinstance(logits, dict) else logits
    return round(float((logits.argmax(1).numpy() == data["y"]).mean()), 6)


def check_run(tmp_path, module: nn.Module, data: dict[str, np.ndarray], settings="") -> dict:
    model = save_fixed(module, data, tmp_path / "fixed.pt2")
    config, out = config_for(tmp_path, data, settings)
    result = run_cli(model, config, out)
    assert result.exit_code == 0, result.stderr
    assert f"fixed batch of {FIXED}" in result.stderr
    report = json.loads((out / "report.json").read_text())
    baseline = report["stages"][0]
    assert baseline["metric"]["value"] == expected_top1(module, data)
    for stage in report["stages"]:
        assert list(stage["latency_ms"]) == [str(FIXED)]
    return report


def test_fixed_batch_text_model_runs_end_to_end(tmp_path):
    torch.manual_seed(0)
    check_run(tmp_path, TinyText(), text_data(SAMPLES))


def test_fixed_batch_model_with_dict_outputs_judged_on_report_output(tmp_path):
    torch.manual_seed(0)
    data = text_data(SAMPLES)
    data["y"] = data["y"] % 2  # labels the 2-wide first output could also score
    module = TextWithFeatures()
    model = save_fixed(module, data, tmp_path / "fixed.pt2")
    config, out = config_for(tmp_path, data)
    config.write_text(config.read_text().replace("report: {", "report: {output: logits, "))
    result = run_cli(model, config, out)
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["outputs"] == ["features", "logits"] and report["judged_output"] == "logits"
    assert report["stages"][0]["metric"]["value"] == expected_top1(module, data)
    with torch.no_grad():
        features = module(*(torch.from_numpy(data[k]) for k in ("input_ids", "attention_mask")))
    features_top1 = (features["features"].argmax(1).numpy() == data["y"]).mean()
    assert round(float(features_top1), 6) != expected_top1(module, data)  # the value tells which


def test_fixed_batch_image_model_runs_end_to_end(tmp_path):
    torch.manual_seed(0)
    # every calibration method is tried, and bias correction reads activation statistics
    settings = "    calibration: auto\n    bias_correction: true\n    batch_size: 3\n"
    check_run(tmp_path, tiny_cnn(), image_data(SAMPLES), settings)


def test_fixed_batch_refuses_other_latency_batches(tmp_path):
    data = image_data(SAMPLES)
    model = save_fixed(tiny_cnn(), data, tmp_path / "fixed.pt2")
    config, out = config_for(tmp_path, data)
    config.write_text(config.read_text().replace("report: {", "report: {batch_sizes: [8], "))
    assert_refused(run_cli(model, config, out), out, "fixed batch of 4", "report.batch_sizes: [4]")


def test_fixed_batch_refuses_torch_passes_before_any_work(tmp_path):
    data = image_data(SAMPLES)
    model = save_fixed(tiny_cnn(), data, tmp_path / "fixed.pt2")
    config, out = config_for(tmp_path, data)
    config.write_text(config.read_text().replace("quantize.static", "test.identity"))
    assert_refused(run_cli(model, config, out), out, "passes[0]", "dynamic_shapes")
