"""Pruning: channels really leave the exported ONNX model, from every format that can be changed;
magnitude pruning zeroes weights and says it brings no speedup; bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from compress.job.pipeline import run
from compress.measure.runtime import open_session
from compress.torch.editable import relift
from tests.helpers.cli import assert_refused, run_cli
from tests.helpers.configs import write_config
from tests.helpers.latency import slower_after_the_first_stage
from tests.helpers.paths import SAMPLES

EVAL_ONLY = """\
version: 1
{model}data:
  eval: {{path: digits_eval.npz, inputs: [x], labels: y}}
passes:
  - {{type: {pass_type}, {params}}}
report: {{batch_sizes: [8], min_runs: 5, min_seconds: 0, max_seconds: 0.2, warmup_runs: 1}}
"""


def prune_config(tmp_path, params: str, pass_type="prune.channels", model="", name="c.yaml"):
    text = EVAL_ONLY.format(model=model, pass_type=pass_type, params=params)
    return write_config(tmp_path, text, name)


def conv_channels(path) -> list[int]:
    graph = onnx.load(str(path)).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return [shapes[n.input[1]][0] for n in graph.node if n.op_type == "Conv"]


def test_channel_pruning_removes_channels_from_the_exported_cnn(tmp_path):
    config = prune_config(tmp_path, "amount: 0.5")
    report = run(SAMPLES / "digits_cnn.pt2", config, tmp_path / "out")
    baseline, pruned = report.stages
    assert pruned.name == "prune.channels"
    assert 3.5 <= baseline.macs / pruned.macs <= 4.5  # half the channels in and out
    assert 3.5 <= baseline.params / pruned.params <= 4.5
    assert conv_channels(tmp_path / "out" / "model.onnx") == [32, 32, 64]
    session = open_session(tmp_path / "out" / "model.onnx", threads=1)
    x = np.load(SAMPLES / "digits_eval.npz")["x"][:5]
    assert session.run(None, {"x": x})[0].shape == (5, 10)  # the classifier keeps its 10 classes
    assert pruned.details.channels["features.0"] == [64, 32]
    assert "removed 160 of 330 output channels" in pruned.details.reason


def test_residual_depthwise_model_prunes_consistently(tmp_path):
    config = prune_config(tmp_path, "amount: 0.5, round_to: 8")
    report = run(SAMPLES / "digits_resnet.pt2", config, tmp_path / "out")
    baseline, pruned = report.stages
    assert pruned.params < baseline.params / 2.5
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    depthwise = [n for n in graph.node if n.op_type == "Conv" and _group(n) > 1]
    assert depthwise and all(_group(n) == 32 for n in depthwise)  # groups follow the channels
    assert all(c % 8 == 0 for c in conv_channels(tmp_path / "out" / "model.onnx"))


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def test_state_dict_and_trusted_pickle_prune_too(tmp_path):
    (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
    config = prune_config(tmp_path, "amount: 0.5", model="model: {arch: arch.py:DigitsCNN}\n")
    report = run(SAMPLES / "digits_cnn_state.pt", config, tmp_path / "a")
    assert report.stages[1].params < report.stages[0].params / 3.5

    layers = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 64, 10),
    )  # fmt: skip
    torch.save(layers, tmp_path / "whole.pt")
    config = prune_config(tmp_path, "amount: 0.25", name="p.yaml")
    result = run_cli(tmp_path / "whole.pt", config, tmp_path / "b", "--trust-pickle", "--json")
    assert result.exit_code == 0, result.stderr
    channels = json.loads(result.stdout)["stages"][1]["details"]["channels"]
    assert channels == {"0": [16, 8]}  # 12 left, rounded down to round_to 8 (the default)


def test_relift_gives_a_pt2_program_real_layers_and_the_same_outputs():
    program = torch.export.load(str(SAMPLES / "digits_resnet.pt2"))
    x = torch.from_numpy(np.load(SAMPLES / "digits_eval.npz")["x"][:8])
    module = relift(program.module())
    kinds = {type(m).__name__ for m in module.modules()}
    assert {"Conv2d", "BatchNorm2d", "Linear"} <= kinds
    assert set(module.state_dict()) == set(program.module().state_dict())
    with torch.no_grad():
        assert torch.allclose(module(x), program.module()(x), atol=1e-6)


def test_iterative_steps_with_fine_tuning_reach_the_amount(tmp_path):
    text = EVAL_ONLY.format(
        model="",
        pass_type="prune.channels",
        params="amount: 0.5, steps: 2, finetune_epochs: 1, importance: taylor",
    ).replace("data:\n", "data:\n  train: {path: digits_train.npz, inputs: [x], labels: y}\n")
    report = run(SAMPLES / "digits_cnn.pt2", write_config(tmp_path, text), tmp_path / "out")
    details = report.stages[1].details
    assert details.channels["features.0"] == [64, 32]
    assert len(details.finetune_losses) == 2  # one epoch after each step
    assert report.stages[1].metric.value >= 0.9


def test_magnitude_pruning_zeroes_weights_but_keeps_them(tmp_path):
    config = prune_config(tmp_path, "amount: 0.7", pass_type="prune.magnitude")
    report = run(SAMPLES / "digits_cnn.pt2", config, tmp_path / "out")
    baseline, sparse = report.stages
    assert sparse.params == baseline.params and sparse.macs == baseline.macs
    assert sparse.sparsity >= 0.65  # the classifier and biases stay dense
    assert sparse.gzip_bytes < baseline.gzip_bytes * 0.6
    assert sparse.details.pruned_layer_sparsity == pytest.approx(0.7, abs=0.01)
    assert "no speedup" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(
    ("params", "needles"),
    [
        ("amount: 1.0", ["passes[0].amount", "less than 1"]),
        ("amount: 0", ["passes[0].amount", "greater than 0"]),
        ("amount: 0.5, ignore: [features.9]", ["matches 'features.9'", "features.0"]),
        ("amount: 0.5, ignore: ['feature.*']", ["matches 'feature.*'", "close names: features"]),
        ("amount: 0.5, importance: taylor", ["taylor", "data.train"]),
        ("amount: 0.5, importance: bn_scale", ["no BatchNorm"]),
        ("amount: 0.99", ["would remove every channel of features.0 (64 channels)"]),
        ("amount: 0.9, round_to: 64", ["every channel of features.0", "round_to"]),
        ("amount: 0.5, finetune_epochs: -1", ["finetune_epochs"]),
    ],
)
def test_bad_pruning_params_are_refused(tmp_path, params, needles):
    out = tmp_path / "out"
    result = run_cli(SAMPLES / "digits_cnn.pt2", prune_config(tmp_path, params), out)
    assert_refused(result, out, *needles)


def test_a_plan_that_removes_nothing_is_refused(tmp_path):
    """Global ranking rounded to 64 channels leaves every layer whole: say so, not a no-op."""
    config = prune_config(tmp_path, "amount: 0.9, round_to: 64, scope: global")
    out = tmp_path / "out"
    result = run_cli(SAMPLES / "digits_cnn.pt2", config, out, "--quiet")
    assert_refused(result, out, "removes no channel at all", "lower round_to")


def test_torchscript_input_with_a_pruning_pass_says_which_format_to_use(tmp_path):
    out = tmp_path / "out"
    result = run_cli(SAMPLES / "digits_cnn.ts", prune_config(tmp_path, "amount: 0.5"), out)
    assert_refused(result, out, "TorchScript", ".pt2", "model.arch", "--trust-pickle")


def test_fine_tuning_needs_labels(tmp_path):
    text = EVAL_ONLY.format(model="", pass_type="prune.channels", params="amount: 0.5")
    text = text.replace("data:\n", "data:\n  train: {path: digits_train.npz, inputs: [x]}\n")
    out = tmp_path / "out"
    result = run_cli(SAMPLES / "digits_cnn.pt2", write_config(tmp_path, text), out)
    assert_refused(result, out, "finetune_epochs", "data.train.labels")


def test_custom_attention_is_named_and_prunes_once_ignored(tmp_path):
    """The sample transformer fixes its head size in Python: torch-pruning cannot follow the
    reshape, so the pass names the attention modules to ignore (its own code, not the Linear
    inside it); a glob ignores them all, then the feed-forward layers prune."""
    (tmp_path / "arch.py").write_bytes((SAMPLES / "arch.py").read_bytes())
    text = (
        "version: 1\n"
        "model: {arch: arch.py:TextTransformer}\n"
        "data:\n"
        "  eval: {path: text_eval.npz, inputs: [input_ids, attention_mask]}\n"
        "passes:\n"
        "  - {type: prune.channels, amount: 0.5IGNORE}\n"
        "report: {batch_sizes: [4], metric: agreement, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2}\n"
    )
    model, out = SAMPLES / "text_transformer_state.pt", tmp_path / "a"
    result = run_cli(model, write_config(tmp_path, text.replace("IGNORE", "")), out, "-q")
    assert result.exit_code == 1 and not out.exists()
    assert "add layers.1.attn, layers.0.attn to ignore" in result.stderr
    ignore = ", ignore: ['layers.*.attn']"
    config = write_config(tmp_path, text.replace("IGNORE", ignore), "ignored.yaml")
    baseline, pruned = run(model, config, tmp_path / "b").stages
    assert pruned.details.channels == {
        "layers.0.ffn.0": [128, 64],
        "layers.1.ffn.0": [128, 64],
    }
    assert pruned.macs < baseline.macs and pruned.params < baseline.params


class SqueezeExcitationCnn(torch.nn.Module):
    """Digits CNN with a squeeze-excitation block whose fc1 has 8 channels, as MobileNetV3's."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU())
        self.depthwise = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc1, self.fc2 = torch.nn.Conv2d(32, 8, 1), torch.nn.Conv2d(8, 32, 1)
        self.project = torch.nn.Conv2d(32, 32, 1)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = self.depthwise(self.stem(x))
        x = x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head(self.project(x).mean((2, 3)))


