"""`compress schema`: a JSON Schema that accepts every recipe and describes every pass."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG
from tests.helpers.paths import CONFIGS


@pytest.fixture(scope="module")
def schema():
    result = invoke("schema")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(found)  # itself a valid JSON Schema
    return found


def _errors(schema, config):
    return list(jsonschema.Draft202012Validator(schema).iter_errors(config))


def _messages(errors) -> str:
    """Every message, those inside a oneOf's branches too."""
    return " ".join(m for e in errors for m in [e.message, _messages(e.context)])


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_is_valid_against_the_schema(schema, recipe):
    assert _errors(schema, yaml.safe_load(recipe.read_text())) == []


def test_every_registered_pass_has_a_branch_with_its_params(schema):
    from compress.passes.registry import all_passes

    branches = schema["properties"]["passes"]["items"]["oneOf"]
    by_type = {}
    for branch in branches:
        definition = schema["$defs"][branch["$ref"].split("/")[-1]]
        by_type[definition["properties"]["type"]["const"]] = definition
    assert set(by_type) == set(all_passes())  # test.identity too: it comes from the registry
    static = by_type["quantize.static"]["properties"]
    assert static["per_channel"]["type"] == "boolean"
    assert set(static["calibration"]["enum"]) == {"minmax", "entropy", "percentile", "auto"}
    assert static["smooth_alpha"]["anyOf"][0]["maximum"] == 1
    assert by_type["prune.channels"]["required"] == ["amount", "type"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c["passes"][0].update(per_chanel=True), "per_chanel"),
        (lambda c: c["passes"][0].update(per_channel="yes"), "'yes' is not of type 'boolean'"),
        (lambda c: c["passes"][0].update(type="quantize.statc"), "quantize.statc"),
        (lambda c: c["report"].update(batch_sizes=[0]), "0 is less than the minimum of 1"),
        (lambda c: c.update(exprt={}), "exprt"),
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(schema, change, reason):
    config = yaml.safe_load(CNN_CONFIG)
    assert _errors(schema, config) == []
    change(config)
    errors = _errors(schema, config)
    assert errors and reason in _messages(errors)
