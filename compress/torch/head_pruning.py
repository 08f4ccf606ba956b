"""Attention heads for `prune.channels`: transformers lose whole heads, and still run.

Hugging Face's BERT, DistilBERT and ViT attention (and modules written like them) keep a head
count (`num_attention_heads`, `num_heads`, `n_heads`) and a head size (`attention_head_size`,
`head_dim`) and reshape their query / key / value projections to `(-1, head_size)`. Pruning
channels inside a head breaks that reshape; removing whole heads and keeping the head size does
not. Separate query / key / value Linears are handed to torch-pruning as heads; a fused one
(GPT-2's `c_attn`, `[q | k | v]`) is cut here, with its output projection, before torch-pruning
runs, since torch-pruning cannot rank a fused projection's heads. GPT-2's `Conv1D` layers (a
Linear with a transposed weight, which torch-pruning cannot trace) become `nn.Linear` first.
In a `.pt2` program the heads are found in the graph (`compress.torch.program_attention`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compress.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from typing_extensions import TypeIs

HEAD_COUNT_NAMES = ("num_attention_heads", "num_heads", "n_heads", "n_head")
HEAD_SIZE_NAMES = ("attention_head_size", "head_dim", "head_size")
SEPARATE_PROJECTIONS: tuple[tuple[str, str, str], ...] = (
    ("query", "key", "value"),
    ("q_lin", "k_lin", "v_lin"),
)
SEPARATE_PROJECTIONS += (("q_proj", "k_proj", "v_proj"),)
FUSED_PROJECTIONS = (("c_attn", "c_proj"),)  # [q | k | v] projection, output projection
WIDTH_NAMES = ("all_head_size", "split_size")  # heads * head size, where the code keeps it


@dataclass
class Attention:
    """One attention module whose heads can be removed whole."""

    name: str
    module: nn.Module | None  # None in a `.pt2` program (compress.torch.program_attention)
    head_count_name: str | None  # the module's attribute that counts heads
    head_size: int
    projections: tuple[nn.Linear, ...]  # (q, k, v), or the fused (qkv,)
    output: nn.Linear | None = None  # a fused projection's output projection (reads the heads)

    @property
    def fused(self) -> bool:
        return len(self.projections) == 1

    @property
    def fused_output(self) -> nn.Linear:
        """A fused projection's output projection (every fused attention is found with one)."""
        if self.output is None:
            raise ValueError(f"{self.name}: a fused attention without its output projection")
        return self.output

    @property
    def heads(self) -> int:
        width = self.projections[0].out_features // (3 if self.fused else 1)
        return width // self.head_size


@dataclass
class HeadPlan:
    """What torch-pruning needs to know: head counts, and projections it must leave alone."""

    num_heads: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)

    def pruner_options(self, amount: float) -> dict:
        if not self.num_heads:
            return {}
        fewest = min(self.num_heads.values())  # torch-pruning removes ceil(ratio * heads): keep 1
        ratio = min(amount, (fewest - 1) / fewest - 1e-9)
        return {"prune_num_heads": True, "prune_head_dims": False, "head_pruning_ratio": ratio}


def _int_attribute(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if type(getattr(module, n, None)) is int), None)


def _children(module: nn.Module, names: tuple[str, ...]) -> tuple | None:
    from torch import nn

    children = tuple(getattr(module, n, None) for n in names)
    return children if all(isinstance(c, nn.Linear) for c in children) else None


def find_attention(model: nn.Module) -> list[Attention]:
    """Every attention module that names its head count and size and has Linear projections."""
    from torch import nn

    found = []
    for name, module in model.named_modules():
        count_name = _int_attribute(module, HEAD_COUNT_NAMES)
        size_name = _int_attribute(module, HEAD_SIZE_NAMES)
        if isinstance(module, nn.MultiheadAttention) or not count_name or not size_name:
            continue
        size = getattr(module, size_name)
        for names in SEPARATE_PROJECTIONS:
            if projections := _children(module, names):
                found.append(Attention(name, module, count_name, size, projections))
        for qkv_name, out_name in FUSED_PROJECTIONS:
            if fused := _children(module, (qkv_name, out_name)):
                found.append(Attention(name, module, count_name, size, fused[:1], fused[1]))
    if _is_program(model):
        from compress.torch.program_attention import find_program_attention

        found += find_program_attention(model)
    return [a for a in found if _whole_heads(a)]


def _is_program(model: nn.Module) -> TypeIs[torch.fx.GraphModule]:
    import torch

    return isinstance(model, torch.fx.GraphModule)


def _whole_heads(attention: Attention) -> bool:
    """Projections of whole, equal heads (not grouped-query attention's narrower key / value)."""
    widths = {p.out_features for p in attention.projections}
    if (
        attention.fused
        and attention.projections[0].out_features != 3 * attention.fused_output.in_features
    ):
        return False  # not [q | k | v] (e.g. GPT-2's cross-attention, keys and values only)
    return len(widths) == 1 and widths.pop() % attention.head_size == 0


def linear_from_conv1d(model: nn.Module) -> int:
    """Replace transformers' `Conv1D` (y = x @ W + b, W stored [in, out]) by equal `nn.Linear`s."""
    import torch
    from torch import nn

    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            weight, bias = getattr(child, "weight", None), getattr(child, "bias", None)
            if type(child).__name__ != "Conv1D" or weight is None or weight.dim() != 2:
                continue
            inputs, outputs = weight.shape
            linear = nn.Linear(inputs, outputs, bias=bias is not None)
            with torch.no_grad():
                linear.weight.copy_(weight.t())
                if bias is not None:
                    linear.bias.copy_(bias)
            setattr(parent, child_name, linear)
            replaced += 1
    return replaced


