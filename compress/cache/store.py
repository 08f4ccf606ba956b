"""Cache entries on disk: written atomically, verified when read, evicted least recently used.

Layout under the cache folder: `stages/<key>/` holds `model.onnx` and `entry.json` (the stage's
name, whether the speed guard reverted it, its details, and the sha256 of model.onnx). An entry
is built in `tmp/` and renamed into `stages/` in one step, so no reader sees half of one; when
two processes write the same key, the first rename wins and the second copy is dropped. A
reader copies model.onnx out and checks the copy's sha256 against entry.json: a corrupt,
truncated or tampered entry is removed and the stage rebuilt, never used. Reading an entry
touches entry.json, and after each write the least recently used entries are removed until the
cache is within its size limit. `locks/<key>.lock` (flock) lets a second process wait for a
stage the first one is computing, then reuse it, instead of computing it twice.

Nothing in an entry is executable: ONNX files and JSON, read as data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.models import file_sha256

ENTRY = "entry.json"
MODEL = "model.onnx"
FORMAT = 1  # entry.json's layout; another one is a miss
DEFAULT_MAX_MB = 5000


def default_cache_dir() -> Path:
    """$COMPRESS_CACHE_DIR, else $XDG_CACHE_HOME/compress, else ~/.cache/compress."""
    if os.environ.get("COMPRESS_CACHE_DIR"):
        return Path(os.environ["COMPRESS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "compress"


def open_cache(folder: Path | None = None, disabled: bool = False) -> StageCache | None:
    """The stage cache `compress run` uses: None with --no-cache or COMPRESS_NO_CACHE=1, else
    the one in `folder` (see cache_at)."""
    if disabled or os.environ.get("COMPRESS_NO_CACHE", "") not in ("", "0"):
        return None
    return cache_at(folder)


def cache_at(folder: Path | None = None) -> StageCache:
    """The stage cache in `folder` (--cache-dir), else in default_cache_dir(); a folder that
    cannot hold it is bad input."""
    from compress.errors import InputError

    folder = Path(folder).expanduser() if folder else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"--cache-dir {folder}: not a folder; give a folder for the stage cache, or --no-cache"
        ) from None
    except OSError as e:
        raise InputError(
            f"--cache-dir {folder}: cannot be used ({e.strerror or e}); give a writable folder, "
            "or --no-cache"
        ) from None
    return StageCache(folder)


def default_max_bytes() -> int:
    """$COMPRESS_CACHE_MAX_MB (megabytes), else 5000 MB."""
    text = os.environ.get("COMPRESS_CACHE_MAX_MB", "")
    try:
        megabytes = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        megabytes = DEFAULT_MAX_MB
    return int(max(megabytes, 0) * 1e6)


@dataclass
class Hit:
    """A stage found in the cache: its ONNX file (copied to where the run asked) and the rest of
    what the stage was (`meta`: name, reverted, fix_if_slower, details)."""

    path: Path
    meta: dict[str, Any]


@dataclass
class CacheInfo:
    folder: Path
    entries: int
    bytes: int
    max_bytes: int


class StageCache:
    def __init__(self, folder: Path, max_bytes: int | None = None):
        self.folder = Path(folder)
        self.max_bytes = default_max_bytes() if max_bytes is None else max_bytes

    # -- reading ------------------------------------------------------------------------------

    def get(self, key: str, target: Path) -> Hit | None:
        """The entry for `key`, its model copied to `target` and verified; None when there is
        none, or when it is damaged (then it is removed)."""
        entry = self._entry(key)
        try:
            meta = json.loads((entry / ENTRY).read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
                raise ValueError("not an entry of this version")
            shutil.copyfile(entry / MODEL, target)
            if file_sha256(target) != meta.get("sha256"):
                raise ValueError("model.onnx does not match its hash")
        except FileNotFoundError:
            return None  # none, or removed meanwhile
        except (OSError, ValueError, RecursionError):
            target.unlink(missing_ok=True)
            self.discard(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(entry / ENTRY)  # recently used
        return Hit(target, meta)

    def has(self, key: str) -> bool:
        return (self._entry(key) / ENTRY).is_file()

    def discard(self, key: str) -> None:
        """Remove the entry for `key` (one its reader found it cannot use)."""
        self._remove(self._entry(key))

    # -- writing ------------------------------------------------------------------------------

    def put(self, key: str, model: Path, meta: dict[str, Any]) -> None:
        """Store `model` and `meta` under `key` (a no-op when another process stored it first);
        then evict down to the size limit. A cache that cannot be written is skipped."""
        try:
            building = self._tmp_folder()
            shutil.copyfile(model, building / MODEL)
            record = {"format": FORMAT, "key": key, "sha256": file_sha256(building / MODEL)}
            record |= {"created": time.time(), **meta}
            with open(building / ENTRY, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            self.folder.joinpath("stages").mkdir(parents=True, exist_ok=True)
            try:
                os.rename(building, self._entry(key))
            except OSError:  # the key was stored meanwhile: keep the first
                shutil.rmtree(building, ignore_errors=True)
        except OSError:
            return
        self.evict()

    def annotate(self, key: str, fields: dict[str, Any]) -> None:
        """Add `fields` to the entry's entry.json (replaced in one rename); no entry: nothing."""
        entry = self._entry(key)
        try:
            meta = json.loads((entry / ENTRY).read_text())
            staged = entry / f".{secrets.token_hex(8)}.json"
            staged.write_text(json.dumps(meta | fields))
            os.replace(staged, entry / ENTRY)
        except (OSError, ValueError, RecursionError):
            return

    def computing(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Held while a stage is computed: another process asking for the same key waits, then
        finds the entry."""
        self._entry(key)  # a key, not a path
        return _held(self.folder / "locks" / f"{key}.lock")

    # -- managing -----------------------------------------------------------------------------

    def info(self) -> CacheInfo:
        entries = self._entries()
        return CacheInfo(
            self.folder, len(entries), sum(size for _, _, size in entries), self.max_bytes
        )

    def evict(self) -> None:
        """Remove the least recently used entries until the cache is within max_bytes."""
        with self._exclusive():
            entries = sorted(self._entries(), key=lambda e: e[1])  # oldest use first
            total = sum(size for _, _, size in entries)
            for folder, _, size in entries:
                if total <= self.max_bytes:
                    break
                self._remove(folder)
                total -= size

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        with self._exclusive():
            entries = self._entries()
            for folder, _, _ in entries:
                self._remove(folder)
            shutil.rmtree(self.folder / "tmp", ignore_errors=True)
            shutil.rmtree(self.folder / "locks", ignore_errors=True)
        return len(entries)

    # -- internals ----------------------------------------------------------------------------

    def _entry(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"not a cache key: {key!r}")
        return self.folder / "stages" / key

    def _entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last use, bytes) of every entry."""
        found = []
        stages = self.folder / "stages"
        with contextlib.suppress(OSError):
            for entry in stages.iterdir():
                with contextlib.suppress(OSError):
                    used = (entry / ENTRY).stat().st_mtime
                    size = sum(f.stat().st_size for f in entry.iterdir())
                    found.append((entry, used, size))
        return found

    def _tmp_folder(self) -> Path:
        tmp = self.folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        folder = tmp / secrets.token_hex(8)
        folder.mkdir()
        return folder

    def _remove(self, entry: Path) -> None:
        """Out of `stages/` in one rename (no reader sees it half removed), then deleted."""
        doomed = None
        try:
            doomed = self._tmp_folder()
            os.rename(entry, doomed / "entry")
        except OSError:
            pass  # removed by another process meanwhile, or a cache that cannot be written
        finally:
            if doomed is not None:
                shutil.rmtree(doomed, ignore_errors=True)

    def _exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held while entries are evicted or cleared: one process at a time."""
        return _held(self.folder / "lock")


@contextlib.contextmanager
def _held(lock: Path) -> Iterator[None]:
    """An exclusive flock on `lock` (created if needed; the kernel drops it if the process
    dies); where the file cannot be made, nothing is held and the caller goes on unlocked."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
