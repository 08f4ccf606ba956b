"""The typer app. Commands import the library lazily so that --help answers at once."""

from __future__ import annotations

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