def _cut_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> None:
    """Keep only `keep` of a Linear's outputs (dim 0) or inputs (dim 1), in place."""
    import torch
    from torch import nn

    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(dim, keep).clone())
        if dim == 0 and linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias[keep].clone())
    linear.out_features, linear.in_features = linear.weight.shape


def prune_fused_heads(attention: Attention, amount: float) -> None:
    """Remove the `amount` of a fused projection's heads with the smallest L2 weight norm."""
    import torch

    qkv, out, size = attention.projections[0], attention.fused_output, attention.head_size
    heads = qkv.out_features // (3 * size)
    removed = min(math.ceil(amount * heads), heads - 1)
    if removed <= 0:
        return
    rows = qkv.weight.detach().view(3, heads, size, -1).transpose(0, 1).reshape(heads, -1)
    cols = out.weight.detach().t().reshape(heads, -1)
    norms = rows.pow(2).sum(1) + cols.pow(2).sum(1)
    kept = norms.argsort(descending=True)[: heads - removed].sort().values
    head_channels = (kept[:, None] * size + torch.arange(size)).flatten()
    width = heads * size
    _cut_linear(qkv, torch.cat([head_channels + i * width for i in range(3)]), 0)
    _cut_linear(out, head_channels, 1)


def sync_head_counts(model: nn.Module) -> None:
    """Write each attention module's head count (and widths) from its pruned projections (a
    program's fixed sizes are refitted by `compress.torch.program_shapes` instead)."""
    for attention in find_attention(model):
        if attention.module is None or attention.head_count_name is None:
            continue  # a program's (its sizes are refitted), or one without a head count
        setattr(attention.module, attention.head_count_name, attention.heads)
        for name in WIDTH_NAMES:
            if type(getattr(attention.module, name, None)) is int:
                setattr(attention.module, name, attention.heads * attention.head_size)


def plan_heads(model: nn.Module, amount: float, kept_whole: list) -> HeadPlan:
    """Cut fused projections' heads now; tell torch-pruning about the separate ones."""
    whole = {id(m) for kept in kept_whole if kept is not None for m in kept.modules()}
    plan = HeadPlan()
    for attention in find_attention(model):
        if any(id(m) in whole for m in (attention.module, *attention.projections)):
            continue
        if attention.fused:
            prune_fused_heads(attention, amount)
            plan.ignored.append(attention.projections[0])
        else:
            plan.num_heads.update(dict.fromkeys(attention.projections, attention.heads))
    sync_head_counts(model)
    return plan


@contextlib.contextmanager
def without_kv_cache(model: nn.Module):
    """Turn transformers' key/value cache off while torch-pruning traces the model: the cache's
    concatenation has no channel count torch-pruning can infer."""
    configs: dict[int, Any] = {
        id(c): c
        for m in model.modules()
        if getattr(c := getattr(m, "config", None), "use_cache", False) is True
    }
    for config in configs.values():
        config.use_cache = False
    try:
        yield
    finally:
        for config in configs.values():
            config.use_cache = True


def refuse_program_attention(module: nn.Module, key: str) -> None:
    """Refuse a `.pt2` program with attention whose heads cannot be found in its graph (the
    projections do not reach the attention through reshapes alone)."""
    if not _is_program(module):
        return
    from compress.torch.program_attention import attention_sites

    sites, found = attention_sites(module), len(find_attention(module))
    if found < sites:
        raise ConfigError(
            f"{key}: {sites - found} of the {sites} attention blocks in the .pt2 program have "
            "query / key / value projections that cannot be traced to whole heads, and pruning "
            "inside a head breaks its reshapes; save a state_dict (torch.save(model.state_dict())) "
            "and name the model's class in model.arch, or list the attention layers in ignore "
            "to prune only the rest"
        )


def head_counts(model: nn.Module) -> dict[str, int]:
    """Heads of every attention module `find_attention` sees, by module name."""
    return {a.name: a.heads for a in find_attention(model)}


def heads_removed(before: dict[str, int], after: dict[str, int]) -> str:
    """The report's words on heads: '; removed 12 of 36 attention heads in 6 modules', or ''."""
    changed = [name for name in before if after.get(name) != before[name]]
    if not changed:
        return ""
    removed = sum(before[name] - after.get(name, 0) for name in changed)
    total = sum(before.values())
    return f"; removed {removed} of {total} attention heads in {len(changed)} modules"


def fix_layerwise_head_steps(pruner, params) -> None:
    """Make `steps` remove the heads one step would. torch-pruning removes ceil(ratio * heads
    left) heads per module at each step, with the ratio meant for the heads at the start, so
    steps would compound; give it per step the share of the heads left that reaches the target."""
    if params.scope != "layerwise" or not getattr(pruner, "prune_num_heads", False):
        return
    heads = max(pruner.num_heads.values(), default=0)
    removed = [math.ceil(ratio * heads) for ratio in pruner.per_step_head_pruning_ratio]
    shares = [0.0]
    for before, target in zip(removed, removed[1:], strict=False):
        now = target - before
        shares.append((now - 0.5) / (heads - before) if now > 0 else 0.0)  # ceil gives `now`
    pruner.per_step_head_pruning_ratio = shares
