"""`--set KEY=VALUE` overrides: applied before validation, checked like the file, errors say so."""

from __future__ import annotations

import json

import pytest

from compress.errors import ConfigError
from compress.passes.recipe import load_recipe
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.paths import SAMPLES


def test_overrides_set_values_lists_and_new_sections(tmp_path, cnn_config):
    loaded = load_recipe(
        cnn_config,
        [
            "passes[0].per_channel=false",
            "gates.min_speedup=2",
            "report.batch_sizes=[32, 1]",
            "passes[0].calibration=entropy",
        ],
    )
    assert loaded.passes[0].params.per_channel is False
    assert loaded.passes[0].params.calibration == "entropy"
    assert loaded.config.gates.min_speedup == 2.0
    assert loaded.config.report.batch_sizes == [32, 1]
    assert loaded.overrides == (
        "passes[0].per_channel=false",
        "gates.min_speedup=2",
        "report.batch_sizes=[32, 1]",
        "passes[0].calibration=entropy",
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("passes[0].per_channel=maybe", "passes[0].per_channel: Input should be a valid boolean, "
         "unable to interpret input (from --set passes[0].per_channel=maybe)"),
        ("gates.min_sped=2", "gates.min_sped: unknown key; remove it or check its spelling "
         "(from --set gates.min_sped=2)"),
        ("report.batch_sizes=[0]", "report.batch_sizes[0]: Input should be greater than or equal "
         "to 1 (from --set report.batch_sizes=[0])"),
        ("passes[0].type=quantize.statc", "did you mean 'quantize.static'? "
         "(from --set passes[0].type=quantize.statc)"),
        ("passes[3].amount=0.3", "--set passes[3].amount=0.3: passes has no item 3; "
         "indexes run from 0 to 0"),
        ("version.x=1", "--set version.x=1: version is not a mapping"),
        ("gates.min_speedup", "--set gates.min_speedup: expected KEY=VALUE"),
        ("passes.0.amount=1", "is not a config key"),
        ("report.batch_sizes=[1,", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_override_is_named_and_said_to_come_from_set(cnn_config, override, expected):
    with pytest.raises(ConfigError) as info:
        load_recipe(cnn_config, [override])
    assert expected in str(info.value)


def test_file_errors_keep_their_line_numbers_beside_an_override(tmp_path):
    path = write_config(tmp_path, CNN_CONFIG.replace("per_channel: true", "per_channel: 3"))
    with pytest.raises(ConfigError, match=r"passes\[0\].per_channel: .* \(line 7\)"):
        load_recipe(path, ["gates.min_speedup=2"])


def test_cli_validate_and_run_take_overrides(tmp_path, cnn_config):
    result = invoke("validate", cnn_config, "--set", "passes[0].per_channel=yes please")
    assert result.exit_code == 2
    assert "from --set passes[0].per_channel=yes please" in result.stderr
    result = invoke("validate", cnn_config, "--set", "passes[0].type=quantize.dynamic")
    assert result.exit_code == 0 and "quantize.dynamic" in result.stdout, result.stderr
    out = tmp_path / "out"
    result = invoke(
        "run", SAMPLES / "digits_cnn.pt2", "-c", cnn_config, "-o", out, "--json",
        "--set", "gates.min_size_ratio=100", "--set", "passes=[]",
    )  # fmt: skip
    assert result.exit_code == 3, result.stderr  # the gate came from --set
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["stages"]] == ["baseline"]
    assert report["provenance"]["config_overrides"] == "gates.min_size_ratio=100 passes=[]"
