"""compress: turn a saved PyTorch model into one checked, measured ONNX file.

The folders are the architecture: `config/` (the config's models, overrides, schema, starter),
`models/` (loading every saved format, untrusted), `job/` (one run: preflight, context, pipeline,
speed guard, safe output), `passes/` (the pass contract, the registry, pruning, distillation,
weight sharing), `quant/` (all quantization: int8, auto, fp16, int4, sensitivity), `torch/`
(editable modules, export, training, pruning glue), `measure/`, `data/`, `report/`
(report.json's models and its views), `cache/`, `batch/`, `sweep/`. The library never imports
typer or rich; heavy dependencies (torch, onnxruntime) are imported where used, so that
listing passes or validating a config stays fast.
"""

__version__ = "0.1.0"

import os as _os

# torch's OpenMP threads spin while they wait for work. When the cores are shared (a CI runner,
# `compress batch` jobs, a second process), spinning threads starve each other: an epoch of the
# sample transformer took 4.2 s instead of 0.7 s with sleeping threads. Set before torch loads;
# a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
