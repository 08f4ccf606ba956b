"""The library's layers hold: imports point one way (tests/import_graph.LAYERS), with no circle
across folders; the config and the measurements load no pass, `compress/` never imports the CLI's
typer or rich, and every command maps errors the same way (a broken pass plugin included)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from compress.passes import registry
from tests.helpers.cli import invoke
from tests.helpers.import_graph import LAYERS, circles, folder, read_graph
from tests.helpers.paths import ROOT

# Circles inside one folder, held apart by imports inside functions or for type checking only.
# Allowed within a folder (it is one room), but none may be added: fold one away, never add one.
KNOWN_CIRCLES = [
    ["compress.config.overrides", "compress.config.yaml_input"],
    ["compress.data", "compress.data.csv_table", "compress.data.images", "compress.data.text"],
    [
        "compress.models",
        "compress.models.hf_folder",
        "compress.models.hf_load",
        "compress.models.hf_tokenizer",
    ],
    ["compress.quant.fallback", "compress.quant.ranking"],
    ["compress.report.html", "compress.report.sensitivity"],
    ["compress.sweep.render", "compress.sweep.runner"],
    ["compress.torch.head_pruning", "compress.torch.program_attention"],
]

IMPORTS = """
import sys
def passes():
    return sorted(m for m in sys.modules if m.startswith("compress.passes"))
