"""Models whose forward returns a tuple, a dict or a transformers-style ModelOutput: every tensor is
exported, the metric judges the first output or the one `report.output` names, and the report
says which."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from tests.helpers.cli import assert_refused, run_cli

ARCH = '''
from collections import OrderedDict

import torch
from torch import nn


class ModelOutput(OrderedDict):
    """A stand-in for transformers' ModelOutput: a dict of the fields that are set."""

    def __init__(self, **fields):
        super().__init__((k, v) for k, v in fields.items() if v is not None)


class Body(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(8, 5)
        self.head = nn.Linear(5, 3)

    def parts(self, x):
        hidden = torch.tanh(self.hidden(x))
        return hidden, self.head(hidden)


class TupleNet(Body):
    def forward(self, x):
        return self.parts(x)


class DictNet(Body):
    def forward(self, x):
        hidden, logits = self.parts(x)
        return {"hidden": hidden, "logits": logits}


class OutputNet(Body):
    def forward(self, x):
        hidden, logits = self.parts(x)
        return ModelOutput(loss=None, logits=logits, hidden_states=(x, hidden))
'''

COUNT = 24


def write_model(tmp_path, arch: str, report: str = "") -> tuple:
    """A state_dict, its arch file and data (labels in 0..2), and a config using them."""
    (tmp_path / "nets.py").write_text(ARCH)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(ARCH, "nets.py", "exec"), namespace)
    module = namespace[arch]().eval()
    torch.save(module.state_dict(), tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(COUNT, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=rng.integers(0, 3, COUNT))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"version: 1\nmodel: {{arch: nets.py:{arch}}}\n"
        "data:\n  eval: {path: data.npz, inputs: [x], labels: y}\n"
        "passes: [{type: quantize.dynamic}]\n"
        f"report: {{batch_sizes: [4], min_runs: 5, min_seconds: 0, "
        f"max_seconds: 0.2, warmup_runs: 1{report}}}\n"
    )
    return module, x, tmp_path / "model.pt", config, tmp_path / "out"


def top1(logits: torch.Tensor, data_path) -> float:
    """Top-1 as the report rounds it."""
    labels = np.load(data_path)["y"]
    return round(float((logits.argmax(1).numpy() == labels).mean()), 6)


def run_ok(model, config, out) -> dict:
    result = run_cli(model, config, out)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "report.json").read_text())


def onnx_outputs(out) -> list[str]:
    return [o.name for o in onnx.load(str(out / "model.onnx")).graph.output]


def test_tuple_outputs_are_all_exported_and_the_first_is_judged(tmp_path):
    module, x, model, config, out = write_model(tmp_path, "TupleNet")
    report = run_ok(model, config, out)
    assert onnx_outputs(out) == ["output_0", "output_1"]
    assert report["outputs"] == ["output_0", "output_1"]
    assert report["judged_output"] == "output_0"
    with torch.no_grad():
        hidden, logits = module(torch.from_numpy(x))
    data = tmp_path / "data.npz"
    assert top1(hidden, data) != top1(logits, data)  # so the value tells which was judged
    assert report["stages"][0]["metric"]["value"] == top1(hidden, data)
    assert "judged on output `output_0`" in (out / "report.md").read_text()


@pytest.mark.parametrize("wanted", ["logits", "1"])
def test_dict_outputs_judged_on_the_output_report_output_names(tmp_path, wanted):
    module, x, model, config, out = write_model(tmp_path, "DictNet", f", output: {wanted}")
    report = run_ok(model, config, out)
    assert onnx_outputs(out) == ["hidden", "logits"]
    assert report["judged_output"] == "logits"
    with torch.no_grad():
        outputs = module(torch.from_numpy(x))
    data = tmp_path / "data.npz"
    assert top1(outputs["hidden"], data) != top1(outputs["logits"], data)
    assert report["stages"][0]["metric"]["value"] == top1(outputs["logits"], data)


def test_model_output_dict_subclass_with_nested_and_missing_fields(tmp_path):
    module, x, model, config, out = write_model(tmp_path, "OutputNet")
    report = run_ok(model, config, out)
    assert onnx_outputs(out) == ["logits", "hidden_states_0", "hidden_states_1"]
    assert report["judged_output"] == "logits"
    with torch.no_grad():
        logits = module(torch.from_numpy(x))["logits"]
    assert report["stages"][0]["metric"]["value"] == top1(logits, tmp_path / "data.npz")


@pytest.mark.parametrize("wanted", ["scores", "2"])
def test_a_report_output_the_model_lacks_is_refused(tmp_path, wanted):
    _, _, model, config, out = write_model(tmp_path, "DictNet", f", output: {wanted}")
    result = run_cli(model, config, out)
    assert_refused(result, out, "report.output", "0: hidden, 1: logits")
