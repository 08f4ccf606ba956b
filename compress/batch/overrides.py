"""A model's config in a batch: the shared YAML deep-merged with the model's override YAMLs.

Mappings merge key by key (an override's `report: {threads: 2}` keeps the shared
`report.batch_sizes`); lists and scalars replace (an override's `passes:` is that model's whole
list of passes). A path stays relative to the YAML that wrote it: before merging, the values of
PATH_KEYS and every file `arch` ('file.py:Factory') are made absolute, wherever they sit (data
sources, a model, a pass's teacher or student), so the merged config can be written anywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from compress.config.yaml_input import load_yaml, read_config_text
from compress.errors import ConfigError

PATH_KEYS = ("path", "teacher")  # data.*.path, a teacher given as a file; new ones belong here


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping; ConfigError naming the file when it is not one."""
    doc = load_yaml(read_config_text(path), str(path))[1]
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of config keys to override")
    return doc


def merged_config(shared: Path, overrides: tuple[Path, ...] | list[Path]) -> dict[str, Any]:
    """The shared config with each override merged over it, in order; paths made absolute."""
    merged: dict[str, Any] = absolute_paths(read_yaml(shared), shared.resolve().parent)
    for override in overrides:
        merged = deep_merge(merged, absolute_paths(read_yaml(override), override.resolve().parent))
    return merged


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def absolute_paths(node: Any, base_dir: Path) -> Any:
    """A copy of `node` with its relative paths (see the module docstring) resolved."""
    if isinstance(node, list):
        return [absolute_paths(item, base_dir) for item in node]
    if not isinstance(node, dict):
        return node
    resolved = {}
    for key, value in node.items():
        if key in PATH_KEYS and isinstance(value, str):
            value = str((base_dir / value).resolve())
        elif key == "arch" and isinstance(value, str):
            value = _absolute_arch(value, base_dir)
        resolved[key] = absolute_paths(value, base_dir)
    return resolved


def _absolute_arch(spec: str, base_dir: Path) -> str:
    """'arch.py:Net' -> '/abs/arch.py:Net'; 'package.module:Net' stays as it is."""
    target, sep, attr = spec.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{(base_dir / target).resolve()}:{attr}"
    return spec


def config_sha256(config: dict[str, Any]) -> str:
    """Content hash of a merged config (key order and comments do not count)."""
    canonical = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def with_threads(config: dict[str, Any], threads: int) -> dict[str, Any]:
    """The config with `report.threads` (ONNX Runtime's latency threads) at most `threads`, the
    job's share of the cores; a value of the wrong type is left for the job's config check."""
    report = config.get("report", {})
    wanted = report.get("threads", 1) if isinstance(report, dict) else None
    if type(wanted) is not int or wanted < 1:
        return config
    return {**config, "report": {**report, "threads": max(1, min(wanted, threads))}}


def config_text(config: dict[str, Any], sources: list[Path]) -> str:
    header = "".join(f"#   {source}\n" for source in sources)
    return (
        "# The config this model ran with: merged from (later wins)\n"
        + header
        + "# relative paths made absolute; report.threads at most the job's share of the cores\n"
        + str(yaml.safe_dump(config, sort_keys=False))  # a str without a stream
    )
