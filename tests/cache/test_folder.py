"""Which folders compress uses as a stage cache: only its own (a marker and a key it wrote),
never one writable by others, and the default one that cannot be used turns the cache off with a
warning instead of failing over an option nobody passed. `compress cache info|clear` never make
a cache and refuse a folder that is not one."""

from __future__ import annotations

import json
import os
import stat

import pytest

from compress.cache.folder import MARKER, SECRET, CacheFolderError
from compress.cache.store import open_cache
from tests.helpers.cache import entry, key
from tests.helpers.cli import invoke
from tests.helpers.configs import CNN_CONFIG, write_config
from tests.helpers.paths import SAMPLES


@pytest.fixture(autouse=True)
def cache_on(monkeypatch):
    monkeypatch.delenv("COMPRESS_NO_CACHE", raising=False)


def test_a_new_or_empty_folder_becomes_a_private_cache(tmp_path):
    made = open_cache(tmp_path / "new" / "cache", False, pytest.fail)
    assert stat.S_IMODE(os.stat(made.folder).st_mode) == 0o700
    assert json.loads((made.folder / MARKER).read_text())["layout"] == 2
    assert stat.S_IMODE(os.stat(made.folder / SECRET).st_mode) == 0o600
    empty = tmp_path / "empty"
    empty.mkdir()
    assert open_cache(empty, False, pytest.fail).folder == empty and (empty / MARKER).exists()
    again = open_cache(empty, False, pytest.fail)  # the same key: its entries stay believed
    assert again._secret == open_cache(empty, False, pytest.fail)._secret


@pytest.mark.parametrize(
    ("planted", "needle"),
    [
        ("user-file", "is not a compress stage cache"),
        ("tmp", "is not a compress stage cache"),
        ("world-writable", "writable by other users"),
        ("open-key", "readable or writable by others"),
        ("stages-link", "stages is a symbolic link"),
        ("newer", "layout is 3"),
    ],
)
def test_a_folder_compress_cannot_trust_is_refused_by_name(tmp_path, planted, needle):
    folder = tmp_path / "cache"
    if planted in ("user-file", "tmp"):
        folder.mkdir()
        (folder / planted).mkdir() if planted == "tmp" else (folder / planted).write_text("x")
    else:
        entry(folder, "abc", b"a stage")
    if planted == "world-writable":
        folder.chmod(0o777)
    elif planted == "open-key":
        (folder / SECRET).chmod(0o644)
    elif planted == "stages-link":
        (folder / "stages").rename(tmp_path / "elsewhere")
        (folder / "stages").symlink_to(tmp_path / "elsewhere")
    elif planted == "newer":
        (folder / MARKER).write_text('{"layout": 3}')
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(CacheFolderError, match=needle) as refused:
        open_cache(folder, False, pytest.fail)
    assert str(refused.value).startswith(f"--cache-dir {folder}: ")
    result = invoke("cache", "clear", "--cache-dir", folder)
    assert result.exit_code == 2 and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing removed or written


def test_the_home_folder_is_never_a_cache(tmp_path, monkeypatch):
    """`--cache-dir ~` with a ~/tmp of the user's: clear refuses it and removes nothing."""
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    (home / "tmp" / "work.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    for command in (("clear",), ("info",)):
        result = invoke("cache", *command, "--cache-dir", "~")
        assert result.exit_code == 2 and "is not a compress stage cache" in result.stderr
    assert (home / "tmp" / "work.txt").read_text() == "mine"
    assert sorted(p.name for p in home.iterdir()) == ["tmp"]


def test_cache_info_and_clear_never_make_a_cache(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    for command in ("info", "clear"):
        result = invoke("cache", command, "--cache-dir", missing)
        assert result.exit_code == 2 and "no stage cache there" in result.stderr
    assert not missing.exists()
    monkeypatch.delenv("COMPRESS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result = invoke("cache", "info")
    assert result.exit_code == 0 and "no stage cache yet" in result.stdout
    assert not (tmp_path / "xdg").exists()


def test_cache_info_and_clear_on_a_real_cache(tmp_path, stage_cache):
    entry(stage_cache, "abc", bytes(2000))
    (stage_cache / "tmp" / "0123456789abcdef").mkdir()  # a killed writer's
    (stage_cache / "tmp" / "0123456789abcdef" / "model.onnx").write_bytes(bytes(500))
    info = json.loads(invoke("cache", "info", "--json").stdout)
    assert (info["entries"], info["leftovers"], info["leftover_bytes"]) == (1, 1, 500)
    stage_cache.chmod(0o500)  # read-only: info only reads
    try:
        assert invoke("cache", "info").exit_code == 0
    finally:
        stage_cache.chmod(0o700)
    cleared = invoke("cache", "clear")
    assert cleared.exit_code == 0 and "removed 1 stage(s) and 1 unfinished" in cleared.stdout
    assert not any((stage_cache / "stages").iterdir()) and not any((stage_cache / "tmp").iterdir())


def run(tmp_path, *options):
    config = write_config(tmp_path, CNN_CONFIG)
    out = tmp_path / "out"
    return invoke("run", SAMPLES / "digits_cnn.pt2", "-c", config, "-o", out, "--json", *options)


def test_a_default_cache_that_cannot_be_used_turns_the_cache_off_with_a_warning(
    tmp_path, monkeypatch
):
    """A read-only home: the run goes on without the cache, and says so once."""
    home = tmp_path / "home"
    home.mkdir(mode=0o500)
    monkeypatch.delenv("COMPRESS_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    if os.geteuid() == 0:  # root writes anywhere: a file where the folder would be instead
        home.chmod(0o700)
        (home / ".cache").write_text("not a folder")
    result = run(tmp_path)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "stage cache" in line]
    assert len(warnings) == 1 and "running without the stage cache" in warnings[0]
    assert warnings[0].startswith(f"warning: the stage cache {home}/.cache/compress: ")


def test_a_cache_folder_the_user_named_that_cannot_be_one_is_refused(tmp_path, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    result = run(tmp_path, "--cache-dir", afile)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --cache-dir {afile}: is a file, not a folder")
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(afile))
    result = run(tmp_path)
    assert result.exit_code == 2 and result.stderr.startswith("error: COMPRESS_CACHE_DIR ")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COMPRESS_CACHE_MAX_MB", "nan"),
        ("COMPRESS_CACHE_MAX_MB", "inf"),
        ("COMPRESS_CACHE_MAX_MB", "1e400"),
        ("COMPRESS_CACHE_MAX_MB", "abc"),
        ("COMPRESS_CACHE_MAX_MB", "-5"),
        ("COMPRESS_NO_CACHE", "maybe"),
    ],
)
def test_environment_values_are_checked_like_options(tmp_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    result = run(tmp_path)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"error: {variable}={value}: ")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    info = invoke("cache", "info")
    assert info.exit_code == 2 or variable == "COMPRESS_NO_CACHE"


def test_a_cache_key_of_another_cache_is_not_accepted_here(tmp_path):
    """Each cache has its own key: an entry copied from another cache folder is a miss."""
    first = entry(tmp_path / "one", "abc", b"a stage")
    second = entry(tmp_path / "two", "other", b"another stage")
    assert first._secret != second._secret
    stage = tmp_path / "one" / "stages" / key("abc")
    os.rename(stage, tmp_path / "two" / "stages" / key("abc"))
    assert second.get(key("abc"), tmp_path / "read.onnx") is None
