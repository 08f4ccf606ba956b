"""The machine and the software a report was measured with, so a figure can be re-measured."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

from compress import __version__

# The instruction sets that decide int8 speed on x86 (VNNI: int8 dot products; AMX: tiles), and
# on Arm (dot product, int8 matrix multiply), as /proc/cpuinfo names them.
INT8_FLAGS: tuple[str, ...] = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "asimddp",
)
INT8_FLAGS += ("i8mm",)


def package_version(name: str) -> str:
    """An installed package's version, read from its metadata: no import (torch's takes seconds,
    and a run whose torch stages come from the stage cache never needs it)."""
    return importlib.metadata.version(name)


def environment(threads: int, seed: int | None = None, pinned: bool = False) -> dict[str, Any]:
    """Versions, the CPU (model, int8 instruction sets, frequency governor) and cores, the ONNX
    Runtime thread count, whether the timing was pinned to cores, and the run's seed."""
    return {
        "compress": __version__,
        "python": platform.python_version(),
        **{name: package_version(name) for name in ("torch", "onnx", "onnxruntime", "numpy")},
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_flags": cpu_flags(INT8_FLAGS),
        "cpu_governor": _governor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": _usable_cpus(),
        "threads": threads,
        "pinned": pinned and hasattr(os, "sched_setaffinity"),
        **({"seed": seed} if seed is not None else {}),
    }


def machine_fingerprint() -> dict[str, Any]:
    """What a latency figure is only valid on: this host, its CPU, the cores this process may
    use. A stage timed in an earlier run is carried into a later one only where it matches."""
    return {
        "host": platform.node(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": _usable_cpus(),
    }


def _usable_cpus() -> int | None:
    """The cores this process may run on (containers often allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(names: tuple[str, ...]) -> list[str]:
    """Which of `names` the CPU has, in their order (Linux); [] where /proc/cpuinfo cannot be
    read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in names if flag in have]
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
