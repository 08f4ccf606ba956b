"""Where the stage cache lives, and whether compress may use a folder as one.

A cache folder is compress's own: it is made by compress (mode 0700) with a marker file,
`compress-cache.json`, that names its layout, and a secret key, `secret` (0600), that
authenticates every entry written there (compress.cache.store). A folder without the marker is
never used as a cache, written to or emptied, whatever it holds: `--cache-dir ~` cannot make
compress touch `~/tmp`. An empty folder is adopted (the marker and key are written into it); a
new one is made.

The cache is trusted to hold what compress wrote there, so it must be writable by its owner
alone: a folder or key owned by another user, or writable by the group or others, is refused.
Where the folder comes from matters for what happens then: one the user named (`--cache-dir`,
COMPRESS_CACHE_DIR) that cannot be used is bad input (exit 2); the default one
(~/.cache/compress) that cannot be used turns the cache off with a warning, so a read-only home
or an old cache does not stop a run over an option nobody passed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from compress.errors import InputError
from compress.files import kind_of

MARKER = "compress-cache.json"
SECRET = "secret"
LAYOUT = 2  # the folder's layout; 1 (no marker, no secret) was never authenticated
PARTS = ("stages", "tmp", "locks")  # the folders compress makes inside a cache
DEFAULT_MAX_MB = 5000
MAX_MB = 1e9  # a petabyte: anything larger is a typo
_MARKER_BYTES = 4096


class CacheFolderError(InputError):
    """A cache folder that cannot be used, or an environment value that is not one."""


@dataclass(frozen=True)
class CacheLocation:
    """A cache folder and who chose it: `--cache-dir`, `COMPRESS_CACHE_DIR` or `default`."""

    folder: Path
    source: str

    @property
    def chosen(self) -> bool:
        """Named by the user (an option or the environment), not the default."""
        return self.source != "default"

    def problem(self, text: str, fix: str) -> CacheFolderError:
        named = f"{self.source} {self.folder}" if self.chosen else f"the stage cache {self.folder}"
        return CacheFolderError(f"{named}: {text}; {fix}")


def locate(folder: Path | None) -> CacheLocation:
    """--cache-dir, else $COMPRESS_CACHE_DIR, else $XDG_CACHE_HOME/compress (when absolute, as
    the XDG spec asks), else ~/.cache/compress."""
    if folder is not None:
        return CacheLocation(Path(folder).expanduser(), "--cache-dir")
    if os.environ.get("COMPRESS_CACHE_DIR"):
        return CacheLocation(
            Path(os.environ["COMPRESS_CACHE_DIR"]).expanduser(), "COMPRESS_CACHE_DIR"
        )
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return CacheLocation(base / "compress", "default")


def cache_disabled() -> bool:
    """COMPRESS_NO_CACHE: 1 / true / yes turn the cache off; 0 / false / no / unset do not."""
    text = os.environ.get("COMPRESS_NO_CACHE", "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise CacheFolderError(
        f"COMPRESS_NO_CACHE={_shown(text)}: not a switch; set it to 1 to turn the stage cache "
        "off, or 0 (or unset it) to keep it"
    )


def max_bytes_from_env() -> int:
    """$COMPRESS_CACHE_MAX_MB (megabytes, a finite number >= 0), else 5000 MB."""
    text = os.environ.get("COMPRESS_CACHE_MAX_MB", "").strip()
    if not text:
        return int(DEFAULT_MAX_MB * 1e6)
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = math.nan
    if not math.isfinite(megabytes) or not 0 <= megabytes <= MAX_MB:
        raise CacheFolderError(
            f"COMPRESS_CACHE_MAX_MB={_shown(text)}: not a size; give megabytes as a number from "
            f"0 to {MAX_MB:.0e} (default {DEFAULT_MAX_MB}), or unset it"
        )
    return int(megabytes * 1e6)


def _shown(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:40]}..."


def open_folder(location: CacheLocation, create: bool) -> bytes:
    """The secret key of the cache at `location` once the folder is known to be compress's and
    trustworthy; with `create`, a missing or empty folder is made one. CacheFolderError says
    why not."""
    folder = location.folder
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        if not create:
            raise location.problem(
                "no stage cache there", "give the folder a run used as its cache"
            ) from None
        return _create(location)
    except OSError as e:
        raise location.problem(f"cannot be used ({e.strerror or e})", _FIX) from None
    if not stat.S_ISDIR(info.st_mode):
        raise location.problem(f"is {kind_of(info.st_mode)}, not a folder", _FIX)
    _check_owned(location, folder, info)
    if create and not os.path.lexists(folder / MARKER) and _is_new(folder):
        return _create(location)
    if not os.path.lexists(folder / MARKER):  # looked at again: another run may have made it
        raise location.problem(
            f"is not a compress stage cache (no {MARKER}), so compress will not use or empty it",
            "give an empty or new folder for the cache"
            if location.chosen
            else f"an earlier compress made it: remove it (rm -r {folder}) and a run makes it anew",
        )
    _check_marker(location)
    for part in PARTS:
        _check_part(location, part)
    return _read_secret(location)


_FIX = "give a folder of your own for the cache (--cache-dir), or --no-cache"


def _check_owned(location: CacheLocation, path: Path, info: os.stat_result) -> None:
    """Owned by this user and writable by nobody else: its content is believed."""
    if info.st_uid != os.geteuid():
        raise location.problem(f"{path} belongs to another user (uid {info.st_uid})", _FIX)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise location.problem(
            f"{path} is writable by other users, who could plant entries",
            f"chmod go-w {path}, or {_FIX}",
        )


def _is_new(folder: Path) -> bool:
    """Empty, or holding only what _create writes first (another run is making it a cache)."""
    try:
        with os.scandir(folder) as listing:
            names = [item.name for item in listing]
    except OSError:
        return False
    making = (f".{SECRET}.", f".{MARKER}.")
    return all(name == SECRET or name.startswith(making) for name in names)


def _check_marker(location: CacheLocation) -> None:
    try:
        with _open_own(location.folder / MARKER) as handle:
            marker = json.loads(handle.read(_MARKER_BYTES))
        layout = marker["layout"]
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        raise location.problem(f"its {MARKER} is damaged", _remake(location.folder)) from None
    if layout != LAYOUT:
        raise location.problem(
            f"its layout is {layout!r}, and this compress reads layout {LAYOUT}",
            _remake(location.folder),
        )


def _remake(folder: Path) -> str:
    return f"remove the folder (rm -r {folder}) and a run makes it anew"


def _check_part(location: CacheLocation, part: str) -> None:
    """stages/, tmp/ and locks/ are real folders of this user's, where they exist yet."""
    path = location.folder / part
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise location.problem(f"{path} is {_lkind(info)}, not a folder", _remake(location.folder))
    _check_owned(location, path, info)


