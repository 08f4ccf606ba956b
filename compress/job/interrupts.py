"""Short sections that a signal must not cut in half, and the moment a run's outputs are final.

The library installs no signal handler: the command line owns the process (cli/process.py). Its
handler asks `deferring()`; inside an `uninterrupted()` section it only hands the exception to
`defer()`, and the section raises it as it ends, once its few steps (a set of renames, making a
folder and recording it for cleanup) are all done. A section opened with `commit=True` that ends
with no signal pending marks the run's outputs as final: from then on `committed()` is true and
the handler ignores signals, since the run has nothing left to undo.

Blocking the signals (pthread_sigmask) instead would not do: the kernel hands a process-directed
signal to any thread that does not block it (torch and ONNX Runtime start several), and Python
then runs the handler in the main thread all the same. Handlers only ever run in the main thread,
so a section in another thread needs no protection and is a no-op.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_depth = 0
_pending: BaseException | None = None
_committed = False


def deferring() -> bool:
    """True inside an uninterrupted section (of the main thread)."""
    return _depth > 0


def defer(exception: BaseException) -> None:
    """Raise `exception` when the current section ends (the first one deferred wins)."""
    global _pending
    if _pending is None:
        _pending = exception


def committed() -> bool:
    """True once a commit section has ended with no signal pending."""
    return _committed


def reset() -> None:
    """Forget a previous run's state (the CLI calls it when it installs its handlers)."""
    global _depth, _pending, _committed
    _depth, _pending, _committed = 0, None, False


@contextlib.contextmanager
def uninterrupted(commit: bool = False) -> Iterator[None]:
    """Run the block to its end before a signal that arrives in it takes effect."""
    global _depth, _pending, _committed
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    completed = False
    try:
        yield
        completed = True
    finally:
        if commit and completed and _pending is None:
            _committed = True  # still deferring here: no signal can slip in between
        _depth -= 1
        if _depth == 0 and _pending is not None:
            pending, _pending = _pending, None
            if not _committed:
                raise pending
