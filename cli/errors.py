"""The one place where library errors become exit codes and one-line messages."""

from __future__ import annotations

import contextlib

import typer
from compress_cli.process import exit_code, stop_message
from compress_cli.quiet import library_output_hidden
from compress_cli.terminal import color_system
from rich.console import Console

from compress.errors import EXIT_FAILED, CompressError, first_line, one_line

stderr = Console(stderr=True, highlight=False, soft_wrap=True, color_system=color_system())


@contextlib.contextmanager
def reported_errors(debug: bool, library_stdout_hidden: bool = False):
    """Turn exceptions into `error: ...` on stderr and an exit code; traceback only with debug.
    What libraries print is hidden meanwhile (cli/quiet.py); `library_stdout_hidden` for
    commands whose stdout must hold only their own output (--json) while libraries run."""
    try:
        with library_output_hidden(debug, stdout=library_stdout_hidden):
            yield
    except typer.Exit:
        raise
    except CompressError as e:
        if debug:
            stderr.print_exception()
        stderr.print(f"error: {one_line(str(e))}", markup=False)
        raise typer.Exit(e.exit_code) from None
    except MemoryError:
        if debug:
            stderr.print_exception()
        stderr.print(
            "error: out of memory; use smaller data (data.*.limit), smaller report.batch_sizes "
            "or a machine with more memory",
            markup=False,
        )
        raise typer.Exit(EXIT_FAILED) from None
    except KeyboardInterrupt:  # SIGINT, or SIGTERM as cli.process raises it
        stderr.print(stop_message(), markup=False)
        raise typer.Exit(exit_code()) from None
    except Exception as e:
        if debug:
            stderr.print_exception()
        else:
            stderr.print(
                f"error: internal error: {type(e).__name__}: {one_line(first_line(e))} (rerun with "
                "--debug for the traceback, and please report it)",
                markup=False,
            )
        raise typer.Exit(EXIT_FAILED) from None
