"""The variants of a sweep: every combination of the `--vary KEY=V1,V2,...` values.

Values are split on the commas outside brackets, braces and quotes, so `--vary
report.batch_sizes=[32,1],[8]` has two values; each is read as YAML, as `--set` reads it. Keys
of earlier passes vary fastest, so variants that share their later passes' settings but not the
earlier ones come first: with `--jobs N` the first variants to run compute different prefixes
instead of waiting on the same one.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.config.overrides import parse_override
from compress.errors import ConfigError, InputError

EXAMPLE = "--vary passes[0].amount=0.3,0.5"
MAX_VARIANTS = 100  # a default ceiling: each variant is a whole run (--max-variants raises it)
MAX_VARY_CHARS = 1 << 16
_PASS_INDEX = re.compile(r"^passes\[(\d+)\]")


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]  # as typed, each read as YAML by --set


@dataclass(frozen=True)
class Variant:
    name: str  # v01, v02, ...: its folder under OUT/variants
    settings: tuple[tuple[str, str], ...]  # (key, value text) per axis

    @property
    def overrides(self) -> list[str]:
        """Its `--set KEY=VALUE` texts."""
        return [f"{key}={value}" for key, value in self.settings]

    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.settings)


def split_values(text: str) -> list[str]:
    """`0.3,0.5` -> ['0.3', '0.5']; commas inside [], {} or quotes stay in their value."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def parse_axis(text: str) -> Axis:
    """One `--vary KEY=V1,V2,...`; ConfigError (exit 2) names what is wrong."""
    if len(text) > MAX_VARY_CHARS:
        raise ConfigError(
            f"--vary {text[:40]}...: {len(text):,} characters, over the limit of "
            f"{MAX_VARY_CHARS:,}; vary fewer values"
        )
    key, sep, raw = text.partition("=")
    key = key.strip()
    values = split_values(raw) if sep else []
    if not sep or not key or not raw.strip():
        raise ConfigError(f"--vary {text}: expected KEY=V1,V2,..., e.g. {EXAMPLE}")
    if any(not value for value in values):
        raise ConfigError(f"--vary {text}: an empty value; separate values with single commas")
    for value in values:
        parse_override(f"{key}={value}", "--vary")  # the key's form, and each value as YAML
    if len(set(values)) != len(values):
        raise ConfigError(f"--vary {text}: a value is given twice; give each once")
    return Axis(key, tuple(values))


def grid(texts: list[str], max_variants: int = MAX_VARIANTS) -> list[Variant]:
    """Every combination of the axes, keys of earlier passes varying fastest; refused before
    anything is read when there would be more than `max_variants`."""
    if not texts:
        raise ConfigError(f"compress sweep needs at least one --vary, e.g. {EXAMPLE}")
    axes = [parse_axis(text) for text in texts]
    keys = [axis.key for axis in axes]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ConfigError(f"--vary {twice} is given twice; give its values in one --vary")
    count = math.prod(len(axis.values) for axis in axes)
    if count > max_variants:
        sizes = " x ".join(str(len(axis.values)) for axis in axes)
        raise ConfigError(
            f"--vary: {sizes} values make {count:,} variants, more than --max-variants "
            f"{max_variants}; vary fewer values, or raise --max-variants"
        )
    slowest_first = sorted(axes, key=_stage_order, reverse=True)
    combos = itertools.product(*(axis.values for axis in slowest_first))
    variants = []
    for number, combo in enumerate(combos, start=1):
        chosen = dict(zip((a.key for a in slowest_first), combo, strict=True))
        settings = tuple((axis.key, chosen[axis.key]) for axis in axes)
        variants.append(Variant(f"v{number:02d}", settings))
    return variants


def _stage_order(axis: Axis) -> int:
    """Where a key acts: its pass's index, -1 for the sections every stage depends on."""
    match = _PASS_INDEX.match(axis.key)
    return int(match.group(1)) if match else -1


def check_variants(config: Path, variants: list[Variant]) -> None:
    """Every variant's config as `compress validate` checks it, before any work: an unknown key,
    a bad value or data that does not load is refused naming the variant. Data is read once
    for all the variants that share their data sections."""
    from compress.job.preflight import check_loaded_config
    from compress.passes.recipe import load_recipe

    data: dict[str, dict[str, Any]] = {}
    for variant in variants:
        overrides = [parse_override(text, "--vary") for text in variant.overrides]
        try:
            loaded = load_recipe(config, overrides)
            sections = loaded.config.model_dump_json(include={"data", "model"})
            data[sections] = check_loaded_config(loaded, datasets=data.get(sections))[2]
        except InputError as e:
            raise type(e)(f"--vary ({variant.label()}): {e}") from None
