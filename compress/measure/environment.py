"""The machine and the software a report was measured with, so a figure can be re-measured."""

from __future__ import annotations

import os
import platform
from typing import Any

from compress import __version__

# The instruction sets that decide int8 speed on x86 (VNNI: int8 dot products; AMX: tiles), and
# on Arm (dot product, int8 matrix multiply), as /proc/cpuinfo names them.
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "asimddp")
INT8_FLAGS += ("i8mm",)


def environment(threads: int, seed: int | None = None, pinned: bool = False) -> dict[str, Any]:
    """Versions, the CPU (model, int8 instruction sets, frequency governor) and cores, the ONNX
    Runtime thread count, whether the timing was pinned to cores, and the run's seed."""
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
        "cpu_flags": _cpu_flags(),
        "cpu_governor": _governor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,  # what this process may run on (containers often allow fewer)
        "threads": threads,
        "pinned": pinned and hasattr(os, "sched_setaffinity"),
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


def _cpu_flags() -> list[str]:
    """Which of INT8_FLAGS the CPU has (Linux); [] where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in INT8_FLAGS if flag in have]
    except OSError:
        pass
    return []


def _governor() -> str | None:
    """The CPU frequency governor (`performance`, `powersave`...), where the OS shows it."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            return f.read().strip() or None
    except OSError:
        return None
