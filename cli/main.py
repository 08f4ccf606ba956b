"""The typer app. Commands import the library lazily so that --help answers at once."""

from __future__ import annotations

import sys

import typer
from compress_cli import (
    analyze,
    batch,
    bench,
    init,
    passes,
    report,
    run,
    schema,
    sweep,
    validate,
)
from compress_cli.cache import cache_app
from compress_cli.process import signals_handled
from typer.core import TyperGroup

from compress.errors import EXIT_BAD_INPUT, EXIT_FAILED, one_line


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown command or option, a missing argument) as one `error:` line and
    exit 2, as every other bad input is told, instead of click's usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:  # typer's own click's usage errors
            if type(e).__name__ != "NoArgsIsHelpError":  # that one printed the help already
                ctx = getattr(e, "ctx", None)
                see = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
                sys.stderr.write(f"error: {one_line(e.format_message())}{see}\n")
            sys.exit(getattr(e, "exit_code", EXIT_BAD_INPUT))
        except typer.Abort:
            sys.stderr.write("error: aborted\n")
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)


class App(typer.Typer):
    """The typer app, run with the CLI's SIGINT/SIGTERM handlers in place (cli/process.py). Tests
    that drive it through CliRunner call the click command directly and install none."""

    def __call__(self, *args, **kwargs):
        with signals_handled():
            return super().__call__(*args, **kwargs)


app = App(
    name="compress",
    help="Compress a saved PyTorch model into one checked ONNX file, with a measured report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help as plain text: typer's rich help panels took 0.25 s of CPU to draw (plain: 0.03 s),
    # and --help must answer in under 0.2 s (tests/cli/test_startup.py holds what it imports).
    rich_markup_mode=None,
    cls=OneLineErrors,
)
app.command("run")(run.run)
app.command("validate")(validate.validate)
app.command("passes")(passes.passes)
app.command("report")(report.report)
app.command("schema")(schema.schema)
app.command("bench")(bench.bench)
app.command("init")(init.init)
app.command("batch")(batch.batch)
app.command("analyze")(analyze.analyze)
app.command("sweep")(sweep.sweep)
app.add_typer(cache_app, name="cache")


def _version(value: bool) -> None:
    if value:
        from compress import __version__

        typer.echo(f"compress {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Exit codes: 0 ok, 1 a pass or the export failed, 2 bad input, 3 a gate failed."""
