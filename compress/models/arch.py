"""`model.arch`: the factory a config names ('file.py:Name' or 'package.module:Name'), imported
and called with `model.arch_args` to build a module for a state_dict or a distillation student.
Importing it runs the user's own code, by design: the config names it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from compress.errors import ConfigError, ModelLoadError, first_line
from compress.files import path_problem


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
    check_arch(spec, base_dir, key)
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            file = (base_dir / target).resolve()
            module_spec = importlib.util.spec_from_file_location(
                f"_compress_arch_{file.stem}", file
            )
            if module_spec is None or module_spec.loader is None:
                raise ModelLoadError(f"{key}: cannot import {file} as a Python module")
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


def check_arch(spec: str, base_dir: Path, key: str = "model.arch") -> None:
    """Refuse, before anything is imported, an architecture whose file or module is not there:
    'file.py:Name' must name a regular file, 'package.module:Name' a module on the Python path
    (found without importing it)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(
            f"{key}: {spec!r} must look like 'path/to/file.py:Factory' or 'package.module:Factory'"
        )
    if target.endswith(".py"):
        file = (base_dir / target).resolve()
        problem = path_problem(file, "a Python file")
        if problem:
            raise ConfigError(f"{key}: {file}: {problem} (paths are relative to the config)")
    else:
        module_source_files(target, key)


def module_source_files(module: str, key: str) -> tuple[list[Path], Path | None]:
    """(the files `import module` runs: each package's __init__ down to the module's own file;
    the top-level package's folder, None for a single-file module), found without importing."""
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ConfigError(f"{key}: {module!r} is not a module name")
    search: list[str] | None = None
    chain: list[Path] = []
    package_root = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        spec = _find_spec(name, search)
        if spec is None:
            raise ConfigError(
                f"{key}: module {name} is not found on the Python path; install it, or name a "
                "file instead ('path/to/file.py:Factory', relative to the config)"
            )
        if spec.origin and spec.has_location:
            chain.append(Path(spec.origin))
        search = list(spec.submodule_search_locations or [])
        if depth == 1 and len(search) == 1:  # a regular package (a namespace one spans many)
            package_root = Path(search[0])
    if not chain:
        raise ConfigError(f"{key}: {module} has no source file compress can read")
    return chain, package_root


def _find_spec(name: str, search: list[str] | None):
    """What `import` looks up for `name` (the finders on sys.meta_path, editable installs' among
    them), without running any module."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        try:
            spec = find(name, search) if find else None
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            return spec
    return None