def squeeze_excitation_program(path):
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = (torch.randn(4, 1, 8, 8),)
    program = torch.export.export(
        SqueezeExcitationCnn().eval(), example, dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, path)
    return path


def test_default_rounding_leaves_a_layer_too_small_to_round_whole_and_says_so(tmp_path):
    """round_to 8 (the default) would empty the 8-channel fc1 at amount 0.3: it is left whole,
    the rest is pruned to multiples of 8, and the stage's details and the log say which."""
    model = squeeze_excitation_program(tmp_path / "se.pt2")
    out = tmp_path / "out"
    result = run_cli(model, prune_config(tmp_path, "amount: 0.3"), out)
    assert result.exit_code == 0, result.stderr
    assert "left 1 layer(s) whole that round_to 8 would empty: fc1 (8)" in result.stderr
    pruned = json.loads((out / "report.json").read_text())["stages"][-1]
    assert pruned["details"]["too_small_to_round"] == {"fc1": 8}
    assert "fc1 (8)" in pruned["details"]["reason"]
    assert pruned["details"]["channels"]["stem.0"] == [32, 16]
    assert sorted(conv_channels(out / "model.onnx")) == [8, 16, 16, 16, 16]  # fc2 follows x


class ShuffleBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(16, 16, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        x = self.conv(x).view(b, 2, c // 2, h, w).transpose(1, 2)  # ShuffleNet's channel shuffle
        return x.reshape(b, c, h, w)


def test_a_channel_shuffle_is_refused_before_any_work_naming_its_module(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), ShuffleBlock(), torch.nn.Flatten(), torch.nn.Linear(576, 10)
    ).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = (torch.randn(4, 1, 8, 8),)
    program = torch.export.export(module, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "shuffle.pt2")
    out = tmp_path / "out"
    result = run_cli(tmp_path / "shuffle.pt2", prune_config(tmp_path, "amount: 0.3"), out, "-q")
    assert_refused(result, out, "channel shuffle", "in 1)", "remove the pass")


def test_a_slower_pruned_stage_is_named_with_the_fix(tmp_path, monkeypatch):
    from compress.job import pipeline

    monkeypatch.setattr(pipeline, "measure_latency", slower_after_the_first_stage)
    report = run(SAMPLES / "digits_cnn.pt2", prune_config(tmp_path, "amount: 0.5"), tmp_path / "o")
    assert not report.stages[1].reverted
    (warning,) = [w for w in report.warnings if "stage prune.channels is slower" in w]
    assert "(0.50x, 95% CI 0.50-0.50x)" in warning and "round_to: 8 or 16" in warning


def test_on_slower_revert_keeps_the_unpruned_model(tmp_path, monkeypatch):
    from compress.measure import speed as speed_guard

    monkeypatch.setattr(speed_guard, "measure_latency", slower_after_the_first_stage)
    config = prune_config(tmp_path, "amount: 0.5, on_slower: revert")
    out = tmp_path / "out"
    result = run_cli(SAMPLES / "digits_cnn.pt2", config, out)
    assert result.exit_code == 0, result.stderr
    assert "prune.channels made the model slower" in result.stderr
    baseline, pruned = json.loads((out / "report.json").read_text())["stages"]
    assert pruned["reverted"] and pruned["params"] == baseline["params"]
    assert conv_channels(out / "model.onnx") == [64, 64, 128]
    assert "prune.channels (reverted)" in (out / "report.md").read_text()


class FixedWidth(torch.nn.Module):
    """Reshapes to a width fixed in its code, as custom attention does with its head size."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.linear(x).reshape(x.shape[0], 2, 4)


def test_a_failing_forward_names_the_module_whose_code_failed_and_its_kin():
    from compress.torch.module_names import failing_modules

    model = torch.nn.Sequential(FixedWidth(), torch.nn.Flatten(), FixedWidth())
    assert failing_modules(model, (torch.randn(3, 8),)) is None
    model[0].linear = torch.nn.Linear(8, 6)  # as pruning leaves it: 6 features, not 8
    model[2].linear = torch.nn.Linear(6, 8)
    assert failing_modules(model, (torch.randn(3, 8),)) == ["0", "2"]
