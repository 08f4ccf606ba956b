"""Tests mirror the library and the CLI."""
