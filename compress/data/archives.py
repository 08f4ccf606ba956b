"""Checks on a zip file before anything in it is read: how many members it has, how many bytes
they declare uncompressed, and their names.

Every zip compress opens as a model or a data file goes through `checked_members` first: a zip
bomb declares gigabytes in a small file and the reader would inflate them all; a name with
`..`, a leading `/`, a backslash or a drive letter means different files to different readers
(and lands outside the folder for a tool that extracts); and when two members share a name,
Python's zipfile and torch's reader do not pick the same one, so what was checked is not what
is loaded.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass

from compress.config.limits import (
    MAX_ARCHIVE_ENTRIES,
    MAX_DATA_ARCHIVE_BYTES,
    MAX_DATA_ARCHIVE_RATIO,
    MAX_DATA_ARCHIVE_SLACK,
    MAX_MODEL_ARCHIVE_BYTES,
    MAX_MODEL_ARCHIVE_RATIO,
    MAX_MODEL_ARCHIVE_SLACK,
)


class UnsafeArchive(Exception):
    """Why an archive is refused: one line without the file's name, which the caller adds with
    the error class of its domain (a model or a data file)."""


@dataclass(frozen=True)
class ArchiveLimits:
    ratio: int  # declared uncompressed bytes allowed per byte of the file ...
    slack: int  # ... plus this many bytes
    ceiling: int  # and never more than this many in all
    hint: str  # how to make a file that passes, for the message
    entries: int = MAX_ARCHIVE_ENTRIES


MODEL_ARCHIVE = ArchiveLimits(
    MAX_MODEL_ARCHIVE_RATIO,
    MAX_MODEL_ARCHIVE_SLACK,
    MAX_MODEL_ARCHIVE_BYTES,
    "torch saves its members uncompressed; save the model again with torch",
)
DATA_ARCHIVE = ArchiveLimits(
    MAX_DATA_ARCHIVE_RATIO,
    MAX_DATA_ARCHIVE_SLACK,
    MAX_DATA_ARCHIVE_BYTES,
    "save the arrays with numpy.savez (uncompressed), or fewer of them",
)

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checked_members(
    archive: zipfile.ZipFile, file_size: int, limits: ArchiveLimits
) -> list[zipfile.ZipInfo]:
    """The archive's members, once their count, names and declared sizes are within `limits`;
    raises UnsafeArchive otherwise. Reads only the zip's directory, never a member."""
    members = archive.infolist()
    if len(members) > limits.entries:
        raise UnsafeArchive(
            f"the archive has {len(members):,} members, more than the {limits.entries:,} "
            "allowed; refused as a possible zip bomb"
        )
    seen: set[str] = set()
    for member in members:
        name = member.orig_filename  # zipfile cuts a name at a NUL byte; torch's reader does not
        problem = _name_problem(name)
        if problem:
            raise UnsafeArchive(f"the archive member {name!r} {problem}; refused")
        if name in seen:
            raise UnsafeArchive(
                f"the archive has two members named {name!r}; readers disagree on which one "
                "counts, so it is refused"
            )
        seen.add(name)
    declared = sum(m.file_size for m in members)
    allowed = min(limits.ratio * file_size + limits.slack, limits.ceiling)
    if declared > allowed:
        raise UnsafeArchive(
            f"the archive declares {_size(declared)} uncompressed in a {_size(file_size)} file "
            f"(allowed: {limits.ratio}x the file plus {_size(limits.slack)}, at most "
            f"{_size(limits.ceiling)}); refused as a possible zip bomb: {limits.hint}"
        )
    return members


def _name_problem(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if _CONTROL.search(name):
        return "has a control character in its name"
    if "\\" in name:
        return "has a backslash in its name"
    if name.startswith("/") or _DRIVE.match(name):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "has '..' in its path"
    return None


def _size(n: int) -> str:
    """Bytes in decimal units, as the report writes them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
