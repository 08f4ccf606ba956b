"""Fixed sizes in a `.pt2` program's reshapes and splits, refitted after pruning.

torch.export writes every size it could prove constant as a number: GPT-2's `view(x, [-1, 32,
384])` keeps the hidden width 384, its `split(qkv, 384, 2)` the width of one projection. Pruning
narrows the tensors, and those numbers no longer fit. Each reshape is compared with the shapes the
program recorded when it was saved (`node.meta["val"]`): its sizes are grouped into runs whose
products match between input and output (`[b, 32, 384] -> [b, 32, 6, 64]`: b | 32 | 384 -> 6, 64),
and a run whose input lost channels gets its first fixed output size scaled to fit (6 -> 4 heads of
64; 384 -> 264). Sizes given as -1 or computed from the input are left alone: they already follow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _saved_shape(node) -> tuple[int, ...] | None:
    """The shape the program recorded for a node, with symbolic sizes at their example value."""
    import torch

    value = node.meta.get("val") if hasattr(node, "meta") else None
    if not isinstance(value, torch.Tensor):
        return None
    sizes = []
    for size in value.shape:
        hint = size if isinstance(size, int) else getattr(size.node, "hint", None)
        if hint is None:
            return None
        sizes.append(int(hint))
    return tuple(sizes)


def _runs(before: tuple, after: tuple) -> list[tuple[range, range]] | None:
    """Runs of input and output dimensions with equal products, or None when they do not pair."""
    runs, i, j = [], 0, 0
    while i < len(before) and j < len(after):
        start_i, start_j = i, j
        left, right = before[i], after[j]
        i, j = i + 1, j + 1
        while left != right:
            if left < right and i < len(before):
                left, i = left * before[i], i + 1
            elif right < left and j < len(after):
                right, j = right * after[j], j + 1
            else:
                return None
        runs.append((range(start_i, i), range(start_j, j)))
    if any(size != 1 for size in (*before[i:], *after[j:])):
        return None
    return runs


def refit_sizes(sizes: list, saved_in: tuple, saved_out: tuple, now_in: tuple) -> list | None:
    """`sizes` (a reshape's argument) refitted to an input now `now_in` instead of `saved_in`;
    None where the shapes cannot be paired or the new width does not divide."""
    runs = _runs(saved_in, saved_out)
    if runs is None or len(now_in) != len(saved_in) or len(sizes) != len(saved_out):
        return None
    sizes = list(sizes)
    for inputs, outputs in runs:
        now = math.prod(now_in[k] for k in inputs)
        if now == math.prod(saved_in[k] for k in inputs):
            continue
        fixed = [k for k in outputs if type(sizes[k]) is int and sizes[k] != -1]
        if len(fixed) < len(outputs):  # a -1 or a size read from the input follows by itself
            continue
        rest = math.prod(saved_out[k] for k in outputs[1:])
        if now % rest:
            return None
        sizes[outputs[0]] = now // rest
    return sizes


def refit_program(graph_module: torch.fx.GraphModule, inputs: tuple) -> None:
    """Run the program on `inputs`, refitting each reshape's and split's fixed sizes to the
    tensors it now gets; a program needing none is left as it was."""
    import torch

    aten = torch.ops.aten
    reshapes = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}

    class Refit(torch.fx.Interpreter):
        changed = False

        def run_node(self, node):
            if node.op == "call_function" and node.target in reshapes | {aten.split.Tensor}:
                value = self.env.get(node.args[0]) if node.args else None
                if isinstance(value, torch.Tensor):
                    self.changed |= _refit(node, tuple(value.shape))
            return super().run_node(node)

    def _refit(node, now_in: tuple) -> bool:
        saved_in, saved_out = _saved_shape(node.args[0]), _saved_shape(node)
        if saved_in is None or now_in == saved_in:
            return False
        if node.target == aten.split.Tensor:  # its pieces' saved size, scaled to the input
            dim, pieces = (node.args[2] if len(node.args) > 2 else 0), node.meta.get("val")
            if type(node.args[1]) is not int or not pieces or not hasattr(pieces[0], "shape"):
                return False
            size, before, now = int(pieces[0].shape[dim]), saved_in[dim], now_in[dim]
            if before % size or (now * size) % before or now * size // before == node.args[1]:
                return False
            node.args = (node.args[0], now * size // before, *node.args[2:])
            return True
        if saved_out is None:
            return False
        sizes = refit_sizes(node.args[1], saved_in, saved_out, now_in)
        if sizes is None or sizes == list(node.args[1]):
            return False
        node.args = (node.args[0], sizes, *node.args[2:])
        return True

    refit = Refit(graph_module)
    with torch.no_grad():
        refit.run(*inputs)
    if refit.changed:
        graph_module.recompile()
