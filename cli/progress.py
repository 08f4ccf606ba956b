"""The library's progress (`compress.progress.Steps`) drawn as a rich bar on a terminal's
stderr; elsewhere (a log, a CI job, NO_COLOR) nothing: the library's plain log lines are what
those should get."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from compress_cli.terminal import animations

from compress.progress import Steps, silent


class _Bar:
    def __init__(self, bar, task) -> None:
        self._bar, self._task = bar, task

    def advance(self) -> None:
        self._bar.advance(self._task)

    def status(self, text: str) -> None:
        self._bar.update(self._task, status=text)


@contextlib.contextmanager
def terminal_progress(what: str, total: int) -> Iterator[Steps]:
    """A bar for `total` steps where animations() allow, else the library's silent display."""
    if not animations():
        with silent(what, total) as steps:
            yield steps
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield _Bar(bar, bar.add_task(what, total=total, status=""))
