"""Files made from one ONNX file by a fixed recipe (ONNX Runtime's quantization pre-processing),
kept in the stage cache under the hash of the file they were made from.

Pre-processing a stage for int8 runs ONNX Runtime's symbolic shape inference, whose package
imports torch when it is installed: a second or two, paid again by every run that quantizes the
same stage another way (a changed int8 setting, each variant of a sweep). The result depends only
on the source's bytes and the versions the cache key covers, so it is stored like a stage:
written atomically, verified by hash when read, evicted least recently used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compress.cache.keys import code_fingerprint, digest
from compress.cache.store import StageCache
from compress.files import file_sha256


def derived_file(
    cache: StageCache | None, recipe: str, source: Path, target: Path, make: Callable[[], Path]
) -> Path:
    """What `make()` writes to `target` from `source` (it returns `target`, or another path when
    it could not, which is not kept); from the cache where an earlier run made it from the same
    bytes by the same `recipe`."""
    if cache is None:
        return make()
    key = digest({"code": code_fingerprint(), "recipe": recipe, "source": file_sha256(source)})
    with cache.computing(key):
        hit = cache.get(key, target)
        if hit is not None:
            return hit.path
        made = make()
        if made == target:
            cache.put(key, target, {"name": recipe})
        return made
