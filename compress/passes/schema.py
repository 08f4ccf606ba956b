"""The JSON Schema of the config, for editors that complete and check YAML files.

`Config` keeps `passes` as plain mappings because each entry is validated by its pass's own
`Params` (so that errors name the key and line). For the schema, each registered pass, built-ins
and entry-point plugins alike, becomes one branch of a `oneOf` told apart by `type`, so a pass
added to the registry appears here without any change to this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, create_model

from compress.config import Config

if TYPE_CHECKING:
    from compress.passes.base import Pass

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    from compress.passes.registry import all_passes

    branches = [_pass_model(name, cls) for name, cls in all_passes().items()]
    # Types made at run time (the installed passes' Params): built as values, which a static
    # checker cannot follow, hence the Any.
    annotated: Any = Annotated
    union: Any = Union
    list_of: Any = list
    pass_entry = annotated[union[tuple(branches)], Field(discriminator="type")]
    documented = create_model(
        "Config",
        __base__=Config,
        __doc__="A compress recipe: the model, its data, the passes to run, and what to report.",
        passes=(list_of[pass_entry], Field(default_factory=list, description="run in this order")),
    )
    return {"$schema": DRAFT, **documented.model_json_schema(), "title": "compress config"}


def _pass_model(name: str, cls: type[Pass[Any]]) -> type[BaseModel]:
    """`cls.Params` with a `type: <name>` field first, described by the pass's summary."""
    literal: Any = Literal  # of a name known at run time
    return create_model(
        "Pass_" + name.replace(".", "_"),
        __base__=cls.Params,
        __doc__=cls.summary() or name,
        type=(literal[name], Field(description=f"the pass: {name}")),
    )
