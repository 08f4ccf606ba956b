"""YAML from untrusted files and `--set` values, read within limits.

PyYAML's safe loader runs no code, but it happily builds what a hostile document asks for: an
alias bomb (nine anchors of nine aliases each) is a few hundred bytes that expands to a billion
values the moment anything walks it, deep nesting overflows the recursive composer, and a
5000-digit integer trips Python's int limit. So the event stream is checked first, iteratively
and in one pass, against `compress.config.limits`; only then is the document composed and loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from compress.config.limits import MAX_CONFIG_BYTES, MAX_CONFIG_INT, MAX_YAML_DEPTH, MAX_YAML_NODES
from compress.errors import ConfigError
from compress.files import read_bounded

# A plain scalar that YAML 1.1 would read as an integer or a float with many digits.
_LONG_NUMBER = re.compile(
    r"[-+]?[0-9][0-9_.:]{39,}([eE][-+]?[0-9]+)?|[-+]?0[xXbB][0-9a-fA-F_]{40,}"
)


def read_config_text(path: Path, what: str = "config") -> str:
    """The text of a YAML file: a regular file (not a device or a pipe, which could be endless)
    of at most MAX_CONFIG_BYTES, in UTF-8."""
    data = read_bounded(
        path, MAX_CONFIG_BYTES, what, ConfigError, "a YAML file",
        "a config is a short YAML recipe (put data in data files)",
    )  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path}: not UTF-8 text; save it as UTF-8") from None


def yaml_error(source: str, error: yaml.YAMLError) -> ConfigError:
    """A one-line ConfigError for YAML that does not parse: the problem and its line."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return ConfigError(f"{source}: not valid YAML: {problem}{where}")


def load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """(the composed node tree, for line numbers; the data) of one YAML document, after
    `check_yaml_limits`. `source` names it in messages: a file path or `--set KEY=VALUE`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: {len(text):,} characters, over the limit of {MAX_CONFIG_BYTES:,}"
        )
    try:
        check_yaml_limits(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        check_unique_keys(root, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise yaml_error(source, e) from None
    except (ValueError, RecursionError) as e:  # a number Python will not convert, in any form
        raise ConfigError(f"{source}: a value cannot be read ({e}); shorten it") from None
    _check_integers(data, source, ())
    return root, data


def check_yaml_limits(text: str, source: str) -> None:
    """Refuse nesting deeper than MAX_YAML_DEPTH, more than MAX_YAML_NODES values once aliases
    are expanded, and numbers of absurd length, from the event stream (no recursion)."""
    depth = 0
    open_counts: list[int] = []  # expanded values inside each open collection
    open_anchors: list[str | None] = []
    anchored: dict[str, int] = {}  # anchor -> how many values an alias to it stands for
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        added = 0
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _limit(source, event, f"nested deeper than {MAX_YAML_DEPTH} levels")
            open_counts.append(1)
            open_anchors.append(event.anchor)
            added = 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            count, anchor = open_counts.pop(), open_anchors.pop()
            if anchor:
                anchored[anchor] = count
            if open_counts:
                open_counts[-1] += count
            continue
        elif isinstance(event, yaml.ScalarEvent):
            if event.style is None and _LONG_NUMBER.fullmatch(event.value):
                raise _limit(source, event, f"the number {event.value[:20]}... is too long")
            if event.anchor:
                anchored[event.anchor] = 1
            added = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:  # a list or mapping that contains itself
                raise _limit(source, event, f"the alias *{event.anchor} refers to itself")
            added = anchored.get(event.anchor, 1)
        if open_counts and not isinstance(event, yaml.CollectionStartEvent):
            open_counts[-1] += added
        total += added
        if total > MAX_YAML_NODES:
            raise _limit(
                source, event, f"more than {MAX_YAML_NODES:,} values once aliases are expanded"
            )


def check_unique_keys(root: yaml.Node | None, source: str) -> None:
    """Refuse a mapping that gives a key twice: YAML keeps the last one silently, so a second
    `passes:` would drop the first list without a word. Both lines are named."""
    pending = [root] if root is not None else []
    seen_nodes: set[int] = set()  # an alias shares its node: walk each once
    while pending:
        node = pending.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in lines:
                        raise ConfigError(
                            f"{source}: the key {key.value!r} is given twice (lines "
                            f"{lines[key.value]} and {line}); keep one"
                        )
                    lines[key.value] = line
                pending += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            pending += node.value


def _limit(source: str, event: yaml.Event, problem: str) -> ConfigError:
    line = event.start_mark.line + 1 if event.start_mark else None
    where = f" (line {line})" if line else ""
    return ConfigError(f"{source}: {problem}{where}; a config does not need that, simplify it")


def _check_integers(node: Any, source: str, loc: tuple[str | int, ...]) -> None:
    """Every integer within +-MAX_CONFIG_INT (a 64-bit integer): nothing larger is meaningful
    in a config, and libraries fail on them in ways that do not name the key."""
    from compress.config.overrides import dotted_key

    if isinstance(node, dict):
        for key, value in node.items():
            _check_integers(value, source, (*loc, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_integers(value, source, (*loc, index))
    elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_CONFIG_INT:
        key = dotted_key(loc) or "the value"
        raise ConfigError(
            f"{source}: {key}: {_short(node)} is out of range (at most {MAX_CONFIG_INT})"
        )


def _short(number: int) -> str:
    text = str(number)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"
