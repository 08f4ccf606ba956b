"""Progress without drawing: the library says how far a long step is (`Steps`), and whoever runs
it decides how to show that. `cli/` draws a bar on a terminal (cli/progress.py); the default,
`silent`, shows nothing, for a log, a CI job or a caller that logs plain lines."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol


class Steps(Protocol):
    """One long step's progress: `advance` after each of its units, `status` after a result
    worth showing (a loss, a metric)."""

    def advance(self) -> None: ...

    def status(self, text: str) -> None: ...


# (what, total units) -> a context manager yielding the Steps to advance
ProgressDisplay = Callable[[str, int], AbstractContextManager[Steps]]


class _Silent:
    def advance(self) -> None:
        pass

    def status(self, text: str) -> None:
        pass


@contextlib.contextmanager
def silent(what: str, total: int) -> Iterator[Steps]:
    """Shows nothing."""
    yield _Silent()
