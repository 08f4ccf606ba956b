"""`model.arch`: the factory a config names ('file.py:Name' or 'package.module:Name'), imported
and called with `model.arch_args` to build a module for a state_dict or a distillation student.
Importing it runs the user's own code, by design: the config names it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from compress.errors import ConfigError, ModelLoadError, first_line


def build_arch(spec: str, arch_args: dict, base_dir: Path, key: str = "model"):
    """A new module from `key`.arch and `key`.arch_args (its weights as the factory makes them)."""
    import torch

    factory = import_arch(spec, base_dir, f"{key}.arch")
    try:
        module = factory(**arch_args)
    except Exception as e:
        raise ModelLoadError(
            f"{key}.arch: {spec}(**{key}.arch_args) failed: {first_line(e)}"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(
            f"{key}.arch: {spec}(**{key}.arch_args) returned a {type(module).__name__}, not a "
            "torch.nn.Module; name a module class or a function that returns one"
        )
    return module


def import_arch(spec: str, base_dir: Path, key: str = "model.arch"):
    """Resolve 'file.py:Name' (relative to the config) or 'package.module:Name'."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(
            f"{key}: {spec!r} must look like 'path/to/file.py:Factory' or 'package.module:Factory'"
        )
    try:
        if target.endswith(".py"):
            file = (base_dir / target).resolve()
            if not file.is_file():
                raise ModelLoadError(f"{key}: file not found: {file} (relative to the config)")
            module_spec = importlib.util.spec_from_file_location(
                f"_compress_arch_{file.stem}", file
            )
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # dataclasses and pickling look it up
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"{key}: cannot import {target}: {first_line(e)}") from None
    if not hasattr(module, attr):
        raise ModelLoadError(f"{key}: {target} has no {attr!r}")
    return getattr(module, attr)