def _lkind(info: os.stat_result) -> str:
    return "a symbolic link" if stat.S_ISLNK(info.st_mode) else kind_of(info.st_mode)


def _read_secret(location: CacheLocation) -> bytes:
    path = location.folder / SECRET
    try:
        with _open_own(path) as handle:
            info = os.fstat(handle.fileno())
            key = bytes.fromhex(handle.read(128).decode("ascii"))
    except (OSError, ValueError):
        raise location.problem(
            f"its key {path} is missing or damaged", _remake(location.folder)
        ) from None
    if info.st_uid != os.geteuid() or info.st_mode & 0o077 or len(key) != 32:
        raise location.problem(
            f"its key {path} is readable or writable by others, or not this user's",
            _remake(location.folder),
        )
    return key


def _open_own(path: Path):
    """A file of the cache's own, opened without following a link or blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def _create(location: CacheLocation) -> bytes:
    """Make the folder a cache: the key first, then the marker (a folder with the marker has
    its key), each published with link(2), so two runs making the same cache agree on one."""
    folder = location.folder
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _publish(folder, SECRET, secrets.token_bytes(32).hex().encode())
        _publish(folder, MARKER, json.dumps({"layout": LAYOUT, "made_by": "compress"}).encode())
    except OSError as e:
        raise location.problem(f"cannot be made a cache ({e.strerror or e})", _FIX) from None
    return open_folder(location, create=False)


def _publish(folder: Path, name: str, content: bytes) -> None:
    """Write `name` once: a private temporary file linked to its name (an existing one wins)."""
    staged = folder / f".{name}.{secrets.token_hex(8)}"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another run made it first: both use it
            os.link(staged, folder / name)
    finally:
        staged.unlink(missing_ok=True)
