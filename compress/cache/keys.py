"""Stage keys: a hash of everything a stage's output depends on.

The baseline's key covers the versions of compress (its code, not only its version number, so
an edited checkout never reuses a stale stage), torch, onnx and onnxruntime; the bytes of the
model and of every data and architecture file the run reads; and the whole config but its passes
(model, data, export, report and gates sections, the seed). Each pass's stage chains its own
type and params, and the bytes of the files that pass alone reads (a distill teacher), onto the
key of the stage before it. So a stage's key changes with anything before or at it, and with
nothing after it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from compress.config import LoadedConfig
from compress.job.inputs import InputFile, run_inputs
from compress.models import file_sha256


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """The versions the stages depend on, and a hash of compress's own source files."""
    import compress
    from compress.measure.environment import package_version

    root = Path(compress.__file__).parent
    source = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        source.update(str(path.relative_to(root)).encode())
        source.update(path.read_bytes())
    versions = {"compress": compress.__version__}
    versions |= {name: package_version(name) for name in ("torch", "onnx", "onnxruntime")}
    return digest({"versions": versions, "code": source.hexdigest()})


def _file_hashes(files: list[InputFile], known: dict[str, str]) -> dict[str, str]:
    """sha256 by label; `known` ones (the model, hashed when it was loaded) are not read again."""
    return {item.label: known.get(item.label) or file_sha256(item.path) for item in files}


def stage_keys(
    model_path: Path, config: LoadedConfig, order: list[int], model_sha256: str | None = None
) -> list[str]:
    """The key of every stage: the baseline's, then one per pass in the order the pipeline runs
    them (`order`: indexes into config.passes). `model_sha256`: the model's, when it is known."""
    inputs = run_inputs(model_path, config)
    known = {"the model": model_sha256} if model_sha256 else {}
    shared = [i for i in inputs if not i.label.startswith("passes[") and i.label != "the config"]
    settings = config.config.model_dump(mode="json", exclude={"passes"})
    files = _file_hashes(shared, known)
    key = digest({"code": code_fingerprint(), "files": files, "config": settings})
    keys = [key]
    for index in order:
        spec = config.passes[index]
        own = [i for i in inputs if i.label.startswith(f"passes[{index}].")]
        step = {
            "type": spec.type,
            "params": spec.params.model_dump(mode="json"),
            "files": {
                label.split(".", 1)[1]: sha for label, sha in _file_hashes(own, known).items()
            },
        }
        key = digest({"before": key, "pass": step})
        keys.append(key)
    return keys
