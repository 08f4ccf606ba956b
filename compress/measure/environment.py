"""The machine and the software a report was measured with, so a figure can be re-measured."""

from __future__ import annotations

import os
import platform
from typing import Any

from compress import __version__


def environment(threads: int, seed: int | None = None) -> dict[str, Any]:
    """Versions, CPU model and cores, the ONNX Runtime thread count and the run's seed."""
    import numpy
    import onnx
    import onnxruntime
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "compress": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,  # what this process may run on (containers often allow fewer)
        "threads": threads,
        **({"seed": seed} if seed is not None else {}),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
