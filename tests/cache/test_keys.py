"""Stage keys change with everything a stage read (files, code, the config keys its pass reads)
and with nothing else: a later pass, a gate or a report setting a stage never read leaves it
reused."""

from __future__ import annotations

import os
import sys

import pytest

from compress.cache.keys import measure_key, stage_keys
from compress.errors import InputError
from compress.job.preflight import build_passes
from compress.passes.recipe import load_recipe
from compress.passes.registry import _REGISTRY
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, STATE_DICT_CONFIG, write_config
from tests.helpers.paths import SAMPLES

PRUNE = "  - {type: prune.channels, amount: 0.25, finetune_epochs: 0}\n"
DISTILL = "  - {type: distill, epochs: 1}\n"
TRAIN = "train: {path: digits_train.npz, inputs: [x], labels: y, limit: 64}\n  "
RECIPE = CNN_CONFIG.replace("passes:\n", "passes:\n" + PRUNE + DISTILL).replace(
    "calibration:", TRAIN + "calibration:"
)


def keys_of(folder, text, model=SAMPLES / "digits_cnn.pt2", *overrides) -> list[str]:
    folder.mkdir(exist_ok=True)
    config = load_recipe(write_config(folder, text), overrides)
    passes = build_passes(config)
    return stage_keys(model, config, passes, list(range(len(config.passes))))


def test_a_stage_key_changes_with_what_the_stage_depends_on_and_not_with_later_passes(
    tmp_path, monkeypatch
):
    base = keys_of(tmp_path / "a", RECIPE)
    assert len(base) == 4 and len(set(base)) == 4
    later = keys_of(tmp_path / "b", RECIPE.replace("per_channel: true", "per_channel: false"))
    assert later[:3] == base[:3] and later[3] != base[3]  # a later pass's param: only its stage
    earlier = keys_of(tmp_path / "c", RECIPE.replace("amount: 0.25", "amount: 0.5"))
    assert earlier[0] == base[0] and all(e != b for e, b in zip(earlier[1:], base[1:], strict=True))
    seed = keys_of(tmp_path / "d", "seed: 7\n" + RECIPE)
    assert all(a != b for a, b in zip(seed, base, strict=True))
    model = tmp_path / "other.pt2"
    model.write_bytes((SAMPLES / "digits_cnn.pt2").read_bytes() + b"\0")
    assert all(a != b for a, b in zip(keys_of(tmp_path / "e", RECIPE, model), base, strict=True))
    data = tmp_path / "f"
    keys_of(data, RECIPE)
    with open(data / "digits_eval.npz", "ab") as f:  # the same config, other data bytes
        f.write(b"\0")
    assert all(a != b for a, b in zip(keys_of(data, RECIPE), base, strict=True))
    monkeypatch.setattr("compress.cache.keys.code_fingerprint", lambda: "onnxruntime 99")
    assert all(a != b for a, b in zip(keys_of(tmp_path / "g", RECIPE), base, strict=True))


def test_gates_and_report_settings_change_only_the_stages_that_read_them(tmp_path):
    """prune reads neither, distill picks its epoch by report.metric, quantize.static judges
    its fallback against gates.max_accuracy_drop; only the gate they read changes them."""
    base = keys_of(tmp_path / "a", RECIPE)
    folder = tmp_path / "b"
    for setting in ("gates.min_speedup=1.01", "report.batch_sizes=[4]", "report.min_runs=9"):
        assert keys_of(folder, RECIPE, SAMPLES / "digits_cnn.pt2", setting) == base
    metric = keys_of(folder, RECIPE, SAMPLES / "digits_cnn.pt2", "report.metric=agreement")
    assert metric[:2] == base[:2] and metric[2] != base[2] and metric[3] != base[3]
    budget = keys_of(folder, RECIPE, SAMPLES / "digits_cnn.pt2", "gates.max_accuracy_drop=0.01")
    assert budget[:3] == base[:3] and budget[3] != base[3]
    reverting = RECIPE.replace("finetune_epochs: 0", "finetune_epochs: 0, on_slower: revert")
    revert = keys_of(folder, reverting)  # the speed guard times it as the report does
    timed = keys_of(folder, reverting, SAMPLES / "digits_cnn.pt2", "report.min_runs=9")
    assert revert[0] == timed[0] and revert[1] != timed[1]


