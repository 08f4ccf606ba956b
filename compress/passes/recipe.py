"""A recipe: a config whose passes are checked against the registry, which is what every command
runs. compress.config validates the YAML and knows no pass; this is where the two meet."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compress.config import LoadedConfig, load_config, parse_config
from compress.config.overrides import Override
from compress.passes.registry import params_catalogue


def load_recipe(path: Path | str, overrides: Sequence[str | Override] = ()) -> LoadedConfig:
    """The config at `path`, `--set` `overrides` applied, every pass's params validated by its
    own Params; ConfigError names every problem with its key and line."""
    return load_config(path, params_catalogue, overrides)


def parse_recipe(text: str, path: Path, overrides: Sequence[str | Override] = ()) -> LoadedConfig:
    """load_recipe for config `text`, read as if from `path` (its folder anchors paths)."""
    return parse_config(text, path, params_catalogue, overrides)
