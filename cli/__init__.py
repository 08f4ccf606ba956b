"""The `compress` command line: one thin module per command, over the `compress` library."""
