"""Hostile configs and --set values: refused at load with one line, before anything runs."""

from __future__ import annotations

import os

import pytest

from compress.config.limits import MAX_CONFIG_BYTES, MAX_YAML_NODES
from compress.config.yaml_input import load_yaml
from compress.errors import ConfigError
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.paths import SAMPLES

CNN = SAMPLES / "digits_cnn.pt2"


def alias_bomb(levels: int = 9) -> str:
    """`a: [x x 9]`, `b: [*a x 9]`, ...: a few hundred bytes that expand to 9**levels values."""
    lines = ["    l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def refuse(tmp_path, text: str, *needles: str, overrides: tuple[str, ...] = ()):
    """The config is refused by `validate` and by `run`, with one line naming `needles`."""
    config = write_config(tmp_path, text)
    extra = [a for o in overrides for a in ("--set", o)]
    result = invoke("validate", config, *extra)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    out = tmp_path / "out"
    assert_refused(invoke("run", CNN, "-c", config, "-o", out, *extra), out, *needles)


def test_an_alias_bomb_inside_a_valid_config_is_refused(tmp_path):
    text = CNN_CONFIG.replace("version: 1\n", "version: 1\nmodel:\n  arch_args:\n")
    text = text.replace("model:\n  arch_args:\n", "model:\n  arch_args:\n" + alias_bomb() + "\n")
    refuse(tmp_path, text, f"more than {MAX_YAML_NODES:,} values", "line")


def test_deep_nesting_is_refused_without_recursing(tmp_path):
    refuse(tmp_path, CNN_CONFIG + "gates: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper")


def test_a_5000_digit_integer_is_refused(tmp_path):
    refuse(tmp_path, CNN_CONFIG.replace("[8]", "[" + "9" * 5000 + "]"), "too long", "line 8")


def test_an_integer_beyond_64_bits_is_refused_with_its_key(tmp_path):
    refuse(tmp_path, CNN_CONFIG + "seed: 99999999999999999999\n", "seed:", "out of range")


def test_a_list_that_contains_itself_is_refused(tmp_path):
    refuse(tmp_path, CNN_CONFIG + "gates: &g [*g]\n", "refers to itself")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("seed=1e26", "seed"),
        ("seed=-1", "seed"),
        ("report.threads=99999999", "report.threads"),
        ("report.batch_sizes=[100000000]", "report.batch_sizes[0]"),
        ("report.batch_sizes=[0]", "report.batch_sizes[0]"),
        ("export.parity_atol=.nan", "export.parity_atol"),
        ("gates.max_accuracy_drop=.inf", "gates.max_accuracy_drop"),
        ("passes[0].percentile=.nan", "passes[0].percentile"),
        ("model.arch_args={a: " + "[" * 100 + "]" * 100 + "}", "nested deeper"),
    ],
)
def test_out_of_range_values_are_refused_by_key(tmp_path, override, needle):
    refuse(tmp_path, CNN_CONFIG, needle, "--set", overrides=(override,))


def test_a_device_is_not_read_as_a_config(tmp_path):
    result = invoke("validate", "/dev/zero")
    assert result.exit_code == 2 and "is a character device, not a YAML file" in result.stderr


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    result = invoke("validate", fifo)
    assert result.exit_code == 2 and "is a named pipe (FIFO), not a YAML file" in result.stderr


def test_an_oversized_config_is_refused_before_it_is_parsed(tmp_path):
    config = tmp_path / "big.yaml"
    config.write_text(CNN_CONFIG + "# " + "x" * MAX_CONFIG_BYTES + "\n")
    result = invoke("validate", config)
    assert result.exit_code == 2 and "over the limit" in result.stderr


def test_a_config_that_is_not_utf8_is_refused(tmp_path):
    config = tmp_path / "latin.yaml"
    config.write_bytes(CNN_CONFIG.encode() + b"# caf\xe9\n")
    result = invoke("validate", config)
    assert result.exit_code == 2 and "not UTF-8" in result.stderr


def test_limits_leave_real_configs_alone():
    root, data = load_yaml(CNN_CONFIG + "anchors: {a: &a [1, 2], b: *a}\n", "x.yaml")
    assert data["anchors"]["b"] == [1, 2] and root is not None


def test_a_bomb_in_a_set_value_names_the_override():
    bomb = "{" + alias_bomb().replace("\n", ",").replace("    ", "") + "}"
    with pytest.raises(ConfigError, match=r"--set model.arch_args=.*more than"):
        from compress.config.overrides import parse_override

        parse_override("model.arch_args=" + bomb)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    text = "version: 1\npasses:\n  - {type: quantize.dynamic}\nreport: {threads: 1}\npasses: []\n"
    with pytest.raises(ConfigError, match=r"'passes' is given twice \(lines 2 and 5\)"):
        load_yaml(text, "config.yaml")
    nested = "report:\n  threads: 1\n  threads: 2\n"
    with pytest.raises(ConfigError, match=r"'threads' is given twice \(lines 2 and 3\)"):
        load_yaml(nested, "config.yaml")
    merged = "base: &b {threads: 1}\nreport:\n  <<: *b\n  batch_sizes: [1]\n"
    assert load_yaml(merged, "config.yaml")[1]["report"] == {"threads": 1, "batch_sizes": [1]}
