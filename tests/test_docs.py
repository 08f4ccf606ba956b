"""The generated reference pages of the docs site are what docs/generate.py writes from the
code now: a pass or a config key changed without `make docs` fails here, not only in make lint."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GENERATOR = Path(__file__).resolve().parent.parent / "docs" / "generate.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("docs_generate", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_pages_are_current():
    stale = load_generator().stale_pages()
    assert not stale, f"stale: {[page.name for page in stale]}; run `make docs` and commit them"


def test_a_plugin_pass_stays_out_of_the_reference():
    """The pages document compress, not what else is installed beside it."""
    generator = load_generator()
    schema = {
        "properties": {"passes": {"items": {"$ref": "#/$defs/Pass_x"}}},
        "$defs": {
            "Pass_x": {"properties": {"type": {"const": "x.plugin"}, "n": {"type": "integer"}}}
        },
    }
    passes = {"x.plugin": {"stage": "onnx", "summary": "A plugin.", "params": []}}
    assert "## x.plugin" in generator.passes_reference(passes, schema, builtin={"x.plugin"})
    assert "x.plugin" not in generator.passes_reference(passes, schema, builtin=set())
    assert generator.config_sections(schema, builtin=set()) == {}
