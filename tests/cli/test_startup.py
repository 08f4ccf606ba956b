"""`compress --help` and `--version` answer at once: they import no pydantic model, numpy, onnx,
torch or YAML reader, and of the library only the error classes and the interrupt guard."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT

HEAVY = ("numpy", "pydantic", "onnx", "onnxruntime", "torch", "yaml", "transformers", "ray")

STARTUP = """
import sys
from compress_cli.main import app
try:
    app(sys.argv[1:], prog_name="compress")
except SystemExit:
    pass
loaded = {name.split(".")[0] for name in sys.modules}
print(sorted(loaded & set(HEAVY)))
print(sorted(name for name in sys.modules if name.split(".")[0] == "compress"))
"""


@pytest.mark.parametrize("option", ["--help", "--version"])
def test_help_and_version_import_nothing_heavy(option):
    done = subprocess.run(
        [sys.executable, "-c", STARTUP.replace("HEAVY", repr(HEAVY)), option],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    *shown, heavy, library = done.stdout.strip().splitlines()
    assert shown, "nothing was printed"
    assert heavy == "[]"
    assert library == "['compress', 'compress.errors', 'compress.job', 'compress.job.interrupts']"
