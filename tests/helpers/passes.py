"""A pass registered for the tests (tests/conftest.py imports this module, so every test and
the registry's listings see it)."""

from __future__ import annotations

from compress.passes.base import PassResult, TorchPass
from compress.passes.registry import register


@register("test.identity")
class IdentityTorchPass(TorchPass):
    """A torch-stage pass for tests: returns the model unchanged, so the torch path is covered.

    Sample YAML:
        - type: test.identity
    """

    def apply(self, given, ctx):
        return PassResult(given.module)
