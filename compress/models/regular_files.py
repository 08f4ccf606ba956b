"""Untrusted files read within limits (a model folder's files, text data): regular files only (a
FIFO or a device could be endless, and is named for what it is), of at most a given size,
decoded as UTF-8 JSON where that is what they hold. A symbolic link is followed: the Hugging Face
cache's snapshot folders are links into its blob store. Errors are of the caller's domain
(ModelLoadError, DataError: exit 2)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from compress.errors import InputError, ModelLoadError

_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def stat_of(path: Path, what: str, error: type[InputError] = ModelLoadError) -> os.stat_result:
    """os.stat of `path` (links followed); `error` naming `what` when it is missing or unreadable
    (a path that exists is never called "not found")."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as e:
        raise error(f"{what}: cannot read {path}: {e.strerror or e}") from None


def regular_size(path: Path, what: str, error: type[InputError] = ModelLoadError) -> int:
    """The size of the regular file at `path`; `error` when it is missing or is a FIFO, a device
    or a folder (`what` names it in the message, e.g. "config.json of FOLDER")."""
    info = stat_of(path, what, error)
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what}: {path} is {kind_of(info.st_mode)}, not a regular file")
    return info.st_size


def read_bounded(
    path: Path, limit: int, what: str, error: type[InputError] = ModelLoadError
) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (checked before and while reading:
    a file that grows meanwhile is refused too)."""
    size = regular_size(path, what, error)
    if size > limit:
        raise error(
            f"{what}: {path} is {size:,} bytes, over the limit of {limit:,} for this file; "
            "it is not the file its name says, or use a part of it"
        )
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{what}: {path} grew past {limit:,} bytes while it was read")
    return data


def read_json(path: Path, limit: int, what: str, kind: type = dict) -> Any:
    """A bounded JSON file whose top-level value is a `kind` (an object, or a list)."""
    data = read_bounded(path, limit, what)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelLoadError(f"{what}: {path} is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as e:
        reason = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "nested"
        raise ModelLoadError(f"{what}: {path} is not valid JSON ({reason})") from None
    if not isinstance(value, kind):
        wanted = "an object" if kind is dict else f"a {kind.__name__}"
        raise ModelLoadError(f"{what}: {path} holds a JSON {type(value).__name__}, not {wanted}")
    return value
