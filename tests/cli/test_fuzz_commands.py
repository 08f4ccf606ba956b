"""Property-based fuzzing of the commands that read what a user or another run left behind:
`compress report` on mutated report.json files, `compress sweep --vary` on generated grids, and
`compress cache` on a cache folder with planted files and odd environment values. Whatever the
input: exit 0 or 2, at most one line on stderr, no traceback, no "internal error"; and nothing
outside the cache is ever removed."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.cache import entry, key
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.fuzz import FUZZ, ODD_TEXT, VALUES, examples, override_texts
from tests.helpers.paths import SAMPLES

REPORT_EXAMPLES = examples(150)
VARY_EXAMPLES = examples(150)
CACHE_EXAMPLES = examples(100)

NUMBERS = st.one_of(
    st.sampled_from(["1" + "0" * 400, "1e400", "-1e400", "-5", "-0.0", "NaN", "Infinity", "0"]),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


def assert_one_line_or_ok(result) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def places(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for name, value in node.items():
            found += places(value, (*prefix, name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += places(value, (*prefix, index))
    return found


@pytest.fixture(scope="module")
def a_report(two_runs) -> dict:
    return json.loads((two_runs[0] / "report.json").read_text())


@settings(FUZZ, max_examples=REPORT_EXAMPLES)
@given(data=st.data())
def test_report_never_crashes_on_a_mutated_report(tmp_path, a_report, data):
    report = json.loads(json.dumps(a_report))
    texts = {}
    for number in range(data.draw(st.integers(1, 3))):
        *parents, last = data.draw(st.sampled_from(places(report)))
        node = report
        for part in parents:
            node = node[part]
        marker = f"__VALUE{number}__"
        node[last] = marker
        texts[marker] = data.draw(
            st.one_of(NUMBERS, VALUES.map(json.dumps), st.just('"x"'), st.just("null"))
        )
    text = json.dumps(report)
    for marker, value in texts.items():
        text = text.replace(f'"{marker}"', value)
    path = tmp_path / "given.json"  # not report.json: the session's schema check reads those
    path.write_text(text)
    fmt = data.draw(st.sampled_from(["table", "md", "html", "json"]))
    assert_one_line_or_ok(invoke("report", path, "--format", fmt))


@pytest.fixture
def sweep_checks_only(monkeypatch):
    """`compress sweep` that stops (exit 0) once its arguments and grid are checked; the
    model's fit (a warm child's work, the same for every grid) is left out."""
    import compress.sweep.runner as runner

    def stop(*args, **kwargs):
        raise typer.Exit(0)

    monkeypatch.setattr(runner, "check_fit", lambda options: None)
    monkeypatch.setattr(runner, "run_sweep", stop)


@st.composite
def vary_texts(draw) -> str:
    key_and_value = draw(override_texts())
    more = draw(st.lists(st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=6)), max_size=3))
    return ",".join([key_and_value, *more])


@settings(FUZZ, max_examples=VARY_EXAMPLES)
@given(varies=st.lists(vary_texts(), max_size=3))
def test_sweep_never_crashes_on_a_generated_grid(tmp_path, sweep_checks_only, varies):
    config = tmp_path / "config.yaml"
    if not config.exists():
        write_config(tmp_path, CNN_CONFIG)
    out = tmp_path / "out"
    args = [a for text in varies for a in ("--vary", text)]
    result = invoke("sweep", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, *args)
    assert_one_line_or_ok(result)
    assert not out.exists()  # checks only: nothing was written


PLANTED = st.sampled_from(
    [
        "stages/{key}/entry.json",
        "stages/{key}/model.onnx",
        "stages/notes.txt",
        "tmp/0123456789abcdef/model.onnx",
        "tmp/mine.txt",
        "locks/{key}.lock",
        "compress-cache.json",
        "secret",
    ]
)


USERS_OWN = ("stages/notes.txt", "tmp/mine.txt")


@settings(FUZZ, max_examples=CACHE_EXAMPLES)
@given(
    planted=st.lists(st.tuples(PLANTED, st.binary(max_size=64)), max_size=3),
    variable=st.sampled_from(["COMPRESS_CACHE_MAX_MB", "COMPRESS_NO_CACHE", "XDG_CACHE_HOME"]),
    value=st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=8), NUMBERS),
    command=st.sampled_from(["info", "clear"]),
)
def test_cache_commands_never_crash_nor_remove_what_compress_did_not_make(
    tmp_path, monkeypatch, planted, variable, value, command
):
    folder = tmp_path / "case" / "cache"
    if folder.parent.exists():
        shutil.rmtree(folder.parent)
    entry(folder, "abc", b"a stage")
    outside = tmp_path / "case" / "mine.txt"
    outside.write_text("mine")
    for where, content in planted:
        path = folder / where.format(key=key("abc"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() or path.is_symlink():
            continue
        path.write_bytes(content)
    (folder / "stages" / "link").symlink_to(outside)
    if "\x00" not in value:
        monkeypatch.setenv(variable, value)
    result = invoke("cache", command, "--cache-dir", folder)
    assert_one_line_or_ok(result)
    assert outside.read_text() == "mine"
    users = [folder / where for where, _ in planted if where in USERS_OWN]
    assert all(path.exists() for path in users)  # names compress never makes stay
    assert os.path.islink(folder / "stages" / "link")
