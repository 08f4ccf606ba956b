"""`python -m compress_cli` runs the command line, like the `compress` script."""

from compress_cli.main import app

app()
