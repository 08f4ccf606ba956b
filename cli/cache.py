"""`compress cache info|clear`: the stage cache that `compress run` reuses stages from."""

from __future__ import annotations

import json
import sys

import typer
from compress_cli.errors import reported_errors
from compress_cli.options import CacheDir, Debug, JsonOutput

cache_app = typer.Typer(
    help="The stage cache: where it is, how large, and clearing it.", no_args_is_help=True
)


@cache_app.command("info")
def info(cache_dir: CacheDir = None, json_output: JsonOutput = False, debug: Debug = False):
    """Where the stage cache is, how many stages it holds, and its size and limit.

    The limit is COMPRESS_CACHE_MAX_MB (default 5000); the least recently used stages go first.
    """
    with reported_errors(debug):
        from compress.cache.store import cache_at

        found = cache_at(cache_dir).info()
    figures = {
        "folder": str(found.folder),
        "entries": found.entries,
        "bytes": found.bytes,
        "max_bytes": found.max_bytes,
    }
    if json_output:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    typer.echo(
        f"{found.folder}: {found.entries} stage(s), {found.bytes / 1e6:.1f} MB of "
        f"{found.max_bytes / 1e6:.0f} MB (COMPRESS_CACHE_MAX_MB)"
    )


@cache_app.command("clear")
def clear(cache_dir: CacheDir = None, debug: Debug = False):
    """Remove every stage from the cache."""
    with reported_errors(debug):
        from compress.cache.store import cache_at

        cache = cache_at(cache_dir)
        removed = cache.clear()
    typer.echo(f"removed {removed} stage(s) from {cache.folder}")
