"""Helpers for the output-safety and cancel tests: a fast job, what a folder holds, and small
tmpfs mounts (a full disk, a read-only folder) where this machine lets the tests make them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.configs import write_config
from tests.helpers.onnx_builders import small_onnx

# An untrained Flatten+Linear ONNX model and dynamic int8: a whole run in about a second.
FAST_CONFIG = """\
version: 1
data:
  eval: {path: digits_eval.npz, inputs: [x], labels: y, limit: 64}
passes:
  - type: quantize.dynamic
report: {batch_sizes: [8], min_runs: 5, min_seconds: 0, warmup_runs: 0, max_seconds: 0.2}
"""
RESULTS = ("model.onnx", "report.json", "report.md", "report.html")


def fast_job(folder: Path) -> tuple[Path, Path]:
    """(an ONNX model, a config beside its data) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return small_onnx(folder / "in.onnx"), write_config(folder, FAST_CONFIG)


def contents(folder: Path) -> dict[str, str]:
    """Every entry of `folder` (hidden ones too): a link's target, a file's sha256."""
    if not folder.is_dir():
        return {}
    found = {}
    for entry in sorted(os.listdir(folder)):
        path = folder / entry
        if path.is_symlink():
            found[entry] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[entry] = "folder"
        else:
            found[entry] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def work_folders(tmpdir: Path) -> list[str]:
    return sorted(name for name in os.listdir(tmpdir) if name.startswith("compress-"))


def previous_results(out: Path) -> dict[str, str]:
    """OUT as an earlier run left it, plus a file of the user's; what it holds now."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULTS:
        (out / name).write_text(f"old {name}")
    (out / "keep.txt").write_text("mine")
    return contents(out)


def assert_one_error(stderr: str, *needles: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted at `path` (made here); skips the test where mounting is not
    allowed (not root, or a container without the capability), and always unmounts."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_folder(path: Path):
    """An empty folder no one may write to: a read-only tmpfs as root (root ignores permission
    bits), else mode 0555."""
    if os.geteuid() == 0:
        with tmpfs(path, "64k", read_only=True):
            yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)
