"""The fixtures the tests share (helpers that are not fixtures live in tests/helpers/)."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.helpers.passes  # noqa: F401  registers test.identity for every test
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.paths import SAMPLES


@pytest.fixture(scope="session", autouse=True)
def no_stage_cache():
    """Every run computes its stages (as `--no-cache`), so a test sees the passes it sets up run;
    the stage cache's own tests turn it on with a folder of their own (`stage_cache`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPRESS_NO_CACHE", "1")
        patch.delenv("COMPRESS_CACHE_DIR", raising=False)
        yield


@pytest.fixture(scope="session", autouse=True)
def exports_made_once(tmp_path_factory):
    """Each torch -> ONNX export of this session made once, later ones copied
    (tests/helpers/export_memo.py): in compress runs in this process and in the tests that call
    compress.torch.export.export_to_onnx. The memo folder is the session's, shared by the
    workers."""
    import os

    from compress.job import pipeline
    from compress.torch import export
    from tests.helpers.export_memo import ExportMemo

    session = tmp_path_factory.getbasetemp()
    session = session.parent if os.environ.get("PYTEST_XDIST_WORKER") else session
    once = ExportMemo(session / "export-memo").wrap(export.export_to_onnx)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_to_onnx", once)
        patch.setattr(pipeline, "export_to_onnx", once)
        yield


@pytest.fixture
def stage_cache(tmp_path, monkeypatch) -> Path:
    """A stage cache of the test's own, on for `compress run` in-process and in workers."""
    folder = tmp_path / "stage-cache"
    monkeypatch.delenv("COMPRESS_NO_CACHE", raising=False)
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session", autouse=True)
def every_report_matches_its_schema(tmp_path_factory):
    """After the whole session: every report.json a run wrote (under pytest's temp folders)
    validates against `compress schema --report`. Hand-made reports (no provenance) and those
    of another major version (the refusal tests) are not runs' and are left out."""
    yield
    import json

    import jsonschema

    from compress.report.model import SCHEMA_VERSION, major_version, report_schema

    validator = jsonschema.Draft202012Validator(report_schema())
    problems = []
    for path in tmp_path_factory.getbasetemp().rglob("report.json"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):  # the hostile-file tests' own
            continue
        if not isinstance(report, dict) or "provenance" not in report:
            continue
        if major_version(report.get("schema_version")) != SCHEMA_VERSION:
            continue
        problems += [f"{path}: {error.message}" for error in validator.iter_errors(report)]
    assert not problems, "\n".join(problems[:20])


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny model folders written by save_pretrained (tests/helpers/hf_folders.py), made once
    for the session: tests read them and copy one to break it."""
    from tests.helpers.hf_folders import write_folders

    return write_folders(tmp_path_factory.mktemp("hf_folders"))


@pytest.fixture(scope="session")
def toy_programs(tmp_path_factory) -> dict[str, Path]:
    """Causal LMs saved as .pt2 (tests/helpers/program_decoders.py), made once for the session:
    "cache", a toy that takes its key/value cache as the docs export one, and "no_cache", a toy
    over whole sequences."""
    from tests.helpers.program_decoders import save_toy, save_toy_without_cache

    folder = tmp_path_factory.mktemp("toy_programs")
    return {
        "cache": save_toy(folder / "toy.pt2"),
        "no_cache": save_toy_without_cache(folder / "toy_no_cache.pt2"),
    }


@pytest.fixture
def cnn_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, CNN_CONFIG)


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two finished runs of the CNN (static int8; dynamic int8 set from the command line), for
    the tests that render, compare and re-read reports. Their output folders, in that order."""
    folder = tmp_path_factory.mktemp("two_runs")
    config = write_config(folder, CNN_CONFIG + "gates: {min_size_ratio: 3, max_size_mb: 0.01}\n")
    outs = (folder / "static", folder / "dynamic")
    dynamic = ("--set", "passes=[{type: quantize.dynamic}]")
    for out, extra in zip(outs, ((), dynamic), strict=True):
        result = invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, *extra)
        assert result.exit_code == 3, result.stderr  # max_size_mb fails: a failed gate to show
    return outs


@pytest.fixture(scope="session")
def chromium():
    from tests.helpers.browser import Chromium, chromium_or_skip

    browser = Chromium(chromium_or_skip())
    yield browser
    browser.close()
