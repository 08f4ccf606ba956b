"""Files written so that a planted link cannot redirect them and no reader sees half of one.

Each file is created under a fresh random name in its own folder (O_CREAT | O_EXCL | O_NOFOLLOW,
relative to a descriptor of that folder, so no link planted at any name is followed), filled and
flushed to disk, then renamed over its final name. A rename replaces whatever has that name, a
symbolic link included, and never writes through it. Files staged together are renamed together:
on a failure or a signal, the ones already placed are removed again, recognised by their inode.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from compress.errors import OutputDirError
from compress.job.interrupts import uninterrupted

STAGING_PREFIX = ".compress-"  # every name compress creates for itself starts so
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20
_FIXES = {
    errno.ENOSPC: "free some space on that disk or choose another {option}",
    errno.EDQUOT: "free some of your disk quota or choose another {option}",
    errno.EROFS: "choose another {option} on a writable disk",
    errno.EACCES: "make the folder writable for this user or choose another {option}",
    errno.EPERM: "make the folder writable for this user or choose another {option}",
}


def write_error(path: Path, error: OSError, option: str) -> OutputDirError:
    """An OSError while writing an output, as one line that names the file and the fix."""
    fixed = _FIXES.get(error.errno) if error.errno is not None else None
    fix = (fixed or "choose another {option}").format(option=option)
    return OutputDirError(f"cannot write {path}: {error.strerror or error}; {fix}")


def create_exclusive(dir_fd: int) -> tuple[int, str]:
    """A new empty file with a random name in the folder `dir_fd`: (its descriptor, its name)."""
    for _ in range(100):  # 2**64 names: only a planted one can be taken
        name = f"{STAGING_PREFIX}{secrets.token_hex(8)}.partial"
        with contextlib.suppress(FileExistsError):
            return os.open(name, _CREATE, 0o666, dir_fd=dir_fd), name
    raise FileExistsError(errno.EEXIST, "no free staging name", STAGING_PREFIX)


def identity(dir_fd: int, name: str) -> tuple[int, int] | None:
    """(device, inode) of the entry itself (a link is not followed); None when there is none."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class _Staged:
    name: str  # the random name it is written under
    final: str
    identity: tuple[int, int]


class StagingArea:
    """Files staged in one folder and renamed into place together; `undo` removes every one of
    them, staged or placed, and so does leaving its `with` block by an exception. `option` names
    the folder's command-line option in messages."""

    def __init__(self, folder: Path, option: str):
        self.folder = Path(folder)
        self.option = option
        self._staged: list[_Staged] = []
        self._fd: int | None = None

    def __enter__(self) -> StagingArea:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.undo()
        self.close()

    def dir_fd(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.folder, _FOLDER)
            except OSError as e:
                raise write_error(self.folder, e, self.option) from None
        return self._fd

    def add_text(self, final: str, text: str) -> None:
        self.add_bytes(final, text.encode())

    def add_bytes(self, final: str, data: bytes) -> None:
        with self._create(final) as file:
            file.write(data)

    def add_copy(self, final: str, source: Path) -> None:
        """A copy of regular file `source`; a link there is refused, never followed."""
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise OutputDirError(
                f"{source}: cannot be copied ({e.strerror or e}: a link is never followed); "
                "remove it and run again"
            ) from None
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputDirError(f"{source}: not a regular file; remove it and run again")
            with self._create(final) as file:
                shutil.copyfileobj(src, file, _COPY_CHUNK)

    @contextlib.contextmanager
    def _create(self, final: str) -> Iterator[BinaryIO]:
        try:
            with uninterrupted():  # the name is recorded before a signal can stop the run
                fd, name = create_exclusive(self.dir_fd())
                st = os.fstat(fd)
                self._staged.append(_Staged(name, final, (st.st_dev, st.st_ino)))
                file = os.fdopen(fd, "wb")
            with file:
                yield file
                file.flush()
                os.fsync(file.fileno())  # the rename must not outlive the data on a crash
        except OSError as e:
            raise write_error(self.folder / final, e, self.option) from None

    def place(self) -> None:
        """Rename every staged file over its final name (call it inside a commit section)."""
        fd = self.dir_fd()
        for staged in self._staged:
            try:
                os.replace(staged.name, staged.final, src_dir_fd=fd, dst_dir_fd=fd)
            except OSError as e:
                raise write_error(self.folder / staged.final, e, self.option) from None

    def undo(self) -> None:
        """Remove what was staged or placed here (only entries that are still ours)."""
        if self._fd is None:
            return
        for staged in self._staged:
            for name in (staged.name, staged.final):
                if identity(self._fd, name) == staged.identity:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_atomically(path: Path, text: str, option: str = "-o") -> None:
    """Write one file as the module says: a reader sees the old file or the new one."""
    path = Path(path)
    with StagingArea(path.parent, option) as area:
        area.add_text(path.name, text)
        area.place()


def create_replacing(path: Path) -> BinaryIO:
    """A new empty file at `path` for the caller to fill as it goes (a worker's log): created
    under a random name and renamed into place at once, so a link at `path` is replaced."""
    dir_fd = os.open(path.parent, _FOLDER)
    try:
        fd, name = create_exclusive(dir_fd)
        try:
            os.replace(name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(name, dir_fd=dir_fd)
            os.close(fd)
            raise
        return os.fdopen(fd, "wb")
    finally:
        os.close(dir_fd)


def make_folders(root: Path, relative: Path, option: str = "-o") -> Path:
    """root/relative, its missing folders created, refused when a link or a file stands where a
    folder of it should be: a link planted inside `root` must not send writes elsewhere."""
    try:
        fd = os.open(root, _FOLDER)
    except OSError as e:
        raise write_error(Path(root), e, option) from None
    try:
        for part in Path(relative).parts:
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as e:
                raise write_error(root / relative, e, option) from None
            try:
                inner = os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise write_error(root / relative, e, option) from None
                raise OutputDirError(
                    f"{root / relative}: {part} is a link or a file, not a folder; remove it "
                    f"or choose another {option}"
                ) from None
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return Path(root) / relative


def check_folders(root: Path, relative: Path, option: str = "-o") -> None:
    """What make_folders would refuse, found without creating anything: a link or a file where
    a folder of root/relative should be."""
    path = Path(root)
    for part in Path(relative).parts:
        path = path / part
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise write_error(path, e, option) from None
        if not stat.S_ISDIR(info.st_mode):
            raise OutputDirError(
                f"{Path(root) / relative}: {part} is a link or a file, not a folder; remove it "
                f"or choose another {option}"
            )


def is_regular(path: Path) -> bool:
    """A regular file itself, not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_leftovers(folder: Path) -> None:
    """Remove what a run killed outright (SIGKILL, a power cut) left in `folder`: its staged
    files and its folder of set-aside results. Only for a folder no run is writing to."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if not entry.name.startswith(STAGING_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
