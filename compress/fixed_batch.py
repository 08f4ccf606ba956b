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
    arrays: list[np.ndarray], size: int, fixed: bool
) -> Iterator[tuple[list[np.ndarray], int]]:
    """(chunk, rows that are real samples) over `arrays` in chunks of `size`; with `fixed` every
    chunk has exactly `size` rows."""
    for start in range(0, len(arrays[0]), size):
        part = [a[start : start + size] for a in arrays]
        real = len(part[0])
        yield (padded(part, size) if fixed else part), real


class FixedBatchModule:
    """A torch callable (a fixed-batch program's `.module()`) that takes any batch: the inputs
    are split into chunks of `batch`, and the outputs (a tensor, a tuple or list, or a dict of
    them) put together again without the padding rows."""

    def __init__(self, module, batch: int):
        self.module, self.batch = module, batch

    def __call__(self, *inputs):
        import torch

        arrays = [t.detach().cpu().numpy() for t in inputs]
        outputs = [
            _rows(self.module(*(torch.from_numpy(a) for a in part)), real)
            for part, real in chunks(arrays, self.batch, fixed=True)
        ]
        return _join(outputs)

    def eval(self):
        self.module.eval()
        return self


def _rows(output, real: int):
    """`output` with only its first `real` rows."""
    if isinstance(output, dict):
        return type(output)({k: _rows(v, real) for k, v in output.items()})
    if isinstance(output, list | tuple):
        return type(output)(_rows(v, real) for v in output)
    return output[:real] if getattr(output, "dim", lambda: 0)() > 0 else output


def _join(outputs: list):
    import torch

    first = outputs[0]
    if isinstance(first, dict):
        return type(first)({k: _join([o[k] for o in outputs]) for k in first})
    if isinstance(first, list | tuple):
        return type(first)(_join(list(parts)) for parts in zip(*outputs, strict=True))
    return torch.cat(outputs) if first.dim() > 0 else first