import compress.config, compress.measure.latency, compress.measure.evaluate
import compress.measure.size, compress.measure.environment
print(passes())
import compress.report
print(passes(), "typer" in sys.modules, "rich" in sys.modules)
"""


@pytest.fixture(scope="module")
def graph():
    return read_graph(ROOT)


def test_every_folder_of_the_library_has_a_layer(graph):
    assert {folder(module) for module in graph.modules} == set(LAYERS)


def test_no_import_points_up_a_layer(graph):
    rank = {name: index for index, name in enumerate(LAYERS)}
    upward = [(a, b) for a, b in graph.all_edges() if rank[folder(b)] > rank[folder(a)]]
    assert upward == []


def test_no_circle_across_folders(graph):
    between = {(folder(a), folder(b)) for a, b in graph.all_edges() if folder(a) != folder(b)}
    assert circles(sorted(between)) == []


def test_no_circle_at_import_time_and_no_new_circle_inside_a_folder(graph):
    assert circles(graph.edges(graph.at_import)) == []
    assert circles(graph.all_edges()) == KNOWN_CIRCLES


def test_the_config_and_the_measurements_load_no_pass_and_no_cli_library():
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS], capture_output=True, text=True, cwd=ROOT, check=True
    )
    config_and_measures, report = done.stdout.strip().splitlines()
    assert config_and_measures == "[]"  # not even the pass contract
    assert report == "['compress.passes', 'compress.passes.base'] False False"  # Details' types


def test_no_module_of_the_library_imports_typer_or_rich():
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "compress").rglob("*.py")
        for line in path.read_text().splitlines()
        if line.strip().startswith(("import typer", "from typer", "import rich", "from rich"))
    ]
    assert offenders == []


@pytest.fixture
def broken_plugin(monkeypatch):
    plugin = EntryPoint("broken", "no_such_module_here:Pass", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [plugin])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)


@pytest.mark.parametrize("command", [["passes"], ["passes", "--json"], ["schema"]])
def test_a_broken_pass_plugin_is_one_line_and_exit_2(broken_plugin, command):
    result = invoke(*command)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the pass plugin 'broken'" in lines[0]
    assert "ModuleNotFoundError" in lines[0] and "uninstall" in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_plugins_traceback(broken_plugin):
    result = invoke("passes", "--debug")
    assert result.exit_code == 2 and "Traceback" in result.stderr


@pytest.mark.parametrize(
    "command", ["run", "analyze", "batch", "bench", "validate", "init", "report", "passes"]
)
def test_shared_options_read_the_same_in_every_command(command):
    help_text = invoke(command, "--help").stdout
    assert "--debug" in help_text and "Show tracebacks." in help_text


@pytest.fixture(scope="module")
def written_report(tmp_path_factory) -> dict:
    from compress.job.pipeline import run
    from tests.helpers.configs import CNN_CONFIG, write_config
    from tests.helpers.paths import SAMPLES

    folder = tmp_path_factory.mktemp("report")
    report = run(SAMPLES / "digits_cnn.pt2", write_config(folder, CNN_CONFIG), folder / "o")
    written = json.loads((folder / "o" / "report.json").read_text())
    assert written == report.written()  # report.json is the Report's serialization
    return written


def test_a_written_report_reads_back_into_the_same_records(written_report):
    """Read back, every stage's details are its pass's own record again (chosen by the stage's
    name), and writing it gives the same JSON."""
    from compress.quant.int8 import QuantizeDetails
    from compress.quant.sensitivity import NodeDetails
    from compress.report.model import Report

    report = Report.read(written_report)
    assert isinstance(report.final.details, QuantizeDetails)
    assert isinstance(report.final.details.sensitivity.nodes[0], NodeDetails)
    assert report.written() == written_report


def test_schema_report_prints_the_schema_a_real_report_meets(written_report):
    import copy
    import json

    import jsonschema

    result = invoke("schema", "--report")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.validate(written_report, schema)
    changed = copy.deepcopy(written_report)
    changed["stages"][0]["latency_ms"]["8"]["p50"] = "fast"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(changed, schema)


@pytest.mark.parametrize(
    ("version", "accepted"), [(1, True), ("1.4", True), ("2.0", False), (2, False), ("x", False)]
)
def test_a_reader_takes_any_minor_version_and_refuses_a_newer_major(
    tmp_path, written_report, version, accepted
):
    import json

    from compress.errors import ReportFileError
    from compress.report.compare import load_report

    path = tmp_path / "from-a-newer-compress.json"  # not a run's: left out of the session check
    changed = written_report | {"schema_version": version, "added_later": 1}
    path.write_text(json.dumps(changed))
    if accepted:
        assert load_report(path).schema_version == version
        return
    with pytest.raises(ReportFileError, match="schema_version"):
        load_report(path)


def test_a_passs_checks_hand_their_state_to_apply_instead_of_keeping_it(tmp_path):
    """One pass contract: check_model returns what apply needs (distill's loaded teacher); no
    pass keeps anything of its own between check and apply."""
    import shutil

    from compress.job.preflight import prepare
    from compress.passes.distill import DistillPlan
    from tests.helpers.configs import write_config
    from tests.helpers.paths import SAMPLES

    text = (
        "version: 1\n"
        "data:\n"
        "  train: {path: digits_train.npz, inputs: [x], labels: y, limit: 64}\n"
        "  eval: {path: digits_eval.npz, inputs: [x], labels: y}\n"
        "passes:\n"
        "  - {type: prune.channels, amount: 0.5, finetune_epochs: 0}\n"
        "  - {type: distill, epochs: 1}\n"
    )
    job = prepare(SAMPLES / "digits_cnn.pt2", write_config(tmp_path, text), False, print)
    try:
        assert job.prepared["passes[0]"] is None
        plan = job.prepared["passes[1]"]
        assert isinstance(plan, DistillPlan) and plan.student is None and plan.judge is not None
        assert all(set(vars(p)) == {"params", "key"} for p in job.passes)
    finally:
        shutil.rmtree(job.context.workdir, ignore_errors=True)


def test_no_test_module_imports_another():
    """Shared test helpers live in tests/helpers/ (fixtures in conftest), so a test module can
    move or go without breaking others."""
    import re

    importing = re.compile(r"^\s*(from|import) tests(\.\w+)*\.test_")
    modules = list((ROOT / "tests").rglob("test_*.py"))
    offenders = [
        str(path.relative_to(ROOT))
        for path in modules
        for line in path.read_text().splitlines()
        if importing.match(line)
    ]
    assert len(modules) > 50 and offenders == []


def test_the_tests_are_laid_out_as_the_code_is():
    """tests/<folder>/ for compress/<folder>/, plus tests/cli/ for the commands end to end."""
    code = {p.name for p in (ROOT / "compress").iterdir() if (p / "__init__.py").exists()}
    folders = {p.parent.name for p in (ROOT / "tests").rglob("test_*.py")} - {"tests"}
    assert folders - code == {"cli"}
    assert all((ROOT / "tests" / folder / "__init__.py").exists() for folder in folders)


def test_a_test_named_after_a_module_sits_in_that_modules_folder():
    """tests/<folder>/test_<name>.py, where compress/<folder>/<name>.py (or package) is, or
    tests/cli/ for cli/<name>.py: a module that moves takes its tests with it
    (compress/passes/schema.py: tests/passes/test_schema.py)."""
    homes: dict[str, set[str]] = {}
    for path in (ROOT / "compress").rglob("*.py"):
        parts = path.relative_to(ROOT / "compress").parts
        if len(parts) > 1:  # in a folder: compress/<folder>/.../<name>.py or <name>/__init__.py
            name = path.parent.name if path.name == "__init__.py" else path.stem
            homes.setdefault(name, set()).add(parts[0])
    for path in (ROOT / "cli").glob("*.py"):  # tests/cli/test_report.py: `compress report`
        homes.setdefault(path.stem, set()).add("cli")
    misplaced = [
        str(test.relative_to(ROOT))
        for test in (ROOT / "tests").rglob("test_*.py")
        if (name := test.stem.removeprefix("test_")) in homes
        and test.parent.name not in homes[name] | {name}
    ]
    assert misplaced == []


def test_helpers_live_in_tests_helpers_and_conftest_holds_fixtures():
    """A module under tests/ is a test, a package's __init__, conftest.py or a helper in
    tests/helpers/; conftest.py defines fixtures and nothing else."""
    import ast

    stray = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if "golden" not in path.parts
        and "helpers" not in path.parts
        and not path.name.startswith("test_")
        and path.name not in ("__init__.py", "conftest.py")
    ]
    assert stray == []
    conftest = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    defined = [
        node
        for node in conftest.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Assign | ast.AnnAssign)
    ]
    not_fixtures = [
        getattr(node, "name", "an assignment")
        for node in defined
        if not any("fixture" in ast.unparse(d) for d in getattr(node, "decorator_list", []))
    ]
    assert defined and not_fixtures == []


def test_the_packages_installed_are_the_packages_in_the_tree():
    """pyproject.toml lists the packages (cli/ installs as compress_cli): a new subpackage that
    is not listed would be missing from an installed compress."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    in_tree = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "compress").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == in_tree | {"compress_cli"}
    assert setuptools["package-dir"] == {"compress_cli": "cli"}


def test_every_built_in_pass_declares_its_details_with_defaults():
    """One result type: a built-in pass's details are its own record, and every field has a
    default (a stage's details may hold only what the speed guard found)."""
    from compress.passes.base import OtherDetails, PassDetails

    for name, cls in registry.all_passes().items():
        if name.startswith("test."):
            continue
        assert issubclass(cls.Details, PassDetails) and cls.Details is not OtherDetails, name
        assert cls.Details(speed_guard="kept").written()["speed_guard"] == "kept", name


def test_a_record_refuses_unknown_keys_when_built_and_ignores_them_when_read():
    from pydantic import ValidationError

    from compress.quant.int8 import QuantizeDetails

    with pytest.raises(ValidationError, match="float_node"):
        QuantizeDetails(float_node=["conv"])  # misspelt: caught where it is written
    attempt = {"round": 0, "kept_in_float": 0, "metric": 0.9, "drop": 0.02, "met": False}
    attempt |= {"judged_on": "data.eval", "seconds": 1.0, "added_later": True}
    read = QuantizeDetails.read({"float_nodes": ["conv"], "attempts": [attempt], "later": 1})
    assert read.float_nodes == ["conv"] and read.attempts[0].drop == 0.02
    assert "added_later" not in read.written()["attempts"][0]


def test_a_plugins_details_given_as_a_dict_are_kept_and_read_back():
    from types import SimpleNamespace

    from compress.job.pipeline import _apply
    from compress.passes.base import OnnxPass, OnnxPassParams, PassInput, PassResult
    from compress.report.model import Stage

    class DictDetailsPass(OnnxPass):
        name = "someone.dict_details"  # not registered: as a plugin this install lacks

        def apply(self, given, ctx):
            return PassResult(details={"reason": "did it", "merged_layers": 3})

    ctx = SimpleNamespace(log=lambda message: None)
    details = _apply(0, DictDetailsPass(OnnxPassParams()), ctx, PassInput()).details
    assert details.reason == "did it" and details.merged_layers == 3
    assert details.lines() == ["did it"]
    figures = {"size_bytes": 1, "gzip_bytes": 1, "params": 1, "macs": 1, "sparsity": 0.0}
    latency = {"8": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "runs": 5, "stable": True}}
    written = {"name": "someone.dict_details", **figures, "latency_ms": latency, "threads": 1}
    written |= {"metric": None, "reverted": False, "details": details.written()}
    written |= {"slower_than_input": False, "slower_at_batch_sizes": []}
    assert Stage.read(written).written() == written


def test_details_from_another_version_of_a_pass_are_read_as_they_are():
    """A report whose stage details do not fit its pass's record now (another version wrote
    them) still loads: the details are kept as they are, not refused."""
    from compress.passes.base import OtherDetails
    from compress.report.model import Stage

    figures = {"size_bytes": 1, "gzip_bytes": 1, "params": 1, "macs": 1, "sparsity": 0.0}
    latency = {"8": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "runs": 5, "stable": True}}
    written = {"name": "quantize.static", **figures, "latency_ms": latency, "threads": 1}
    written |= {"metric": None, "reverted": False, "details": {"float_nodes": "conv, fc"}}
    written |= {"slower_than_input": False, "slower_at_batch_sizes": []}
    stage = Stage.read(written)
    assert isinstance(stage.details, OtherDetails)
    assert stage.written()["details"] == {"float_nodes": "conv, fc"}
