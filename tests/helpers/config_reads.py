"""Which config keys a pass reads while it works: its `reads` must declare them, since the stage
cache key covers those and no others (a pass that read an undeclared gate would be reused after
the gate changed). The report and gates sections are watched, and the judged output (which is
`report.output`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pydantic import BaseModel

from compress.job.context import Context

WATCHED = ("report", "gates")


class Watched:
    """A config (section) whose reads under WATCHED are noted in `seen` as dotted keys; any
    method of a watched section (model_copy, model_dump) reads all of it."""

    def __init__(self, target: BaseModel, path: str, seen: set[str]):
        self._target, self._path, self._seen = target, path, seen

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        dotted = f"{self._path}.{name}" if self._path else name
        watched = dotted.split(".")[0] in WATCHED
        if watched and name.startswith("model_"):
            self._seen.add(self._path)
        elif isinstance(value, BaseModel):
            return Watched(value, dotted, self._seen)
        elif watched:
            self._seen.add(dotted)
        return value


class WatchedContext(Context):
    """A Context whose judged_output, when read, is noted as a read of report.output."""

    @property
    def judged_output(self) -> int:
        self.__dict__["_seen"].add("report.output")
        return self.__dict__["judged_output"]

    @judged_output.setter
    def judged_output(self, value: int) -> None:
        self.__dict__["judged_output"] = value


@contextlib.contextmanager
def watching(ctx: Context, seen: set[str]) -> Iterator[None]:
    """While held, the reads through `ctx` of watched config keys are added to `seen`."""
    config, kind = ctx.config.config, type(ctx)
    ctx.__dict__["_seen"] = seen
    ctx.config.config, ctx.__class__ = Watched(config, "", seen), WatchedContext
    try:
        yield
    finally:
        ctx.config.config, ctx.__class__ = config, kind


def declared(reads: tuple[str, ...], seen: set[str]) -> set[str]:
    """The keys in `seen` that `reads` does not cover (a section covers its keys)."""
    return {key for key in seen if not any(key == r or key.startswith(f"{r}.") for r in reads)}
