"""`compress schema`: the JSON Schema of the config, for editors (completion and checks)."""

from __future__ import annotations

import json

import typer


def schema() -> None:
    """Print the config's JSON Schema, every registered pass with its parameters.

    Save it and point your editor at it, e.g. a first line in the YAML file:
    `# yaml-language-server: $schema=compress.schema.json`.
    """
    from compress.schema import config_schema

    typer.echo(json.dumps(config_schema(), indent=2))
