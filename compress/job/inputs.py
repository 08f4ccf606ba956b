"""Nothing a command writes replaces a file it reads (compress.models.run_files lists them).

Files are compared by what they are, not by how they are named: the (device, inode) of the path
and of what a link there points to, so a symbolic link, a hard link or `./a/../b` to an input is
recognised as that input.
"""

from __future__ import annotations

import os
from pathlib import Path

from compress.errors import OutputDirError
from compress.models.run_files import InputFile


def identities(path: Path) -> set[tuple[int, int]]:
    """(device, inode) of the entry at `path` and of the file a link there leads to."""
    found = set()
    for follow in (False, True):
        try:
            st = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def refuse_overwriting(target: Path, inputs: list[InputFile], action: str, fix: str) -> None:
    """Refuse (exit 2) to write `target` when it is one of `inputs`: `action` is what would
    write it (`--force`, `--junit`), `fix` what to do instead."""
    taken = identities(target)
    for item in inputs:
        if taken & identities(item.path):
            named = "" if Path(item.path) == Path(target) else f" ({item.path})"
            raise OutputDirError(
                f"{target} is {item.label}{named}; {action} would overwrite it: {fix}"
            )