def test_the_figures_of_a_stage_are_kept_under_the_report_settings_they_were_measured_with(
    tmp_path,
):
    config = load_recipe(write_config(tmp_path, CNN_CONFIG))
    gate = load_recipe(tmp_path / "config.yaml", ["gates.min_speedup=2"])
    timed = load_recipe(tmp_path / "config.yaml", ["report.batch_sizes=[2]"])
    assert measure_key(config) == measure_key(gate) != measure_key(timed)


ARCH_MODULE = """\
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)){tail}
"""


def test_a_module_style_arch_is_covered_by_its_source(tmp_path, monkeypatch):
    """`model.arch: package.module:Class` found on the Python path: editing the class changes
    the key, though the config and the model file do not change."""
    package = tmp_path / "site" / "mynets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tiny.py").write_text(ARCH_MODULE.format(tail=""))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    text = STATE_DICT_CONFIG.replace("arch.py:DigitsCNN", "mynets.tiny:Tiny")
    model = SAMPLES / "digits_cnn_state.pt"
    before = keys_of(tmp_path / "a", text, model)
    (package / "tiny.py").write_text(ARCH_MODULE.format(tail=" * 2"))
    after = keys_of(tmp_path / "a", text, model)
    assert all(a != b for a, b in zip(before, after, strict=True))
    (package / "helpers.py").write_text("SCALE = 3\n")  # a module of the same package
    assert keys_of(tmp_path / "a", text, model) != after
    missing = text.replace("mynets.tiny:Tiny", "mynets.nowhere:Tiny")
    with pytest.raises(InputError, match="model.arch: module mynets.nowhere is not found"):
        keys_of(tmp_path / "a", missing, model)


@pytest.mark.parametrize("kind", ["folder", "fifo", "missing"])
def test_a_bad_arch_path_is_bad_input_with_the_cache_as_without(tmp_path, stage_cache, kind):
    config = write_config(tmp_path, STATE_DICT_CONFIG)
    if kind == "folder":
        (tmp_path / "arch.py").mkdir()
    elif kind == "fifo":
        os.mkfifo(tmp_path / "arch.py")
    model = SAMPLES / "digits_cnn_state.pt"
    for cache in ([], ["--no-cache"]):
        result = invoke("run", model, "-c", config, "-o", tmp_path / "out", *cache)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith("error: model.arch"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    check = invoke("validate", config)
    assert check.exit_code == 2 and "model.arch" in check.stderr


PLUGIN = '''\
from compress.passes.base import PassResult, TorchPass
from compress.passes.registry import register


@register("test.plugin_identity")
class PluginIdentity(TorchPass):
    """Leaves the model as it is.

    Sample YAML:
        - type: test.plugin_identity
    """

    reads = ()

    def apply(self, given, ctx):
        return PassResult(given.module){tail}
'''


def test_a_plugin_pass_is_covered_by_its_code(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_plugin.py").write_text(PLUGIN.format(tail=""))
    monkeypatch.syspath_prepend(str(site))
    import my_plugin  # noqa: F401 - registers the pass, as its entry point would

    text = CNN_CONFIG.replace("passes:\n", "passes:\n  - {type: test.plugin_identity}\n")
    before = keys_of(tmp_path / "a", text)
    (site / "my_plugin.py").write_text(PLUGIN.format(tail="  # edited"))
    after = keys_of(tmp_path / "a", text)
    assert before[0] == after[0] and before[1] != after[1]
    sys.modules.pop("my_plugin", None)
    _REGISTRY.pop("test.plugin_identity")
