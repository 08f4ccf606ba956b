"""`compress batch` writes nothing through a link planted in its output folder, and a worker it
kills at the timeout leaves no work folder behind."""

from __future__ import annotations

import json
import os
import tempfile

from tests.helpers.batch import good_models, misbehaving_model, statuses
from tests.helpers.cli import invoke
from tests.helpers.configs import write_config
from tests.helpers.output import FAST_CONFIG, contents, work_folders


def test_planted_links_are_not_followed_and_a_killed_worker_is_cleaned_up(tmp_path, monkeypatch):
    models, out, outside = tmp_path / "models", tmp_path / "out", tmp_path / "outside"
    good_models(models, "a.onnx", "vision/b.onnx")
    misbehaving_model(models, "hang.pt", "hang")
    (tmp_path / "cfg").mkdir()
    config = write_config(tmp_path / "cfg", FAST_CONFIG)
    (outside / "folder").mkdir(parents=True)
    (out / "a.onnx").mkdir(parents=True)
    for name in ("log.txt", "done.json", "config.yaml", "summary.json"):
        (outside / name).write_text(f"victim {name}")
        (out / ("a.onnx" if name != "summary.json" else "") / name).symlink_to(outside / name)
    (out / "vision").symlink_to(outside / "folder")  # b.onnx's outputs would land outside
    before = contents(outside)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))  # the workers' temporary folders go here
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))

    # The good models must finish within the timeout on a loaded machine (make test runs two
    # workers); the hanging one sleeps through it, which costs no CPU.
    arguments = ("-o", out, "--force", "-j", "2", "--trust-pickle", "--timeout-per-model", "12")
    result = invoke("batch", models, "-c", config, *arguments, "--json")
    assert result.exit_code == 1, result.stderr
    rows = statuses(json.loads(result.stdout))
    assert rows["a.onnx"][0] == "ok" and rows["hang.pt"][0] == "timed_out"
    assert rows["vision/b.onnx"][0] == "failed" and "not a folder" in rows["vision/b.onnx"][1]
    assert contents(outside) == before and os.listdir(outside / "folder") == []
    assert not (out / "a.onnx" / "log.txt").is_symlink() and (out / "summary.json").is_file()
    assert work_folders(tmpdir) == []  # the hung worker was SIGKILLed inside its work folder
    assert sorted(os.listdir(out / "hang.pt")) == ["config.yaml", "done.json", "log.txt"]
