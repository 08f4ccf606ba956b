"""Read named arrays from an .npz file (numeric arrays only: pickled objects are refused).

The file is untrusted: before numpy reads it, the zip passes the archive limits and every
array's header is read, so that an array declaring more bytes than its member holds (numpy
allocates the declared size first) is refused."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.data.archives import DATA_ARCHIVE, UnsafeArchive, checked_members
from compress.errors import DataError

if TYPE_CHECKING:
    from compress.config import DataSource


def read(source: DataSource, where: str, path: Path):
    """(inputs by name, labels or None, None): keys as the config names them."""
    try:
        check_archive(path)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(
                f"{where}.path: {path} holds pickled objects, which are refused; "
                "save plain numeric arrays with numpy.savez"
            ) from None
        raise DataError(f"{where}.path: {path} is not a readable .npz file: {e}") from None
    except UnsafeArchive as e:
        raise DataError(f"{where}.path: {path}: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{where}.path: {path} is not a readable .npz file ({e})") from None
    keys = [*source.input_names, *([source.labels] if source.labels else [])]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(
            f"{where}: key {missing[0]!r} is not in {path.name} (it has: "
            f"{', '.join(sorted(arrays)) or 'nothing'})"
        )
    lengths = {k: len(arrays[k]) if arrays[k].ndim else 0 for k in keys}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(
            f"{where}: arrays in {path.name} must share a non-empty first (sample) "
            f"dimension; got {lengths}"
        )
    limit = source.limit or len(arrays[keys[0]])
    inputs = {k: arrays[k][:limit] for k in source.input_names}
    labels = arrays[source.labels][:limit] if source.labels else None
    return inputs, labels, None


def check_archive(path: Path) -> None:
    """Archive limits, then each array's declared size against its member's (headers only)."""
    if not zipfile.is_zipfile(path):
        return  # numpy says what it is not
    with zipfile.ZipFile(path) as archive:
        for member in checked_members(archive, path.stat().st_size, DATA_ARCHIVE):
            with archive.open(member) as f:
                fmt = np.lib.format
                header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else None
                shape, _, dtype = (header or fmt.read_array_header_2_0)(f)
                declared = math.prod(shape) * dtype.itemsize
                present = member.file_size - f.tell()
            if not dtype.hasobject and declared > present:
                raise UnsafeArchive(
                    f"array {member.filename!r} declares {declared:,} bytes (shape "
                    f"{list(shape)}, {dtype}) but holds {present:,}; the file is corrupt"
                )
