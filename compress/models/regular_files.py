"""A model folder's files read within limits, through compress.files (regular files only, read
bounded from the handle that was checked): their size, and JSON of a given top-level type. A
symbolic link is followed: the Hugging Face cache's snapshot folders are links into its blobs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compress.errors import InputError, ModelLoadError
from compress.files import path_problem, read_bounded


def regular_size(path: Path, what: str, error: type[InputError] = ModelLoadError) -> int:
    """The size of the regular file at `path`; `error` naming `what` when it is missing or is a
    FIFO, a device or a folder."""
    problem = path_problem(path)
    if problem:
        raise error(f"{what} {path}: {problem}")
    return os.stat(path).st_size


def read_json(path: Path, limit: int, what: str, kind: type = dict) -> Any:
    """A bounded JSON file whose top-level value is a `kind` (an object, or a list)."""
    data = read_bounded(path, limit, what, ModelLoadError)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelLoadError(f"{what} {path}: is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as e:
        reason = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "nested"
        raise ModelLoadError(f"{what} {path}: is not valid JSON ({reason})") from None
    if not isinstance(value, kind):
        wanted = "an object" if kind is dict else f"a {kind.__name__}"
        raise ModelLoadError(f"{what} {path}: holds a JSON {type(value).__name__}, not {wanted}")
    return value
