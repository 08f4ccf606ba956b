"""Cache entries: believed only when compress wrote them with the cache's key, verified when read,
evicted least recently used, written by several processes at once without damage, and what
killed writers leave behind is reaped. Nothing outside what compress made is ever touched."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cache import cache_in, entry, key


def test_a_damaged_entry_is_dropped_never_used(tmp_path):
    cache = entry(tmp_path / "cache", "abc", b"model bytes")
    assert cache.get(key("abc"), tmp_path / "out.onnx").path.read_bytes() == b"model bytes"
    (tmp_path / "cache" / "stages" / key("abc") / "model.onnx").write_bytes(b"model bytez")
    assert cache.get(key("abc"), tmp_path / "out2.onnx") is None
    assert not (tmp_path / "out2.onnx").exists() and not cache.has(key("abc"))
    cache = entry(tmp_path / "cache", "abc", b"model bytes")
    (tmp_path / "cache" / "stages" / key("abc") / "entry.json").write_text('{"format": 2, "key"')
    assert cache.get(key("abc"), tmp_path / "out3.onnx") is None and not cache.has(key("abc"))


def test_an_entry_compress_did_not_write_is_a_miss(tmp_path):
    """A replaced model whose new sha256 is written into entry.json, or an edited figure, fails
    the entry's HMAC: the entry is removed and the stage is computed again."""
    folder = tmp_path / "cache"
    cache = entry(folder, "abc", b"the real model")
    stage = folder / "stages" / key("abc")
    (stage / "model.onnx").write_bytes(b"a poisoned model")
    meta = json.loads((stage / "entry.json").read_text())
    meta["sha256"] = hashlib.sha256(b"a poisoned model").hexdigest()
    (stage / "entry.json").write_text(json.dumps(meta))
    assert cache.get(key("abc"), tmp_path / "out.onnx") is None
    assert not (tmp_path / "out.onnx").exists() and not stage.exists()

    cache = entry(folder, "abc", b"the real model")
    cache.annotate(key("abc"), {"figures": {"metric": {"name": "top1", "value": 0.5}}})
    assert cache.get(key("abc"), tmp_path / "read.onnx").meta["figures"]["metric"]["value"] == 0.5
    meta = json.loads((stage / "entry.json").read_text())
    meta["figures"]["metric"]["value"] = 0.99
    (stage / "entry.json").write_text(json.dumps(meta))
    assert cache.get(key("abc"), tmp_path / "out.onnx") is None


def test_the_least_recently_used_entries_go_first(tmp_path):
    folder = tmp_path / "cache"
    cache = cache_in(folder, max_bytes=7_000)  # room for two
    for index, name in enumerate(("old", "used", "other")):
        entry(folder, name, bytes(3000))
        os.utime(folder / "stages" / key(name) / "entry.json", (index, index))
    cache.get(key("used"), tmp_path / "read.onnx")  # now the most recent
    entry(folder, "new", bytes(3000))
    cache.evict()
    kept = [cache.has(key(k)) for k in ("old", "used", "other", "new")]
    assert kept == [False, True, False, True]


def _write_and_read(folder: str, number: int) -> bool:
    """One of several processes storing the same key and reading it back."""
    cache = cache_in(Path(folder))
    source = Path(folder).parent / f"source{number}.onnx"
    source.write_bytes(b"the same stage" * 10_000)
    for attempt in range(20):
        cache.put(key("shared"), source, {"name": "baseline", "writer": number})
        hit = cache.get(key("shared"), Path(folder).parent / f"read{number}-{attempt}.onnx")
        if hit is None or hit.path.read_bytes() != source.read_bytes():
            return False
    return True


def test_processes_writing_the_same_stage_do_not_corrupt_the_cache(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_write_and_read, [(str(tmp_path / "cache"), n) for n in range(4)])
    assert all(results)
    assert [p.name for p in (tmp_path / "cache" / "stages").iterdir()] == [key("shared")]
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # no half-written entry left
    assert not list((tmp_path / "cache" / "locks").iterdir())  # no lock file left behind


