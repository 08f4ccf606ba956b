"""Cache entries on disk: authenticated, written atomically, verified when read, evicted least
recently used.

Layout under a cache folder (compress.cache.folder: the marker, the key, who may own it):
`stages/<key>/` holds `model.onnx` and `entry.json` (the stage's name, whether the speed guard
reverted it, its details and figures, the sha256 of model.onnx, and an HMAC over all of it with
the cache's secret key). An entry is built in a locked folder in `tmp/` and renamed into
`stages/` in one step, so no reader sees half of one; when two processes write the same key,
the first rename wins. A reader checks entry.json's HMAC, then copies model.onnx out and checks
the copy's sha256: an entry compress did not write (a replaced model with a matching hash, an
edited figure), or a corrupt, truncated or damaged one, is removed and the stage rebuilt, never
used. Reading an entry touches entry.json; after each write the least recently used entries
are removed until the cache is within its size limit, and what killed writers left in `tmp/`
and `locks/` is removed. `locks/<key>.lock` lets a second process wait for a stage the first
one is computing, then reuse it, instead of computing it twice.

Only names compress makes are ever removed: entries named by a key (64 hex digits), folders in
`tmp/` named as compress names them and held by no live process, unheld `<key>.lock` files.
Nothing is followed through a link. Nothing in an entry is executable: ONNX files and JSON,
read as data.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.cache import locks
from compress.cache.folder import (
    CacheFolderError,
    CacheLocation,
    cache_disabled,
    locate,
    max_bytes_from_env,
    open_folder,
)
from compress.files import file_sha256

ENTRY = "entry.json"
MODEL = "model.onnx"
FORMAT = 2  # entry.json's layout; another one is a miss
MAX_ENTRY_BYTES = 16 << 20  # entry.json: a stage's details and figures, a few KB
_KEY = re.compile(r"[0-9a-f]{64}")
_TMP = re.compile(r"[0-9a-f]{16}")
_LOCK = re.compile(r"[0-9a-f]{64}\.lock")
_OPEN_OWN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_cache(
    folder: Path | None, disabled: bool, warn: Callable[[str], None]
) -> StageCache | None:
    """The stage cache a run uses: None with --no-cache, or COMPRESS_NO_CACHE=1 unless
    --cache-dir names one (an option wins over the environment). A folder the user named
    (--cache-dir, COMPRESS_CACHE_DIR) that cannot be a cache is bad input; the default one
    turns the cache off, with a warning that says why."""
    if disabled or (cache_disabled() and folder is None):
        return None
    location = locate(folder)
    max_bytes = max_bytes_from_env()
    try:
        return StageCache(location.folder, max_bytes, open_folder(location, create=True))
    except CacheFolderError as e:
        if location.chosen:
            raise
        warn(f"{e}; running without the stage cache")
        return None


def existing_cache(folder: Path | None = None) -> StageCache | None:
    """The cache `compress cache info|clear` looks at: never made, never adopted; None where
    the default folder does not exist yet."""
    location = locate(folder)
    if not location.chosen and not os.path.lexists(location.folder):
        return None
    return StageCache(location.folder, max_bytes_from_env(), open_folder(location, create=False))


def default_location() -> CacheLocation:
    return locate(None)


def _mac(secret: bytes, record: dict[str, Any]) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()


@dataclass
class Hit:
    """A stage found in the cache: its ONNX file (copied to where the run asked) and the rest of
    what the stage was (`meta`: name, reverted, fix_if_slower, details, figures)."""

    path: Path
    meta: dict[str, Any]


@dataclass
class CacheInfo:
    folder: Path
    entries: int
    bytes: int
    max_bytes: int
    leftovers: int = 0  # folders in tmp/ that killed writers left
    leftover_bytes: int = 0


@dataclass
class Cleared:
    entries: int
    leftovers: int


class StageCache:
    def __init__(self, folder: Path, max_bytes: int, secret: bytes):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._secret = secret

    # -- reading ------------------------------------------------------------------------------

    def get(self, key: str, target: Path) -> Hit | None:
        """The entry for `key`, its model copied to `target` and verified; None when there is
        none, or when compress cannot vouch for it (then it is removed)."""
        entry = self._entry(key)
        try:
            meta = self._read_entry(entry, key)
            copied = _copy_out(entry / MODEL, target)
            if copied != meta.get("sha256"):
                raise ValueError("model.onnx does not match its hash")
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            return None  # none, or removed meanwhile
        except (OSError, ValueError, RecursionError):
            target.unlink(missing_ok=True)
            self.discard(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(entry / ENTRY, follow_symlinks=False)  # recently used
        return Hit(target, meta)

    def has(self, key: str) -> bool:
        return os.path.isfile(self._entry(key) / ENTRY)

    def discard(self, key: str) -> None:
        """Remove the entry for `key` (one its reader found it cannot use)."""
        self._remove(self._entry(key))

    # -- writing ------------------------------------------------------------------------------

    def put(self, key: str, model: Path, meta: dict[str, Any]) -> None:
        """Store `model` and `meta` under `key` (a no-op when another process stored it first);
        then evict down to the size limit. A cache that cannot be written is skipped, and so is
        a model whose weights are in a data file of their own (the cache keeps one file)."""
        from compress.models.onnx_files import data_file

        if data_file(model).exists():
            return
        entry = self._entry(key)
        try:
            with self._building() as building:
                shutil.copyfile(model, building / MODEL)
                record = {"format": FORMAT, "key": key, "sha256": file_sha256(building / MODEL)}
                self._write_entry(building, record | {"created": time.time(), **meta})
                (self.folder / "stages").mkdir(mode=0o700, exist_ok=True)
                try:
                    os.rename(building, entry)
                except OSError:  # the key was stored meanwhile: keep the first
                    shutil.rmtree(building, ignore_errors=True)
        except (OSError, ValueError):
            return
        self.evict()

    def annotate(self, key: str, fields: dict[str, Any]) -> None:
        """Add `fields` to the entry's entry.json (authenticated anew, replaced in one rename);
        no entry, or one compress cannot vouch for: nothing."""
        entry = self._entry(key)
        try:
            meta = self._read_entry(entry, key)
            staged = entry / f".{secrets.token_hex(8)}.json"
            self._write_entry(entry, meta | fields, staged.name)
            os.replace(staged, entry / ENTRY)
        except (OSError, ValueError, RecursionError):
            return

    def computing(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Held while a stage is computed: another process asking for the same key waits, then
        finds the entry."""
        self._entry(key)  # a key, not a path
        return locks.held(self.folder / "locks" / f"{key}.lock")

    # -- managing -----------------------------------------------------------------------------

    def info(self) -> CacheInfo:
        """What the cache holds; reads only (a read-only cache can be looked at)."""
        entries = self._entries()
        leftovers = [locks.folder_bytes(folder) for folder in self._tmp_folders()]
        return CacheInfo(
            self.folder,
            len(entries),
            sum(size for _, _, size in entries),
            self.max_bytes,
            len(leftovers),
            sum(leftovers),
        )

    def evict(self) -> None:
        """Remove what killed writers left, then the least recently used entries until the
        cache is within max_bytes."""
        with self._exclusive():
            self._reap()
            entries = sorted(self._entries(), key=lambda e: e[1])  # oldest use first
            total = sum(size for _, _, size in entries)
            for folder, _, size in entries:
                if total <= self.max_bytes:
                    break
                self._remove(folder)
                total -= size

    def clear(self) -> Cleared:
        """Remove every entry, and what killed writers left."""
        with self._exclusive():
            entries = self._entries()
            for folder, _, _ in entries:
                self._remove(folder)
            return Cleared(len(entries), self._reap())

    # -- internals ----------------------------------------------------------------------------

    def _entry(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.folder / "stages" / key

    def _read_entry(self, entry: Path, key: str) -> dict[str, Any]:
        """entry.json once its HMAC shows compress wrote it, for this key, in this format."""
        if os.path.islink(entry):  # compress makes folders there, never links: not an entry
            raise FileNotFoundError(entry)
        fd = os.open(entry / ENTRY, _OPEN_OWN)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError("entry.json is not a regular file")
            text = handle.read(MAX_ENTRY_BYTES + 1)
        if len(text) > MAX_ENTRY_BYTES:
            raise ValueError("entry.json is too large")
        meta = json.loads(text)
        if not isinstance(meta, dict):
            raise ValueError("not an entry")
        mac = meta.pop("mac", None)
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(self._secret, meta)):
            raise ValueError("not written by compress with this cache's key")
        if meta.get("format") != FORMAT or meta.get("key") != key:
            raise ValueError("not an entry of this version, or of another key")
        return meta

    def _write_entry(self, folder: Path, record: dict[str, Any], name: str = ENTRY) -> None:
        signed = record | {"mac": _mac(self._secret, record)}
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(signed, f, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())

    def _entries(self) -> list[tuple[Path, float, int]]:
        """(folder, last use, bytes) of every entry: folders named by a key, links not followed."""
        found = []
        with contextlib.suppress(OSError), os.scandir(self.folder / "stages") as listing:
            for item in listing:
                if not (_KEY.fullmatch(item.name) and item.is_dir(follow_symlinks=False)):
                    continue
                with contextlib.suppress(OSError):
                    used = os.stat(Path(item.path) / ENTRY, follow_symlinks=False).st_mtime
                    found.append((Path(item.path), used, locks.folder_bytes(Path(item.path))))
        return found

    def _tmp_folders(self) -> list[Path]:
        with contextlib.suppress(OSError), os.scandir(self.folder / "tmp") as listing:
            return [
                Path(item.path)
                for item in listing
                if _TMP.fullmatch(item.name) and item.is_dir(follow_symlinks=False)
            ]
        return []

    def _reap(self) -> int:
        """Remove the tmp/ folders and lock files that killed processes left; how many folders."""
        reaped = sum(locks.reap_folder(folder) > 0 for folder in self._tmp_folders())
        with contextlib.suppress(OSError), os.scandir(self.folder / "locks") as listing:
            for item in listing:
                if _LOCK.fullmatch(item.name):
                    locks.reap_lock(Path(item.path))
        return reaped

    def _building(self) -> contextlib.AbstractContextManager[Path]:
        """A new folder in tmp/, locked while this process fills or empties it."""
        tmp = self.folder / "tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        return locks.held_folder(tmp / secrets.token_hex(8))

    def _remove(self, entry: Path) -> None:
        """Out of `stages/` in one rename (no reader sees it half removed), then deleted."""
        try:
            with self._building() as doomed:
                os.rename(entry, doomed / "entry")
                shutil.rmtree(doomed, ignore_errors=True)
        except OSError:
            pass  # removed by another process meanwhile, or a cache that cannot be written

    def _exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held while entries are evicted or cleared: one process at a time."""
        return locks.held(self.folder / "locks" / "evicting.lock")


def _copy_out(source: Path, target: Path) -> str:
    """Copy the cache's file `source` (a regular file, not a link) to `target`; its sha256."""
    digest = hashlib.sha256()
    fd = os.open(source, _OPEN_OWN)
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{source.name} is not a regular file")
        with open(target, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    return digest.hexdigest()
