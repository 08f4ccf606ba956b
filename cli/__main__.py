"""`python -m cli` runs the command line, like the `compress` script."""

from cli.main import app

app()
