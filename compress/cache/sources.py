"""The code a stage runs besides compress's own, as a hash for its cache key: the Python source of
a module-style `model.arch` ('package.module:Factory', found on sys.path), and of a plugin pass.

Editing such a module changes what the stage computes, so it must change the key; its version
number alone would not (an editable install, a package on PYTHONPATH). The module is found the
way `import` would find it, without importing anything: importing runs the package's code, and
the key is computed before the model is loaded (a run whose stages all come from the cache never
imports it). What is hashed is every `.py` file of the module's top-level package (a module
imports its siblings); a package too large to read on every run (over MAX_SOURCE_FILES files or
MAX_SOURCE_BYTES) is covered by its own module's file, the packages above it, and the version of
the installed distribution that holds it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

from compress.models.arch import module_source_files

MAX_SOURCE_FILES = 2000
MAX_SOURCE_BYTES = 64 << 20


def module_fingerprint(module: str, key: str) -> str:
    """A hash of the source `import module` would run, and more of its package (see above);
    ConfigError naming `key` when the module cannot be found."""
    chain, package_root = module_source_files(module, key)
    return _fingerprint(module.split(".")[0], tuple(chain), package_root)


def _fingerprint(top: str, chain: tuple[Path, ...], package_root: Path | None) -> str:
    package = _package_files(package_root) if package_root is not None else None
    if package is not None:
        return _hash_files(package, package_root)
    return _hash_files(list(chain), None, extra=_distribution_version(top))


def _package_files(root: Path) -> list[Path] | None:
    """Every .py file under the top-level package folder `root`, or None when it is too large
    to read on every run."""
    found, total = [], 0
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py"):
                path = Path(folder) / name
                found.append(path)
                total += path.stat().st_size
                if len(found) > MAX_SOURCE_FILES or total > MAX_SOURCE_BYTES:
                    return None
    return found


def _hash_files(files: list[Path], root: Path | None, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in files:
        digest.update(str(path.relative_to(root) if root else path).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _distribution_version(top: str) -> str:
    """`name==version` of the installed distributions that hold top-level package `top`."""
    versions = []
    for name in sorted(importlib.metadata.packages_distributions().get(top, [])):
        try:
            versions.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ",".join(versions)
