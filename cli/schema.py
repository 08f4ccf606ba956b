"""`compress schema`: the JSON Schema of the config, for editors (completion and checks)."""

from __future__ import annotations

import json

import typer

from cli.errors import reported_errors
from cli.options import Debug


def schema(debug: Debug = False) -> None:
    """Print the config's JSON Schema, every registered pass with its parameters.

    Save it and point your editor at it, e.g. a first line in the YAML file:
    `# yaml-language-server: $schema=compress.schema.json`.
    """
    with reported_errors(debug):  # a plugin pass that fails to import: one line, exit 2
        from compress.schema import config_schema

        text = json.dumps(config_schema(), indent=2)
    typer.echo(text)
