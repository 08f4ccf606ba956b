"""Plain output (no colour, no progress animation) off a terminal or with NO_COLOR set: checked
on real processes whose stdout and stderr are a pipe, or a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest

from tests.helpers.onnx_builders import small_onnx
from tests.helpers.paths import ROOT

ESCAPE = b"\x1b["  # every colour, style and cursor movement starts so
PROGRESS = """
import time
from compress_cli.progress import terminal_progress

with terminal_progress("fine-tune", 20) as steps:
    for _ in range(20):
        time.sleep(0.02)
        steps.advance()
"""


def in_terminal(command: list[str], env: dict[str, str]) -> bytes:
    """Everything `command` writes to stdout and stderr, both a pseudo-terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=ROOT
    )
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.5)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # the process closed the terminal
            break
        if ready and not chunk:
            break
        output += chunk
        if not ready and process.poll() is not None:
            break
    process.wait(timeout=120)
    os.close(leader)
    return output


def piped(command: list[str], env: dict[str, str]) -> bytes:
    done = subprocess.run(command, capture_output=True, env=env, cwd=ROOT, timeout=120)
    return done.stdout + done.stderr


def environment(no_color: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return {**env, "NO_COLOR": "1"} if no_color else env


@pytest.mark.parametrize(
    ("where", "no_color", "drawn"),
    [(in_terminal, False, True), (in_terminal, True, False), (piped, False, False)],
    ids=["terminal", "terminal-NO_COLOR", "pipe"],
)
def test_progress_bars_are_drawn_only_on_a_terminal_without_no_color(where, no_color, drawn):
    output = where([sys.executable, "-c", PROGRESS], environment(no_color))
    assert (ESCAPE in output) is drawn, output[:200]
    assert (b"fine-tune" in output) is drawn  # nothing at all is left when not drawn


@pytest.fixture(scope="module")
def run_command(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    model = small_onnx(folder / "m.onnx")
    config = folder / "c.yaml"
    config.write_text(
        "version: 1\nmodel: {inputs: [{name: x, shape: [batch, 1, 8, 8]}]}\n"
        "passes: [{type: quantize.dynamic}]\n"
        "report: {batch_sizes: [2], min_runs: 5, min_seconds: 0, max_seconds: 0.1}\n"
    )
    outs = iter(range(10))
    return lambda: [
        sys.executable, "-m", "compress_cli", "run", str(model), "-c", str(config),
        "-o", str(folder / f"out{next(outs)}"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "no_color", "decorated"),
    [(in_terminal, False, True), (in_terminal, True, False), (piped, False, False)],
    ids=["terminal", "terminal-NO_COLOR", "pipe"],
)
def test_a_run_prints_plain_text_off_a_terminal_or_with_no_color(
    run_command, where, no_color, decorated
):
    output = where(run_command(), environment(no_color))
    assert b"compression report" in output and b"quantize.dynamic" in output
    assert (ESCAPE in output) is decorated, output[:300]
