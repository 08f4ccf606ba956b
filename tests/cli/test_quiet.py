"""What libraries print stays off the terminal unless --debug; compress's own lines get through."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, os, sys, warnings
from compress_cli.errors import reported_errors, stderr
from compress.errors import DataError
debug = sys.argv[1] == "debug"
try:
    with reported_errors(debug, library_stdout_hidden=True):
        logging.getLogger("onnxscript").warning("Evaluation failed: cannot reshape")
        warnings.warn("a library's RuntimeWarning", RuntimeWarning)
        os.write(2, b"[W:onnxruntime] native line\\n")
        print("a library's print")
        stderr.print("progress line", markup=False)
        raise DataError("data.eval: the one line")
except Exception as e:  # typer.Exit
    print("exit", e.exit_code)
"""


def run_script(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120
    )


def test_library_output_is_hidden_and_the_error_is_one_line():
    result = run_script("plain")
    assert result.stderr.splitlines() == ["progress line", "error: data.eval: the one line"]
    assert "exit 2" in result.stdout and "a library's print" not in result.stdout


def test_debug_shows_everything():
    result = run_script("debug")
    for text in ("Evaluation failed", "RuntimeWarning", "native line", "Traceback"):
        assert text in result.stderr, result.stderr
    assert "a library's print" in result.stdout
