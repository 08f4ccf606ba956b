"""flock(2) locks of the stage cache, which the kernel drops when their holder dies.

A lock file exists only while it is held: its holder removes it before letting go, so lock
files do not pile up, one per stage ever computed. A waiter that then gets the lock of a file
that is no longer at its path (removed, or replaced by a newer holder's) opens it again. A
SIGKILLed holder leaves its file behind, unheld: `reap_lock` removes it, under its lock.

Folders in `tmp/` being filled (a new entry, or an old one being deleted) are held the same way,
by a lock on the folder itself, so `reap_folder` can tell one a live process is writing from one
a killed process left: only those are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

_OPEN_LOCK = os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


@contextlib.contextmanager
def held(lock: Path) -> Iterator[None]:
    """An exclusive lock on the file `lock` (made if needed), removed when let go. Where the file
    cannot be made (a read-only cache), nothing is held and the caller goes on unlocked."""
    fd = None
    try:
        while fd is None:
            lock.parent.mkdir(mode=0o700, exist_ok=True)
            candidate = os.open(lock, _OPEN_LOCK, 0o600)
            fcntl.flock(candidate, fcntl.LOCK_EX)
            if _same_file(candidate, lock):
                fd = candidate
            else:  # its holder removed it while we waited: lock the file there now
                os.close(candidate)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def reap_lock(lock: Path) -> bool:
    """Remove lock file `lock` when nobody holds it (its holder was killed); True if removed."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, lock):
            os.unlink(lock)
            return True
    except OSError:
        pass  # held: in use
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def held_folder(folder: Path) -> Iterator[Path]:
    """`folder`, made now, locked while the caller fills or empties it."""
    folder.mkdir(mode=0o700)
    fd = os.open(folder, _OPEN_FOLDER)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(fd)


def reap_folder(folder: Path) -> int:
    """Remove `folder` (a real folder, not a link) when no live process holds it: the bytes
    removed, else 0."""
    try:
        fd = os.open(folder, _OPEN_FOLDER | os.O_NONBLOCK)
    except OSError:
        return 0  # gone, or a link or a file: not a folder compress is filling
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return 0  # a live process is filling it
    try:
        size = folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)  # never follows links inside
        return size
    finally:
        os.close(fd)


def folder_bytes(folder: Path) -> int:
    """The bytes of the regular files in `folder`, to any depth, links not followed."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
