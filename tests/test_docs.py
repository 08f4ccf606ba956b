"""The generated reference pages of the docs site are what docs/generate.py writes from the
code now: a pass or a config key changed without `make docs` fails here, not only in make lint."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
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


PLUGIN = GENERATOR.parent / "examples" / "compress-round"
SAMPLES = GENERATOR.parent.parent / "sample_models"

# Runs in a child process, so that the example's pass stays out of this process's registry.
# Importing the module registers the pass, as its entry point does once the package is installed.
RUN_THE_PLUGIN = """
import sys

sys.path.insert(0, sys.argv[1])
import compress_round.rounding  # noqa: F401
from compress_cli.main import app


def compress(*args):
    try:
        app(list(args), prog_name="compress")
    except SystemExit as done:
        return done.code
    return 0


run = ("run", "model.pt2", "-c", "round.yaml", "--quiet", "--no-cache")
typo = ("--set", "passes[0].layers=[fetures.*]")
print("exit codes", compress(*run, "-o", "out"), compress(*run, *typo, "-o", "typo"))
"""


def test_the_plugin_example_of_writing_a_pass_runs(tmp_path):
    """docs/examples/compress-round, shown by "Writing a pass": its pass runs through
    `compress run` and its check_model refuses a pattern that matches no layer, so a change to
    the pass contract that breaks the example fails here, not in a reader's hands."""
    (tmp_path / "model.pt2").symlink_to(SAMPLES / "digits_cnn.pt2")
    (tmp_path / "round.yaml").write_text(
        "version: 1\n"
        f"data: {{eval: {{path: {SAMPLES / 'digits_eval.npz'}, inputs: [x], labels: y}}}}\n"
        "passes: [{type: weights.round, bits: 3}]\n"
        "report: {batch_sizes: [8], min_runs: 5, min_seconds: 0, max_seconds: 0.2}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", RUN_THE_PLUGIN, str(PLUGIN)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip().endswith("exit codes 0 2"), done.stdout + done.stderr
    assert "passes[0].layers: ['fetures.*'] matches no Linear or Conv layer" in done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    baseline, rounded = report["stages"]
    assert rounded["name"] == "weights.round"
    assert rounded["details"]["bits"] == 3
    assert len(rounded["details"]["layers"]) == 5  # features.0, 2, 5 (Conv2d), classifier.1, 3
    assert rounded["gzip_bytes"] < baseline["gzip_bytes"] / 2
    assert rounded["metric"]["value"] >= baseline["metric"]["value"] - 0.01
