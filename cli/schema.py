"""`compress schema`: the JSON Schema of the config, for editors (completion and checks)."""

from __future__ import annotations

import json

import typer
from compress_cli.errors import reported_errors
from compress_cli.options import Debug


def schema(
    report: bool = typer.Option(
        False, "--report", help="The JSON Schema of report.json instead (for CI jobs)."
    ),
    debug: Debug = False,
) -> None:
    """Print the config's JSON Schema, every registered pass with its parameters.

    Save it and point your editor at it, e.g. a first line in the YAML file:
    `# yaml-language-server: $schema=compress.schema.json`. With --report, the schema of what
    `compress run` writes as report.json, to validate it in a CI job.
    """
    with reported_errors(debug):  # a plugin pass that fails to import: one line, exit 2
        if report:
            from compress.report.model import report_schema

            text = json.dumps(report_schema(), indent=2)
        else:
            from compress.passes.schema import config_schema

            text = json.dumps(config_schema(), indent=2)
    typer.echo(text)
