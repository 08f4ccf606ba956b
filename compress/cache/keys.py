"""Stage keys: a hash of everything a stage's output depends on, and of nothing else.

The baseline's key covers the code that computes it: compress's own source files (not only its
version number, so an edited checkout never reuses a stale stage) and the versions of the
libraries that compute stages (LIBRARIES); the bytes of the model and of every data and
architecture file the run reads, and the source of a module-style architecture; and the config
sections the export reads (model, data, export, the seed). Not the report or gates sections:
they are read when stages are measured, and by the passes that declare so.

Each pass's stage chains onto the key of the stage before it: the pass's type and params, the
bytes of the files that pass alone reads (a distill teacher), its code when it is a plugin,
and the values of the config keys it reads besides its params (`Pass.config_read`: distill's
choice of epoch reads report.metric, quantize.auto reads the gates and the report settings, and
any pass that reverts a slower stage reads the report's timing settings). So a stage's key
changes with anything before or at it, and with nothing after it; tightening a gate recomputes
only the stages whose choice reads it.

The files are read as the run reads them: regular files only (a FIFO or a device is refused by
name, exit 2, as without the cache), hashed as they are read.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.cache.sources import module_fingerprint
from compress.config import LoadedConfig
from compress.files import sha256_of
from compress.models.run_files import InputFile, arch_specs, run_inputs

if TYPE_CHECKING:
    from compress.passes.base import Pass

# The libraries whose code computes a stage (export, pruning, quantization, their arrays).
LIBRARIES: tuple[str, ...] = (
    "torch",
    "torch-pruning",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "numpy",
)
# ... and those that build a model folder's model and tokenize text data (the hf extra)
LIBRARIES += ("transformers", "tokenizers", "safetensors")
BASELINE_SECTIONS = {"version", "seed", "model", "data", "export"}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """The versions of the libraries stages depend on, and a hash of compress's own sources."""
    import compress
    from compress.measure.environment import package_version

    root = Path(compress.__file__).parent
    source = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        source.update(str(path.relative_to(root)).encode())
        source.update(path.read_bytes())
    versions: dict[str, str | None] = {"compress": compress.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = package_version(name)
        except Exception:  # not installed: stages that need it fail, and say so
            versions[name] = None
    return digest({"versions": versions, "code": source.hexdigest()})


def _file_hashes(files: list[InputFile], known: dict[str, str]) -> dict[str, str]:
    """sha256 by label; `known` ones (the model, hashed already) are not read again."""
    return {item.label: known.get(item.label) or sha256_of(item.path, item.label) for item in files}


def _module_archs(config: LoadedConfig) -> dict[str, str]:
    """The source fingerprint of each module-style architecture ('package.module:Factory')."""
    found = {}
    for key, spec in arch_specs(config).items():
        module = spec.rsplit(":", 1)[0]
        if not module.endswith(".py"):
            found[key] = module_fingerprint(module, key)
    return found


def config_values(config: LoadedConfig, paths: tuple[str, ...]) -> dict[str, Any]:
    """The config's values at dotted `paths` (`report.metric`, `gates`), as JSON."""
    values = {}
    for path in paths:
        value: Any = config.config
        for part in path.split("."):
            value = getattr(value, part)
        values[path] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    return values


def pass_code(step: Pass[Any], key: str) -> str | None:
    """A plugin pass's source fingerprint (built-in passes are compress's own code)."""
    module = type(step).__module__
    if module == "compress" or module.startswith("compress."):
        return None
    return module_fingerprint(module, key)


def stage_keys(
    model_path: Path,
    config: LoadedConfig,
    passes: list[Pass[Any]],
    order: list[int],
    model_sha256: str | None = None,
) -> list[str]:
    """The key of every stage: the baseline's, then one per pass in the order the pipeline runs
    them (`order`: indexes into `passes`, the config's passes built). `model_sha256`: the
    model's, when it is known. InputError (exit 2) for a file that cannot be read."""
    inputs = run_inputs(model_path, config)
    known = {"the model": model_sha256} if model_sha256 else {}
    shared = [i for i in inputs if not i.label.startswith("passes[") and i.label != "the config"]
    archs = _module_archs(config)
    settings = config.config.model_dump(mode="json", include=BASELINE_SECTIONS)
    files = _file_hashes(shared, known)
    shared_archs = {k: v for k, v in archs.items() if not k.startswith("passes[")}
    key = digest(
        {"code": code_fingerprint(), "files": files, "archs": shared_archs, "config": settings}
    )
    keys = [key]
    for index in order:
        spec, step, label = config.passes[index], passes[index], f"passes[{index}]"
        own = [i for i in inputs if i.label.startswith(f"{label}.")]
        step_files = {k.split(".", 1)[1]: sha for k, sha in _file_hashes(own, known).items()}
        part = {
            "type": spec.type,
            "params": spec.params.model_dump(mode="json"),
            "files": step_files,
            "archs": {k: v for k, v in archs.items() if k.startswith(f"{label}.")},
            "reads": config_values(config, step.config_read()),
            "code": pass_code(step, f"{label}.type"),
        }
        key = digest({"before": key, "pass": part})
        keys.append(key)
    return keys


def inputs_digest(model_path: Path, config: LoadedConfig) -> str:
    """Everything a run reads but its config, as one hash: the code that runs (compress's and
    the libraries' versions), the bytes of every file (model, data, architectures, teachers) and
    the source of module-style architectures. A batch's model or a sweep's variant finished
    under another digest is run again by --resume (which compares the config itself)."""
    read = [item for item in run_inputs(model_path, config) if item.label != "the config"]
    files = _file_hashes(read, {})
    return digest({"code": code_fingerprint(), "files": files, "archs": _module_archs(config)})


def measure_key(config: LoadedConfig) -> str:
    """What a stage's figures (footprint, metric, latency) were measured under besides the
    stage's file: the report settings and the evaluation data (its bytes are in the baseline's
    key, which every stage's key chains from). Figures kept in the cache under another are
    measured again; the stage's file is still reused."""
    return digest(config_values(config, ("report", "data.eval")))