KILLED_WRITER = """
import os, sys, signal
from pathlib import Path
from compress.cache.store import StageCache
import compress.cache.store as store
from compress.cache.folder import CacheLocation, open_folder
folder = Path(sys.argv[1])
cache = StageCache(folder, 10**9, open_folder(CacheLocation(folder, "--cache-dir"), True))
def killed(source, target):
    Path(target).write_bytes(b"half a model")
    os.kill(os.getpid(), signal.SIGKILL)
store.shutil.copyfile = killed
with cache.computing(sys.argv[2]):
    cache.put(sys.argv[2], Path(sys.argv[3]), {"name": "baseline"})
"""


def test_what_a_killed_writer_left_is_counted_then_reaped(tmp_path):
    folder = tmp_path / "cache"
    live = entry(folder, "kept", b"a stage")
    source = tmp_path / "source.onnx"
    source.write_bytes(b"a model")
    command = [sys.executable, "-c", KILLED_WRITER, str(folder), key("killed"), str(source)]
    done = subprocess.run(command, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    [left] = list((folder / "tmp").iterdir())
    assert (left / "model.onnx").read_bytes() == b"half a model"
    assert (folder / "locks" / f"{key('killed')}.lock").exists()  # the kernel dropped the lock
    info = live.info()
    assert (info.entries, info.leftovers, info.leftover_bytes) == (1, 1, len(b"half a model"))
    with live._building() as writing:  # a live writer's folder is never reaped
        live.evict()
        assert writing.exists() and not left.exists()
    assert not list((folder / "locks").iterdir()) and live.has(key("kept"))


def _planted(tmp_path: Path) -> tuple[Path, Path]:
    """A user's folder and file outside the cache, for links planted inside it to point at."""
    outside = tmp_path / "users-folder"
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    return outside, outside / "precious.txt"


PLANTED_AT = {  # each name compress uses inside a cache, and what it is there
    "stages/{key}": "folder",
    "stages/{key}/model.onnx": "file",
    "stages/{key}/entry.json": "file",
    "tmp/0123456789abcdef": "folder",
    "locks/{key}.lock": "file",
    "locks/evicting.lock": "file",
}


@pytest.mark.parametrize("where", PLANTED_AT)
def test_a_link_planted_in_the_cache_is_never_followed(tmp_path, where):
    outside, precious = _planted(tmp_path)
    folder = tmp_path / "cache"
    cache = entry(folder, "abc", b"a stage")
    planted = folder / where.format(key=key("abc"))
    if planted.is_dir():
        shutil.rmtree(planted)
    planted.unlink(missing_ok=True)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(outside if PLANTED_AT[where] == "folder" else precious)
    cache.get(key("abc"), tmp_path / "read.onnx")
    with cache.computing(key("abc")):
        cache.put(key("abc"), tmp_path / "abc.onnx", {"name": "baseline"})
    cache.annotate(key("abc"), {"figures": {}})
    cache.info()
    cache.evict()
    cache.clear()
    assert precious.read_text() == "mine"
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]


def test_clear_removes_only_what_compress_made(tmp_path):
    folder = tmp_path / "cache"
    cache = entry(folder, "abc", b"a stage")
    (folder / "stages" / "notes.txt").write_text("mine")
    (folder / "stages" / "my-folder").mkdir()
    (folder / "tmp" / "my-scratch").mkdir()
    (folder / "locks" / "other.lock").write_text("mine")
    (folder / "README").write_text("mine")
    cleared = cache.clear()
    assert cleared.entries == 1 and not cache.has(key("abc"))
    for path in ("stages/notes.txt", "stages/my-folder", "tmp/my-scratch", "locks/other.lock"):
        assert (folder / path).exists(), path
    assert (folder / "README").read_text() == "mine"
