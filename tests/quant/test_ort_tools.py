"""An int8 run on an ONNX model never imports torch: ONNX Runtime's pre-processing imports
`onnxruntime.tools`, whose `__init__` would import torch's export helpers (2.7 s a run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers.output import fast_job
from tests.helpers.paths import ROOT

RUN = """
import json, sys
from compress_cli.main import app
try:
    app(["run", *sys.argv[1:]], prog_name="compress")
except SystemExit as e:
    code = e.code
import onnxruntime.tools
helper = onnxruntime.tools.infer_input_info  # the stand-in's: imports the real one when called
print(json.dumps([code, "torch" in sys.modules, helper.__module__]))
"""


def test_an_int8_run_on_an_onnx_model_imports_no_torch(tmp_path):
    model, config = fast_job(tmp_path / "job")  # quantize.dynamic: pre-processed by ONNX Runtime
    command = [sys.executable, "-c", RUN, str(model), "-c", str(config), "-o", str(tmp_path / "o")]
    env = {**os.environ, "COMPRESS_NO_CACHE": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    code, torch_loaded, helper = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 0, done.stderr
    assert "pre-processing" not in done.stderr  # it ran, with symbolic shapes: nothing failed
    assert torch_loaded is False
    assert helper == "compress.quant.ort_tools"
