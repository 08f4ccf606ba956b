"""What the command line does as the owner of its process: SIGINT and SIGTERM handlers, their
exit codes, and a private temporary folder for `compress run`.

SIGTERM (how CI systems and `kill` stop a job) is made to behave like Ctrl-C: both raise an
exception (KeyboardInterrupt, or Terminated, a subclass of it) so that every `finally` and
`except BaseException` of the library runs, and the process exits 130 (SIGINT) or 143 (SIGTERM)
with one line on stderr. A repeated signal while that cleanup runs is ignored (SIGKILL still
stops everything); inside the library's short uninterrupted sections a signal waits until the
section ends; once a run's outputs are committed, signals are ignored (see compress.job.interrupts).
The library never installs handlers itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator

from compress.job import interrupts

EXIT_CODES: dict[int, int] = {
    signal.SIGINT: 130,
    signal.SIGTERM: 143,
}  # 128 + the signal's number, as shells do
MESSAGES: dict[int, str] = {
    signal.SIGINT: "interrupted (SIGINT)",
    signal.SIGTERM: "stopped by SIGTERM",
}

_received: int | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that cleanup treats both alike."""


def exit_code() -> int:
    """The exit code of the signal that stopped the run (130 when no handler saw one: Ctrl-C in
    a process whose handlers are Python's own)."""
    return 130 if _received is None else EXIT_CODES.get(_received, 130)


def stop_message() -> str:
    message = "interrupted" if _received is None else MESSAGES.get(_received, "interrupted")
    return f"error: {message}"


def _on_signal(signum: int, frame) -> None:
    global _received
    if _received is not None or interrupts.committed():
        return  # cleaning up after the first one, or the run's outputs are already in place
    _received = signum
    error = KeyboardInterrupt() if signum == signal.SIGINT else Terminated()
    if interrupts.deferring():
        interrupts.defer(error)
        return
    raise error


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """Install the handlers for one command; exit 130/143 when a signal stopped it, even where
    the exception surfaced outside the command's own error handling (click turns a stray
    KeyboardInterrupt into exit 1)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = None
    interrupts.reset()
    previous = {s: signal.signal(s, _on_signal) for s in EXIT_CODES}
    try:
        yield
    except KeyboardInterrupt:
        print(stop_message(), file=sys.stderr)
        sys.exit(exit_code())
    except SystemExit as e:
        if _received is not None and not interrupts.committed() and e.code != exit_code():
            print(stop_message(), file=sys.stderr)
            sys.exit(exit_code())
        raise
    finally:
        for s, handler in previous.items():
            # Committed outputs are final: a signal while the interpreter shuts down (torch's
            # teardown takes a while) must not turn a finished run into a killed one.
            signal.signal(s, signal.SIG_IGN if interrupts.committed() else handler)


@contextlib.contextmanager
def private_tempdir() -> Iterator[None]:
    """Every temporary file of this process (compress's work folder, torch's and ONNX Runtime's)
    in one folder under TMPDIR that is removed at the end, whatever stops the run: a signal
    can arrive in the moment between a library making its folder and recording it for cleanup.
    """
    root = None
    previous, environment = tempfile.tempdir, dict(os.environ)
    try:
        with interrupts.uninterrupted():
            root = tempfile.mkdtemp(prefix="compress-run-")
            tempfile.tempdir = root
        yield
    finally:
        with interrupts.uninterrupted():
            tempfile.tempdir = previous
            if root is not None:
                _forget_paths_under(root, environment)
                shutil.rmtree(root, ignore_errors=True)


def _forget_paths_under(root: str, environment: dict[str, str]) -> None:
    """Undo what a library exported that points into `root`: torch keeps its inductor cache's
    path in TORCHINDUCTOR_CACHE_DIR and makes that folder again on its next call, which would
    bring back the removed folder."""
    for key, value in list(os.environ.items()):
        if value.startswith(root):
            if key in environment:
                os.environ[key] = environment[key]
            else:
                del os.environ[key]
