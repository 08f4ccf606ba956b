"""Registry of passes by the name the YAML uses; extra passes may come from entry points."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from compress.config import PassParams
    from compress.passes.base import Pass, PassDetails

AnyPass = TypeVar("AnyPass", bound="Pass[Any]")

ENTRY_POINT_GROUP = "compress.passes"
_REGISTRY: dict[str, type[Pass[Any]]] = {}
_entry_points_loaded = False


def register(name: str) -> Callable[[type[AnyPass]], type[AnyPass]]:
    """Class decorator: register a pass class under `name` (raises on a duplicate)."""

    def decorate(cls: type[AnyPass]) -> type[AnyPass]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"pass {name!r} is registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()  # importing the module registers its passes
        except Exception as e:
            from compress.errors import ConfigError, first_line

            _entry_points_loaded = False  # a fixed plugin is loaded on the next look-up
            raise ConfigError(
                f"the pass plugin {ep.name!r} ({ep.value}) fails to load: "
                f"{type(e).__name__}: {first_line(e)}; fix it, or uninstall the package that "
                f"declares it in the {ENTRY_POINT_GROUP!r} entry points"
            ) from e


def _load_builtin() -> None:
    """Import the built-in pass modules (each registers its passes on import)."""
    import importlib

    from compress.passes import BUILTIN

    for module in BUILTIN:
        importlib.import_module(module)


def all_passes() -> dict[str, type[Pass[Any]]]:
    """Every registered pass, by name, sorted."""
    _load_builtin()
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def closest_names(name: str) -> list[str]:
    return difflib.get_close_matches(name, list(all_passes()), n=1, cutoff=0.5)


def get_pass(name: str) -> type[Pass[Any]]:
    """The pass class for `name`; KeyError with a suggestion when it does not exist."""
    passes = all_passes()
    if name in passes:
        return passes[name]
    hint = closest_names(name)
    suggestion = f"did you mean {hint[0]!r}?" if hint else "run `compress passes` to list them"
    raise KeyError(f"unknown pass {name!r}; {suggestion}")


def params_catalogue(name: str) -> tuple[str, type[PassParams]]:
    """What a config checks a pass entry against (compress.config.PassCatalogue): the pass's
    name and its Params; KeyError with a suggestion for a type there is no pass of."""
    cls = get_pass(name)
    return cls.name, cls.Params


def details_type(name: str) -> type[PassDetails]:
    """The type of the details a stage named `name` holds: its pass's `Details`, or any keys for
    a pass this installation does not have (a report written elsewhere, a plugin that fails)."""
    from compress.errors import ConfigError
    from compress.passes.base import OtherDetails

    try:
        found = all_passes().get(name)
    except ConfigError:
        found = None
    return found.Details if found is not None else OtherDetails
