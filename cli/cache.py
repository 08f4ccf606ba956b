"""`compress cache info|clear`: the stage cache that `compress run` reuses stages from. Both look
only at a folder compress made a cache (it holds compress-cache.json): they never make one, and
refuse any other folder (exit 2) rather than read or empty it."""

from __future__ import annotations

import json
import sys

import typer
from compress_cli.errors import reported_errors
from compress_cli.options import CacheDir, Debug, JsonOutput

cache_app = typer.Typer(
    help="The stage cache: where it is, how large, and clearing it.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help, as the app's (cli/main.py)
)


@cache_app.command("info")
def info(cache_dir: CacheDir = None, json_output: JsonOutput = False, debug: Debug = False):
    """Where the stage cache is, how many stages it holds, and its size and limit.

    The limit is COMPRESS_CACHE_MAX_MB (default 5000); the least recently used stages go first.
    Works on a read-only cache: it only reads.
    """
    with reported_errors(debug):
        from compress.cache.folder import max_bytes_from_env
        from compress.cache.store import CacheInfo, default_location, existing_cache

        cache = existing_cache(cache_dir)
        found = (
            cache.info()
            if cache
            else CacheInfo(default_location().folder, 0, 0, max_bytes_from_env())
        )
    figures = {
        "folder": str(found.folder),
        "exists": cache is not None,
        "entries": found.entries,
        "bytes": found.bytes,
        "max_bytes": found.max_bytes,
        "leftovers": found.leftovers,
        "leftover_bytes": found.leftover_bytes,
    }
    if json_output:
        sys.stdout.write(json.dumps(figures, indent=2) + "\n")
        return
    if cache is None:
        typer.echo(f"{found.folder}: no stage cache yet (a run makes it)")
        return
    leftovers = (
        f"; {found.leftovers} unfinished write(s) of killed runs, {found.leftover_bytes / 1e6:.1f}"
        " MB (the next run or `compress cache clear` removes them)"
        if found.leftovers
        else ""
    )
    typer.echo(
        f"{found.folder}: {found.entries} stage(s), {found.bytes / 1e6:.1f} MB of "
        f"{found.max_bytes / 1e6:.0f} MB (COMPRESS_CACHE_MAX_MB){leftovers}"
    )


@cache_app.command("clear")
def clear(cache_dir: CacheDir = None, debug: Debug = False):
    """Remove every stage from the cache, and what killed runs left in it."""
    with reported_errors(debug):
        from compress.cache.store import default_location, existing_cache

        cache = existing_cache(cache_dir)
        if cache is None:
            typer.echo(f"{default_location().folder}: no stage cache yet; nothing to remove")
            return
        removed = cache.clear()
    leftovers = f" and {removed.leftovers} unfinished write(s)" if removed.leftovers else ""
    typer.echo(f"removed {removed.entries} stage(s){leftovers} from {cache.folder}")
