"""The CLI driven in-process (CliRunner), so torch loads once, and what a refusal looks like."""

from __future__ import annotations

import functools
from pathlib import Path

import typer.testing
from compress_cli.main import app
from typer.testing import CliRunner

# typer's CliRunner builds the click command from the app's functions on every invoke (16 ms,
# typing hints evaluated anew): made once per process here, for the suite's ~1,500 invokes. The
# command holds no state between runs (click makes a context per run).
typer.testing._get_command = functools.cache(typer.testing._get_command)


def invoke(*args: str):
    """Run `compress ARGS...`; the result has exit_code, stdout and stderr apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def run_cli(model, config, out, *extra):
    """`compress run MODEL -c CONFIG -o OUT EXTRA...`."""
    return invoke("run", model, "-c", config, "-o", out, *extra)


def assert_refused(result, out: Path, *needles: str) -> None:
    """Exit 2 with one `error:` line holding every needle, no traceback, nothing in `out`."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())
