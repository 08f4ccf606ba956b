"""Every recipe in configs/ runs on the model its header names, and meets its non-timing gates."""

import json
import re

import pytest

from tests.conftest import CONFIGS, ROOT, invoke

RECIPES = sorted(CONFIGS.glob("*.yaml"))


def model_for(config):
    found = re.search(
        r"compress run (\S+) -c configs/" + re.escape(config.name), config.read_text()
    )
    assert found, f"{config.name} must say how it is run: '# compress run MODEL -c configs/...'"
    return ROOT / found.group(1)


def test_there_are_recipes():
    assert {"int8-static.yaml", "int8-dynamic.yaml"} <= {c.name for c in RECIPES}


@pytest.mark.parametrize("config", RECIPES, ids=lambda c: c.stem)
def test_recipe_runs(tmp_path, config):
    out = tmp_path / "out"
    result = invoke("run", model_for(config), "-c", config, "-o", out, "--json", "--quiet")
    report = json.loads(result.stdout)  # stdout holds nothing but the report
    assert result.exit_code in (0, 3), result.stderr
    failed = [g["name"] for g in report["gates"] if not g["passed"]]
    # Timing gates depend on the machine; the benchmark checks speed, tests check the rest.
    assert not [name for name in failed if name != "min_speedup"], report["gates"]
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text()) == report


def test_demo_recipe_shrinks_the_cnn_without_losing_accuracy(tmp_path):
    config = CONFIGS / "int8-static.yaml"
    result = invoke("run", model_for(config), "-c", config, "-o", tmp_path / "o", "--json")
    report = json.loads(result.stdout)
    baseline, final = report["stages"][0], report["stages"][-1]
    assert [s["name"] for s in report["stages"]] == ["baseline", "quantize.static"]
    assert report["summary"]["size_ratio"] >= 3
    assert baseline["metric"]["value"] >= 0.97
    assert baseline["metric"]["value"] - final["metric"]["value"] <= 0.01
    assert final["params"] == baseline["params"]  # same weights, stored in int8
