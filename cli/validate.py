"""`compress validate`: check a config (keys, types, pass names, data files) without running it."""

from __future__ import annotations

from pathlib import Path

import typer
from compress_cli.errors import reported_errors
from compress_cli.options import Debug, Overrides


def validate(
    config: Path = typer.Argument(..., help="The YAML recipe to check."),
    overrides: Overrides = None,
    debug: Debug = False,
) -> None:
    """Check CONFIG as `compress run` would, before any model is loaded; exit 2 if it is bad."""
    with reported_errors(debug):
        from compress.job.preflight import check_config

        loaded, _, datasets = check_config(config, overrides or ())
    names = ", ".join(spec.type for spec in loaded.passes) or "no passes"
    data = ", ".join(f"{role} ({len(d)} samples)" for role, d in datasets.items()) or "no data"
    typer.echo(f"{config}: ok ({names}; {data})")
