"""The one place where library errors become exit codes and one-line messages."""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console

from cli.process import exit_code, stop_message
from compress.errors import EXIT_FAILED, CompressError, first_line
from compress.terminal import color_system

stderr = Console(stderr=True, highlight=False, soft_wrap=True, color_system=color_system())


@contextlib.contextmanager
def reported_errors(debug: bool):
    """Turn exceptions into `error: ...` on stderr and an exit code; traceback only with debug."""
    try:
        yield
    except typer.Exit:
        raise
    except CompressError as e:
        if debug:
            stderr.print_exception()
        stderr.print(f"error: {e}", markup=False)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:  # SIGINT, or SIGTERM as cli.process raises it
        stderr.print(stop_message(), markup=False)
        raise typer.Exit(exit_code()) from None
    except Exception as e:
        if debug:
            stderr.print_exception()
        else:
            stderr.print(
                f"error: internal error: {type(e).__name__}: {first_line(e)} (rerun with "
                "--debug for the traceback, and please report it)",
                markup=False,
            )
        raise typer.Exit(EXIT_FAILED) from None
