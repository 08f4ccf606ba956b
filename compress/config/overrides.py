"""`--set KEY=VALUE` overrides, applied to a config's YAML data before it is validated, so an
override is checked exactly as the same value written in the file would be.

KEY is a dotted path with list indexes (`passes[0].amount`, `gates.min_speedup`); VALUE is read
as YAML (`0.3`, `true`, `[32, 1]`, `{min_speedup: 2}`), so it has the types the file would give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compress.config.yaml_input import load_yaml
from compress.errors import ConfigError

_PART = re.compile(r"([A-Za-z_][\w-]*)|\[(\d+)\]")
EXAMPLE = "--set passes[0].amount=0.3"


# Where a value sits in the config: ("passes", 0, "amount") is passes[0].amount.
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Override:
    """One parsed `--set`: where it points, the value, and the text the user typed."""

    loc: Loc
    value: Any
    text: str
    option: str = "--set"  # what the user typed it with: --set, or a sweep's --vary

    @property
    def named(self) -> str:
        """`--set passes[0].amount=0.3`, as messages name it."""
        return f"{self.option} {self.text}"


def parse_override(text: str, option: str = "--set") -> Override:
    """`passes[0].amount=0.3` -> Override(("passes", 0, "amount"), 0.3, text); `option` is how
    messages name it (`--set`, or `--vary` for a sweep's values)."""
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        example = EXAMPLE.replace("--set", option)
        raise ConfigError(f"{option} {text}: expected KEY=VALUE, e.g. {example}")
    loc = _parse_key(key, text, option)
    value = load_yaml(raw_value, f"{option} {text}")[1] if raw_value.strip() else ""
    return Override(loc, value, text, option)


def _parse_key(key: str, text: str, option: str) -> tuple[str | int, ...]:
    loc: list[str | int] = []
    for part in key.split("."):
        matches = list(_PART.finditer(part))
        consumed = "".join(m.group(0) for m in matches)
        if not matches or consumed != part or matches[0].group(1) is None:
            raise ConfigError(
                f"{option} {text}: {key!r} is not a config key; write it like {EXAMPLE} "
                "(names joined by dots, list items as [index])"
            )
        loc += [m.group(1) if m.group(1) is not None else int(m.group(2)) for m in matches]
    return tuple(loc)


def apply_overrides(raw: dict[str, Any], overrides: list[Override]) -> None:
    """Set each override's value in the YAML data `raw` (in place); missing mappings on the way
    are created, list items must exist."""
    for override in overrides:
        node: Any = raw
        *parents, last = override.loc
        for depth, part in enumerate(parents):
            node = _child(node, part, override, depth, create=True)
        _check_container(node, last, override, len(parents))
        node[last] = override.value


def _child(node: Any, part: str | int, override: Override, depth: int, create: bool) -> Any:
    _check_container(node, part, override, depth)
    if isinstance(part, str) and (part not in node or node[part] is None) and create:
        node[part] = {}
    return node[part]


def _check_container(node: Any, part: str | int, override: Override, depth: int) -> None:
    where = dotted_key(override.loc[:depth]) or "the config"
    if isinstance(part, int):
        if not isinstance(node, list):
            raise ConfigError(f"{override.named}: {where} is not a list")
        if part >= len(node):
            has = f"indexes run from 0 to {len(node) - 1}" if node else "it is empty"
            raise ConfigError(f"{override.named}: {where} has no item {part}; {has}")
    elif not isinstance(node, dict):
        raise ConfigError(f"{override.named}: {where} is not a mapping")


def dotted_key(loc: Loc) -> str:
    """("passes", 0, "amount") -> "passes[0].amount": a key as people write it."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def source_of(loc: Loc, overrides: list[Override]) -> Override | None:
    """The last override that set `loc` or one of its parents (it decides the value there)."""
    found = None
    for override in overrides:
        if loc[: len(override.loc)] == override.loc:
            found = override
    return found
