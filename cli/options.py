"""Options that several commands share, declared once so they read and behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value, validated like the file: --set passes[0].amount=0.3 "
        "--set report.batch_sizes=[32,1] (repeatable; the value is read as YAML).",
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print only JSON on stdout (for machines and CI).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages on stderr.")]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="The stage cache's folder (default: $COMPRESS_CACHE_DIR, else "
        "$XDG_CACHE_HOME/compress, else ~/.cache/compress).",
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Compute every stage, and read and write no cache (or COMPRESS_NO_CACHE=1).",
    ),
]
TrustPickle = Annotated[
    bool,
    typer.Option(
        "--trust-pickle", help="Allow a whole pickled module (runs code from the model file)."
    ),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Allow a model folder's own code (auto_map in config.json): transformers imports "
        "and runs the Python files in the folder.",
    ),
]
Executor = Annotated[
    str, typer.Option("--executor", help="Where the jobs run: local (processes here) or ray.")
]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to use (host:port, ray://host:port, auto)."),
]
