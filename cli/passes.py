"""`compress passes`: every registered pass with its parameters, types and defaults."""

from __future__ import annotations

import json
import re
from typing import Any

import typer
from compress_cli.errors import reported_errors
from compress_cli.options import Debug, JsonOutput
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _parameters(cls) -> list[dict]:
    rows = []
    for name, field in cls.Params.model_fields.items():
        annotation = field.annotation
        annotation = annotation.__name__ if isinstance(annotation, type) else str(annotation)
        annotation = re.sub(r"\b(?:[a-z_]\w*\.)+(\w+)", r"\1", annotation)  # pathlib.Path: Path
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        rows.append(
            {
                "name": name,
                "type": annotation.replace("typing.", ""),
                "default": default,
                "required": field.is_required(),
                "description": field.description or "",
            }
        )
    return rows


def passes(json_output: JsonOutput = False, debug: Debug = False) -> None:
    """List every pass with its parameters, types and defaults."""
    from compress_cli.terminal import color_system

    from compress.passes.registry import all_passes

    with reported_errors(debug):  # a plugin pass that fails to import: one line, exit 2
        found: dict[str, dict[str, Any]] = {
            name: {"stage": cls.stage, "summary": cls.summary(), "params": _parameters(cls)}
            for name, cls in all_passes().items()
        }
    if json_output:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    console = Console(highlight=False, color_system=color_system())
    for name, info in found.items():
        table = Table(
            title=f"{name}  [dim]({info['stage']} stage)[/] {info['summary']}", title_justify="left"
        )
        for column in ("parameter", "type", "default", "description"):
            table.add_column(column)
        for p in info["params"]:
            table.add_row(  # descriptions and types hold brackets that are not markup
                p["name"],
                escape(p["type"]),
                "required" if p["required"] else escape(repr(p["default"])),
                escape(p["description"]),
            )
        console.print(table)
