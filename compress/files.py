"""Reading the files a user names: regular files only, bounded as they are read.

A path can name something that is not a file: a folder, a FIFO (whose open blocks until a writer
comes), a device (`/dev/zero` never ends), a socket. `stat` alone does not bound a read either: a
file can grow while it is read. So every file compress reads from its user goes through here: it
is opened without blocking, checked to be a regular file on the handle it will read (not on the
path, which can change meanwhile), and read at most `limit` bytes, counted as they come. What is
wrong is said in the words a user needs: a path that exists is never "not found".
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from compress.errors import InputError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_CHUNK = 1 << 20


def kind_of(mode: int) -> str:
    """What a stat mode says a path is, as a user would name it."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file" if stat.S_ISREG(mode) else "not a regular file"


def path_problem(path: Path, expected: str = "file") -> str | None:
    """Why `path` cannot be read as a regular file ("not found", "is a folder", ...), or None.
    `expected` names what was expected, for the message (`a model file`, `an .npz file`)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        return "not found"
    except NotADirectoryError:
        return "not found (a part of the path is a file, not a folder)"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISREG(info.st_mode):
        return None
    return f"is {kind_of(info.st_mode)}, not {expected}"


@contextlib.contextmanager
def open_regular(
    path: Path, label: str, error: type[InputError] = InputError, expected: str = "a file"
) -> Iterator[BinaryIO]:
    """`path` opened for reading once it is known to be a regular file (links are followed).
    The open does not block on a FIFO, and the check is made on the opened handle. Raises
    `error` with `label: PATH ...` (`label` names it: `model`, `data.eval.path`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        problem = path_problem(path, expected) or "cannot be opened"
        raise error(f"{label} {path}: {problem}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{label} {path}: is {kind_of(info.st_mode)}, not {expected}")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_bounded(
    path: Path,
    limit: int,
    label: str,
    error: type[InputError] = InputError,
    expected: str = "a file",
    fix: str = "",
) -> bytes:
    """The bytes of regular file `path`, refused (`error`) when more than `limit` are there,
    counted as read."""
    with open_regular(path, label, error, expected) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as e:
            raise error(f"{label} {path}: cannot be read ({e.strerror or e})") from None
    if len(data) > limit:
        fix = f"; {fix}" if fix else ""
        raise error(f"{label} {path}: over the limit of {limit:,} bytes{fix}")
    return data


class _Bounded(io.RawIOBase):
    """A binary stream that raises `over` once more than `limit` bytes have been read."""

    def __init__(self, handle: BinaryIO, limit: int, over: Exception):
        self._handle, self._left, self._over = handle, limit, over

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        count: int = self._handle.readinto(buffer)  # type: ignore[attr-defined]  # a raw file
        self._left -= count
        if self._left < 0:
            raise self._over
        return count


@contextlib.contextmanager
def open_text_bounded(
    path: Path,
    limit: int,
    label: str,
    error: type[InputError] = InputError,
    expected: str = "a file",
    encoding: str = "utf-8",
) -> Iterator[io.TextIOBase]:
    """Regular file `path` as text, refused (`error`) once more than `limit` bytes are read:
    for files read line by line (a CSV table), whose size is counted as they are read."""
    over = error(f"{label} {path}: over the limit of {limit:,} bytes")
    with open_regular(path, label, error, expected) as handle:
        raw = io.BufferedReader(_Bounded(handle, limit, over))
        with io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
            yield text


def sha256_of(path: Path, label: str, error: type[InputError] = InputError) -> str:
    """sha256 of regular file `path` (never a FIFO or a device, which could be endless)."""
    with open_regular(path, label, error) as handle:
        return _sha256(handle)


def file_sha256(path: Path) -> str:
    """sha256 of a file compress made or has checked already."""
    with open(path, "rb") as handle:
        return _sha256(handle)


def _sha256(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()
