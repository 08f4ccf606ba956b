"""Running a model whose batch size is fixed (a torch.export program saved without
dynamic_shapes, or its ONNX export) on any number of samples: the samples go in chunks of that
size, the last chunk filled up with copies of its last sample, and the copies' outputs dropped."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def padded(part: list[np.ndarray], size: int) -> list[np.ndarray]:
    """`part` (fewer than `size` rows) filled up to `size` rows with copies of its last row."""
    short = size - len(part[0])
    if short <= 0:
        return part
    return [np.concatenate([a, np.repeat(a[-1:], short, axis=0)]) for a in part]


def chunks(
    arrays: list[np.ndarray], size: int, fixed: int | None
) -> Iterator[tuple[list[np.ndarray], int]]:
    """(chunk, rows that are real samples) over `arrays` in chunks of `size`, or, for a model
    whose batch is `fixed`, in chunks of exactly that many rows."""
    size = fixed or size
    for start in range(0, len(arrays[0]), size):
        part = [a[start : start + size] for a in arrays]
        real = len(part[0])
        yield (padded(part, size) if fixed else part), real
