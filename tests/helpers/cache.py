"""Stage cache entries for tests: keys named for their reader, caches made as compress makes
them, and entries stored in them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from compress.cache.folder import CacheLocation, open_folder
from compress.cache.store import StageCache


def key(name: str) -> str:
    """A cache key (64 hex digits) named for the test's reader."""
    return hashlib.sha256(name.encode()).hexdigest()


def cache_in(folder: Path, max_bytes: int = 10**9) -> StageCache:
    secret = open_folder(CacheLocation(folder, "--cache-dir"), create=True)
    return StageCache(folder, max_bytes, secret)


def entry(folder: Path, name: str, content: bytes, max_bytes: int = 10**9) -> StageCache:
    """The cache in `folder`, holding `content` as the stage keyed by `name`."""
    cache = cache_in(folder, max_bytes)
    source = folder.parent / f"{name}.onnx"
    source.write_bytes(content)
    cache.put(key(name), source, {"name": "baseline", "reverted": False})
    return cache
