"""The YAML is validated as a whole; errors name the key and the line."""

import pytest

from compress.errors import ConfigError
from compress.passes.recipe import load_recipe
from tests.helpers.configs import CNN_CONFIG, write_config


def test_valid_config_loads_with_pass_params(tmp_path):
    loaded = load_recipe(write_config(tmp_path, CNN_CONFIG))
    assert [spec.type for spec in loaded.passes] == ["quantize.static"]
    assert loaded.passes[0].params.per_channel is True
    assert loaded.config.report.batch_sizes == [8]


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("per_channel: true", "per_chanel: true", r"passes[0].per_chanel: unknown key.*line 7"),
        ("per_channel: true", "per_channel: maybe", r"passes[0].per_channel: .*boolean.*line 7"),
        ("quantize.static", "quantize.statc", "did you mean 'quantize.static'"),
        ("version: 1", "version: 1\nexprt: {}", r"exprt: unknown key.*line 2"),
        ("batch_sizes: [8]", "batch_sizes: [0]", "report.batch_sizes"),
        ("limit: 64", "limit: -3", r"data.calibration.limit: .*greater than 0.*line 3"),
    ],
)
def test_bad_values_name_key_and_line(tmp_path, replace, by, expected):
    path = write_config(tmp_path, CNN_CONFIG.replace(replace, by))
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(path)


def test_every_problem_is_reported_on_one_line(tmp_path):
    text = CNN_CONFIG.replace("per_channel: true", "per_channel: 3").replace(
        "version: 1", "version: 2"
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(write_config(tmp_path, text))
    message = str(info.value)
    assert "version" in message and "passes[0].per_channel" in message
    assert "\n" not in message


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML.*line"):
        load_recipe(write_config(tmp_path, "version: 1\npasses: [\n"))
    with pytest.raises(ConfigError, match="config .*: not found"):
        load_recipe(tmp_path / "absent.yaml")
