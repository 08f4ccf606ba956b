"""The dynamo exporter's table of ONNX functions, read once per process.

At every call, `torch.onnx.export(dynamo=True)` builds its registry of torchlib functions
anew: it reads the Python source of onnxscript's ~500 ATen functions again (0.85 s here) and
registers them for the opset (0.25 s). That is a second of every export, half of a small CNN's:
a run exports once per torch stage, and a warm batch server's jobs each export. Both depend only
on the installed onnxscript and the opset. `read_once()` makes the exporter read the functions
once per process and hand each export its own copy of the registry for the opset, so that an
export that registers custom ops changes its copy only. A warm server calls it before it
forks, so its jobs inherit the table.

Where torch or onnxscript lack what is wrapped here (another version), nothing is changed.
"""

from __future__ import annotations

import functools
import importlib
import threading
from typing import Any

_lock = threading.Lock()
_read: Any = None  # onnxscript's get_torchlib_ops, once wrapped; False where it cannot be


def read_once(now: bool = False) -> None:
    """Make the exporter read torchlib's functions once per process (idempotent); `now`: read
    them at once (a server about to fork its jobs)."""
    global _read
    with _lock:
        if _read is None:
            _read = _wrap() or False
    if now and _read:
        _read()


def _wrap():
    """Wrap the exporter's two builders; the cached reader, or None where they are not there."""
    try:
        from torch.onnx._internal._lazy_import import onnxscript_apis
        from torch.onnx._internal.exporter import _registration

        apis = importlib.import_module(onnxscript_apis._name)
        registry_class = _registration.ONNXRegistry
        build = registry_class.from_torchlib.__func__
        read = functools.cache(apis.get_torchlib_ops)
    except (ImportError, AttributeError):
        return None
    apis.get_torchlib_ops = read
    registry_class.from_torchlib = classmethod(_copied(functools.cache(build)))
    return read


def _copied(built):
    """`from_torchlib` handing out a copy of the registry built once per (class, opset)."""

    def from_torchlib(cls, *args: Any, **kwargs: Any):
        kept = built(cls, *args, **kwargs)
        registry = cls()
        registry._opset_version = kept._opset_version
        registry.functions = {target: list(metas) for target, metas in kept.functions.items()}
        return registry

    return from_torchlib
