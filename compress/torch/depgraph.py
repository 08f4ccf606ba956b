"""torch-pruning glue for `prune.channels`: build the DepGraph pruner, then plan and apply each
step, refusing a plan that removes no channel at all."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from compress.errors import ConfigError, PassError, first_line
from compress.torch.head_pruning import plan_heads, sync_head_counts, without_kv_cache
from compress.torch.module_names import attention_modules, ignore_advice, traceback_modules
from compress.torch.program_shapes import refit_program
from compress.torch.training import first_output

if TYPE_CHECKING:
    from compress.torch.context import TorchContext

EXAMPLE_SAMPLES = 4  # inputs torch-pruning traces the model with
TAYLOR_SAMPLES = 256  # train samples whose gradients rank channels for `importance: taylor`


def example_inputs(ctx: TorchContext, count: int = EXAMPLE_SAMPLES) -> tuple:
    """Real samples as torch tensors, in the model's input order."""
    import torch

    return tuple(torch.from_numpy(a) for a in ctx.samples(count))


def _importance(name: str):
    import torch_pruning as tp

    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def make_pruner(model, ctx: TorchContext, params, kept_whole: list, key: str):
    """A torch-pruning MetaPruner for `params` (amount, importance, scope, round_to, steps)."""
    import torch
    import torch_pruning as tp

    # nn.MultiheadAttention: tell DepGraph the head count, so heads stay whole.
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    plan = plan_heads(model, params.amount, kept_whole)  # transformers lose whole heads
    refit_program_sizes(model, ctx)  # a program's fused projections lost heads just now
    try:
        with warnings.catch_warnings(), without_kv_cache(model):  # notes about parameters
            warnings.simplefilter("ignore")
            return tp.pruner.MetaPruner(
                model,
                example_inputs(ctx),
                importance=_importance(params.importance),
                global_pruning=params.scope == "global",
                pruning_ratio=params.amount,
                iterative_steps=params.steps,
                ignored_layers=[m for m in kept_whole if m is not None] + plan.ignored,
                round_to=params.round_to,
                num_heads=heads | plan.num_heads,
                output_transform=outputs_as_ops,
                **plan.pruner_options(params.amount),
            )
    except Exception as e:
        raise PassError(f"{key}: torch-pruning cannot trace the model: {first_line(e)}") from e


def outputs_as_ops(output) -> list:
    """The model's output tensors, each through an op of its own, so that DepGraph marks the
    channels of every output as the model's (an OUTPUT node), also where an output comes
    straight from a layer (a base transformer's last LayerNorm gives last_hidden_state):
    `_reaches_output` then keeps them, and the outputs keep their shape."""
    from torch_pruning.utils import flatten_as_list

    return [tensor * 1 for tensor in flatten_as_list(output)]


def prune_step(pruner, model, ctx: TorchContext, params, key: str) -> None:
    """Plan one step, refuse a plan that removes nothing, then prune."""
    if params.importance == "taylor":
        _accumulate_gradients(model, ctx)
    try:
        groups = list(pruner.step(interactive=True))
    except Exception as e:
        names = traceback_modules(model, e) or attention_modules(model, example_inputs(ctx))
        fix = (
            ignore_advice(names)
            if names
            else "no module could be named from the failure; lower amount"
        )
        raise PassError(
            f"{key}: torch-pruning could not plan the pruning ({first_line(e, 200)}); {fix}"
        ) from e
    groups = [group for group in groups if not _reaches_output(group)]
    if not any(idxs for group in groups for _, idxs in group):
        rounding = f" rounded to multiples of {params.round_to}" if params.round_to else ""
        raise ConfigError(
            f"{key}.amount: {params.amount}{rounding} removes no channel at all; "
            + ("lower round_to or raise amount" if params.round_to else "raise amount")
        )
    for group in groups:
        group.prune()
    sync_head_counts(model)
    refit_program_sizes(model, ctx)
    model.zero_grad(set_to_none=True)


def _reaches_output(group) -> bool:
    """Whether a group's channels are the model's output (a pooled hidden state, a sentence
    embedding): those stay, so the model's outputs keep their shape."""
    import torch_pruning as tp

    return any(dep.target.type == tp.ops.OPTYPE.OUTPUT for dep, _ in group)


def refit_program_sizes(model, ctx: TorchContext) -> None:
    """A `.pt2` program's reshapes hold fixed sizes: fit them to the pruned layers."""
    import torch

    if isinstance(model, torch.fx.GraphModule):
        refit_program(model, example_inputs(ctx))


def _accumulate_gradients(model, ctx: TorchContext) -> None:
    """Gradients of the cross-entropy on train samples, which Taylor importance reads."""
    import torch

    train = ctx.datasets["train"]
    inputs = [torch.from_numpy(a[:TAYLOR_SAMPLES]) for a in train.inputs.values()]
    if train.labels is None:  # the pass's check requires data.train.labels for taylor
        raise ConfigError("importance: taylor needs data.train.labels")
    labels = torch.from_numpy(train.labels[:TAYLOR_SAMPLES]).long()
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(first_output(model(*inputs)), labels).backward()


def channel_counts(model) -> dict[str, int]:
    """Output channels (or features) of every convolution and Linear layer, by name."""
    import torch

    return {
        name: m.out_channels if isinstance(m, torch.nn.modules.conv._ConvNd) else m.out_features
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))
    }
