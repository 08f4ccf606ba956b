"""Keep what libraries say off the terminal unless --debug.

torch, onnxscript and ONNX Runtime talk while they work: Python warnings, log records
("Evaluation failed: cannot reshape array ..." on every BERT export), and native lines written
straight to file descriptor 2 by C++ code. A user gets compress's own progress lines and, when
something fails, one `error:` line; with --debug, everything, as the libraries wrote it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def library_output_hidden(debug: bool, stdout: bool = False) -> Iterator[None]:
    """Hide library warnings, log records and native stderr output (also Python prints to
    stdout, with `stdout`, for commands whose stdout is machine-readable) unless `debug`."""
    if debug:
        yield
        return
    previous_disable = logging.root.manager.disable
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        stack.callback(logging.disable, previous_disable)
        sink = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
        stack.enter_context(_native_stderr_to(sink))
        if stdout:
            stack.enter_context(contextlib.redirect_stdout(sink))
        yield


@contextlib.contextmanager
def _native_stderr_to(sink: io.TextIOBase) -> Iterator[None]:
    """Point file descriptor 2 at `sink`; Python's own sys.stderr, when it is that descriptor,
    moves to a copy of the original so compress's messages still reach the terminal."""
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (a closed stderr): nothing to hide
        yield
        return
    stream_on_fd2 = _fileno(sys.stderr) == 2
    saved_stream = sys.stderr
    terminal = open(original, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.dup2(sink.fileno(), 2)
    if stream_on_fd2:
        sys.stderr = terminal
    crash_reports = faulthandler.is_enabled()
    if crash_reports:  # a segfault's Python stack is not chatter: it goes where stderr went
        faulthandler.enable(file=terminal)
    try:
        yield
    finally:
        if stream_on_fd2:
            sys.stderr = saved_stream
        os.dup2(original, 2)
        if crash_reports:
            faulthandler.enable(file=sys.__stderr__ or saved_stream)
        if not stream_on_fd2:  # else a log handler made meanwhile may hold `terminal`: it stays
            terminal.close()  # the wrapper only: closefd=False keeps `original` open
            os.close(original)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
