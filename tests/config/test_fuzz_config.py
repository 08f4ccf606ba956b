"""Property-based fuzzing of configs: the recipes in configs/, mutated by hypothesis (values of
every type and size at every key, keys removed and added, --set overrides), go through
`compress validate` and the start of `compress run`. Whatever the input: exit 0 or 2, at most one
line on stderr, no traceback, no "internal error", and nothing written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from compress.batch.overrides import absolute_paths, read_yaml
from tests.helpers.cli import invoke
from tests.helpers.fuzz import FUZZ, KEYS, PLAUSIBLE_TEXT, VALUES, examples, override_texts
from tests.helpers.paths import CONFIGS, ROOT

VALIDATE_EXAMPLES = examples(200)
RUN_EXAMPLES = examples(100)

# Each recipe with the model its header says it runs on; paths made absolute so that a mutated
# copy can be written anywhere.
RECIPES = [
    (
        absolute_paths(read_yaml(path), path.parent),
        ROOT / re.search(r"compress run (\S+)", path.read_text()).group(1),
    )
    for path in sorted(CONFIGS.glob("*.yaml"))
]


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in the config tree a value sits, except architectures: a mutated `arch` may
    name any importable module, and importing modules is by design (the README says so)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("arch", "student"):
                found += paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths_of(value, (*prefix, index))
    return found


@st.composite
def mutated_recipes(draw) -> tuple[dict, Path, list[str]]:
    """(a recipe changed in 1-3 places, its model, --set overrides)."""
    config, model = draw(st.sampled_from(RECIPES))
    config = yaml.safe_load(yaml.safe_dump(config))  # a copy to change
    for _ in range(draw(st.integers(1, 3))):
        places = paths_of(config)
        where = draw(st.sampled_from(places)) if places else ()
        *parents, last = where or ("seed",)
        node = config
        for part in parents:
            node = node[part]
        action = draw(st.sampled_from(["nudge", "nudge", "nudge", "replace", "delete", "add"]))
        if action == "delete" and isinstance(node, dict):
            node.pop(last, None)
        elif action == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(KEYS))] = draw(VALUES)
        elif action == "nudge" and where:
            node[last] = draw(nudged(node[last]))
        else:
            node[last] = draw(VALUES)
    overrides = draw(st.lists(override_texts(), max_size=2))
    return config, model, overrides


def nudged(value: Any) -> st.SearchStrategy:
    """A value of the same kind, at the edges a validator must know about: most mutations then
    get past the schema and reach the checks that need the data and the model."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        edges = [0, 1, -1, 2, 7, 2**31, 2**32, 2**63 - 1, 10**6, value - 1, value + 1, value * 64]
        return st.sampled_from(edges)
    if isinstance(value, float):
        edges = [0.0, 1.0, -0.5, 0.999999, 1e-30, 1e30, value / 10, value * 10]
        return st.one_of(st.sampled_from(edges), st.floats(-2, 2))
    if isinstance(value, str):
        return st.sampled_from([*PLAUSIBLE_TEXT, value + "x", value.upper()])
    if isinstance(value, list):
        return st.one_of(
            st.just(value[:-1]), st.just(value + value[-1:]), st.just(value[::-1]), st.just([])
        )
    return st.just(value)


def write_yaml(folder: Path, config: Any) -> Path:
    path = folder / "fuzzed.yaml"
    try:
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
    except (yaml.YAMLError, UnicodeEncodeError):
        path.write_text("version: 1\n")
    return path


def assert_clean_outcome(result, folder: Path, before: set[str]) -> None:
    event(f"exit {result.exit_code}")  # pytest --hypothesis-show-statistics: how many got past
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    if result.exit_code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    written = {p.name for p in folder.iterdir() if not (p.is_dir() and not any(p.iterdir()))}
    assert written == before, "a refused config wrote a file"


def fresh_folder(base: Path) -> Path:
    folder = base / "case"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


@settings(FUZZ, max_examples=VALIDATE_EXAMPLES)
@given(case=mutated_recipes())
def test_validate_never_crashes(tmp_path, case):
    config, _, overrides = case
    folder = fresh_folder(tmp_path)
    path = write_yaml(folder, config)
    result = invoke("validate", path, *[a for o in overrides for a in ("--set", o)])
    assert_clean_outcome(result, folder, {path.name})


@pytest.fixture
def stop_after_checks(monkeypatch):
    """`compress run` that stops (exit 0) once everything before the work has been checked."""
    import compress.job.pipeline

    real_job = compress.job.pipeline._job

    def prepare_then_stop(*args, **kwargs):
        job = real_job(*args, **kwargs)
        shutil.rmtree(job.context.workdir, ignore_errors=True)
        raise typer.Exit(0)

    monkeypatch.setattr(compress.job.pipeline, "_job", prepare_then_stop)


@settings(FUZZ, max_examples=RUN_EXAMPLES)
@given(case=mutated_recipes())
def test_the_start_of_run_never_crashes(tmp_path, stop_after_checks, case):
    config, model, overrides = case
    folder = fresh_folder(tmp_path)
    path = write_yaml(folder, config)
    out = folder / "out"
    extra = [a for o in overrides for a in ("--set", o)]
    result = invoke("run", model, "-c", path, "-o", out, "--quiet", *extra)
    assert_clean_outcome(result, folder, {path.name})
