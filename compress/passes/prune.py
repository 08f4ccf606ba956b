"""Pruning passes on the torch model.

`prune.channels` removes whole channels with torch-pruning's dependency graph (DepGraph), so the
layers really shrink and every layer that depends on them (residual adds, depthwise convolutions,
BatchNorm, the next layer's inputs) shrinks with them. `prune.magnitude` zeroes single weights
with torch.nn.utils.prune: the file keeps every weight, so only its compressed size shrinks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import Field

from compress.errors import ConfigError, PassError, first_line
from compress.passes.base import PassDetails, PassInput, PassResult, SpeedGuardParams, TorchPass
from compress.passes.registry import register
from compress.torch.channel_splits import channel_split_modules
from compress.torch.depgraph import channel_counts, example_inputs, make_pruner, prune_step
from compress.torch.finetune import FinetuneParams, check_train_data, finetune
from compress.torch.head_pruning import (
    fix_layerwise_head_steps,
    head_counts,
    heads_removed,
    linear_from_conv1d,
    refuse_program_attention,
)
from compress.torch.module_names import failing_modules, ignore_advice, matching_names

if TYPE_CHECKING:
    from compress.passes.context import PassContext

# Channel multiple kept by default: bench/zoo.py measured odd counts 0.5-0.9x the unpruned speed
# on depthwise CNNs in ONNX Runtime, multiples of 8 faster (README, "Pruning, measured").
ROUND_TO = 8


class PruneParams(SpeedGuardParams):
    amount: float = Field(gt=0, lt=1, description="fraction of channels (or weights) removed")
    ignore: list[str] = Field(
        default_factory=list,
        description="module names or fnmatch globs (`layers.*.attn`) left whole (the final "
        "classifier always is)",
    )


class ChannelPruningDetails(PassDetails):
    """prune.channels: the layers whose output channels changed, as [before, after]."""

    channels: dict[str, list[int]] = {}
    too_small_to_round: dict[str, int] = Field(
        default_factory=dict, description="layers left whole: round_to would empty them"
    )
    finetune_losses: list[float] = []


class MagnitudePruningDetails(PassDetails):
    pruned_layer_sparsity: float | None = Field(
        default=None, description="the share of zeros in the pruned layers' weights"
    )
    finetune_losses: list[float] = []


PruningParamsT = TypeVar("PruningParamsT", bound=PruneParams)


class PruningPass(TorchPass[PruningParamsT]):
    """What both pruning passes share: `ignore` names checked against the model, fine-tuning."""

    reads = ()  # fine-tuning reads data.train, which every stage's key covers

    def check(self, config) -> None:
        if isinstance(self.params, FinetuneParams):  # both pruning passes' params are
            check_train_data(self.params, config, self.key)

    def check_model(self, model, ctx: PassContext) -> None:
        matching_names(model, self.params.ignore, f"{self.key}.ignore")

    def kept_whole(self, module, ctx: PassContext) -> list:
        """The modules to leave untouched: `ignore`, and the layer that produces the output."""
        names = dict(module.named_modules())
        ignored = matching_names(module, self.params.ignore, f"{self.key}.ignore")
        return [names[n] for n in ignored] + output_layers(module, ctx)


def output_layers(module, ctx: PassContext) -> list:
    """The layers whose outputs are the model's outputs (its classes, its vocabulary): in a
    `.pt2` program, found in the graph; otherwise the last Linear or convolution it calls."""
    import torch

    if isinstance(module, torch.fx.GraphModule):
        return _program_output_layers(module)
    layers = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    called = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: called.append(m))
        for m in module.modules()
        if isinstance(m, layers)
    ]
    try:
        with torch.no_grad():
            module(*example_inputs(ctx))
    finally:
        for hook in hooks:
            hook.remove()
    return called[-1:]


def _program_output_layers(graph_module) -> list:
    """The layer each output of a program comes from through ops on one tensor (reshape,
    softmax): none where it is a bare call (a weight shared with an embedding, as GPT-2's
    LM head), whose vocabulary torch-pruning leaves alone anyway."""
    import torch

    def tensor(node) -> bool:
        return node.op != "get_attr" and not isinstance(node.meta.get("val"), (int, torch.SymInt))

    layers: list[torch.nn.Module] = []
    outputs: list[torch.fx.Node] = []
    output = next(n for n in graph_module.graph.nodes if n.op == "output")
    torch.fx.node.map_arg(output.args, outputs.append)
    for found in outputs:
        node: torch.fx.Node | None = found
        while node is not None and node.op == "call_function":
            tensors = [a for a in node.all_input_nodes if tensor(a)]
            node = tensors[0] if len(tensors) == 1 else None
        if node is not None and node.op == "call_module":
            layer = graph_module.get_submodule(str(node.target))  # a call_module's: its path
            if isinstance(layer, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                layers.append(layer)
    return layers


# amount and ignore first, then fine-tuning
class ChannelPruningParams(FinetuneParams, PruneParams):
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l2"
    scope: Literal["layerwise", "global"] = Field(
        default="layerwise",
        description="layerwise: each layer loses `amount`; global: rank all channels at once",
    )
    round_to: int | None = Field(
        default=ROUND_TO,
        ge=1,
        description="keep channel counts a multiple of this (ONNX Runtime's CPU kernels are "
        "slow on odd counts); null or 1 turns it off",
    )
    steps: int = Field(default=1, ge=1, description="prune in this many steps")


@register("prune.channels")
class ChannelPruning(PruningPass[ChannelPruningParams]):
    """Remove whole channels (torch-pruning DepGraph): the exported model is smaller and faster.

    Sample YAML:
        - type: prune.channels
          amount: 0.25
          importance: l2
    """

    fix_if_slower = (
        "keep channel counts multiples the CPU kernels suit (round_to: 8 or 16), lower amount, or "
        "set on_slower: revert to keep the unpruned model"
    )
    Details = ChannelPruningDetails

    Params = ChannelPruningParams

    def check(self, config) -> None:
        super().check(config)
        if self.params.importance == "taylor" and config.config.data.train is None:
            raise ConfigError(
                f"{self.key}.importance: taylor ranks channels by gradients on data.train; add "
                "data.train (with labels) or use importance: l2"
            )
        if self.params.importance == "taylor" and not config.config.data.train.has_labels:
            raise ConfigError(
                f"{self.key}.importance: taylor needs data.train.labels for its gradients; add "
                "labels or use importance: l2"
            )

    def check_model(self, model, ctx: PassContext) -> None:
        import torch

        module = model
        super().check_model(module, ctx)
        if not self.params.ignore:  # with ignore, the user chose what stays whole
            refuse_program_attention(module, self.key)
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())
        if self.params.importance == "bn_scale" and not has_bn:
            raise ConfigError(
                f"{self.key}.importance: bn_scale ranks channels by BatchNorm scales, but the "
                "model has no BatchNorm layer; use importance: l2"
            )
        _refuse_channel_splits(module, ctx, self.key)
        if self.params.scope == "layerwise":  # global ranking keeps a channel in every layer
            whole = super().kept_whole(module, ctx)  # not yet the skipped ones
            ids, layers = {id(m) for m in whole}, dict(module.named_modules())
            counts, skipped = channel_counts(module), self.too_small_to_round(module, whole)
            prunable = [n for n in counts if id(layers[n]) not in ids]
            for name in prunable:
                if self.channels_kept(counts[name], rounded=False) == 0:
                    raise ConfigError(
                        f"{self.key}.amount: {self.params.amount} would remove every channel of "
                        f"{name} ({counts[name]} channels); lower amount, or add {name} to ignore"
                    )
            if prunable and all(n in skipped for n in prunable):
                p, name = self.params, prunable[0]
                raise ConfigError(
                    f"{self.key}.amount: {p.amount} with round_to {p.round_to} would remove every "
                    f"channel of {name} ({counts[name]} channels) and of every other layer; "
                    "lower amount or round_to"
                )

    def too_small_to_round(self, module, whole: list) -> dict[str, int]:
        """Layers (name: channels) besides the `whole` ones (PruningPass.kept_whole) that
        `round_to` would empty although `amount` alone would not (an 8-channel
        squeeze-excitation fc1 with round_to 8): they are left whole, not refused."""
        if not self.params.round_to or self.params.scope != "layerwise":
            return {}
        kept, layers = {id(m) for m in whole}, dict(module.named_modules())
        return {
            name: channels
            for name, channels in channel_counts(module).items()
            if id(layers[name]) not in kept
            and self.channels_kept(channels) == 0 < self.channels_kept(channels, rounded=False)
        }

    def kept_whole_and_skipped(self, module, ctx: PassContext) -> tuple[list, dict[str, int]]:
        """The modules left whole (`ignore`, the output layer, the layers too small to round),
        and those too small to round by name."""
        whole = super().kept_whole(module, ctx)
        skipped = self.too_small_to_round(module, whole)
        names = dict(module.named_modules())
        return whole + [names[n] for n in skipped], skipped

    def channels_kept(self, channels: int, rounded: bool = True) -> int:
        """What torch-pruning keeps of a layer's channels: the rest of `amount`, rounded down
        (to a multiple of `round_to` when `rounded`)."""
        kept = int(channels * (1 - self.params.amount))
        return kept - kept % self.params.round_to if rounded and self.params.round_to else kept

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        p, model = self.params, given.module
        linear_from_conv1d(model)  # GPT-2's Conv1D layers, so torch-pruning can trace them
        before, heads_before = channel_counts(model), head_counts(model)
        whole, skipped = self.kept_whole_and_skipped(model, ctx)
        if skipped:
            ctx.log(f"{self.name}: {_skipped_text(skipped, p.round_to)}")
        pruner = make_pruner(model, ctx, p, whole, self.key)
        fix_layerwise_head_steps(pruner, p)
        losses = []
        for _ in range(p.steps):  # with data.train, a fine-tune follows every step
            prune_step(pruner, model, ctx, p, self.key)
            losses += finetune(model, ctx, p, p.finetune_epochs, self.name)
        _check_runs(model, ctx, self.key)
        after = channel_counts(model)
        changed = {n: [before[n], after[n]] for n in before if after.get(n) != before[n]}
        removed, total = sum(b - a for b, a in changed.values()), sum(before.values())
        tuned = f"; fine-tuned {len(losses)} epoch(s), last loss {losses[-1]:.4f}" if losses else ""
        rounding = f", round_to {p.round_to}" if p.round_to else ""
        left = f"; {_skipped_text(skipped, p.round_to)}" if skipped else ""
        return PassResult(
            model,
            ChannelPruningDetails(
                reason=(
                    f"removed {removed} of {total} output channels in {len(changed)} layers "
                    f"({p.importance} importance, {p.scope}{rounding}, {p.steps} step(s))"
                    f"{heads_removed(heads_before, head_counts(model))}{tuned}{left}"
                ),
                channels=changed,
                too_small_to_round=skipped,
                finetune_losses=losses,
            ),
        )


def _refuse_channel_splits(module, ctx: PassContext, key: str) -> None:
    """A channel shuffle stops torch-pruning's tracing deep inside: refuse it before any work."""
    splits = channel_split_modules(module, example_inputs(ctx))
    if splits:
        shown = ", ".join(name or "the model's own forward" for name in splits[:4])
        more = f" and {len(splits) - 4} more" if len(splits) > 4 else ""
        raise ConfigError(
            f"{key}: prune.channels cannot prune a channel shuffle (a reshape that splits the "
            f"channels into groups, in {shown}{more}): torch-pruning cannot follow it; remove "
            "the pass for this model (quantization works on it)"
        )


def _skipped_text(skipped: dict[str, int], round_to: int | None) -> str:
    names = ", ".join(f"{name} ({channels})" for name, channels in skipped.items())
    return f"left {len(skipped)} layer(s) whole that round_to {round_to} would empty: {names}"


def _check_runs(model, ctx: PassContext, key: str) -> None:
    try:
        model(*example_inputs(ctx))
    except Exception as e:
        names = failing_modules(model, example_inputs(ctx))
        fix = (
            f"{ignore_advice(names)}: their code fixes a shape that pruning changed"
            if names
            else "the model's top-level forward fixes a shape that pruning changed, so no "
            "submodule can be named to ignore; lower amount"
        )
        raise PassError(
            f"{key}: the pruned model no longer runs ({first_line(e, 200)}); {fix}"
        ) from e


class MagnitudePruningParams(FinetuneParams, PruneParams):
    importance: Literal["l1", "l2"] = Field(
        default="l1", description="|w| ranks single weights; l1 and l2 rank them alike"
    )
    scope: Literal["layerwise", "global"] = "global"
    layers: list[str] = Field(
        default_factory=lambda: ["Linear", "Conv1d", "Conv2d", "Conv3d"],
        description="module types whose weights are pruned",
    )


@register("prune.magnitude")
class MagnitudePruning(PruningPass[MagnitudePruningParams]):
    """Zero the smallest weights (unstructured): smaller when compressed, not faster when dense.

    Sample YAML:
        - type: prune.magnitude
          amount: 0.5
    """

    Details = MagnitudePruningDetails

    Params = MagnitudePruningParams

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        from torch.nn.utils import prune

        p, model = self.params, given.module
        kept = {id(m) for m in self.kept_whole(model, ctx)}
        targets = [
            (m, "weight")
            for m in model.modules()
            if type(m).__name__ in p.layers and id(m) not in kept and hasattr(m, "weight")
        ]
        if not targets:
            raise ConfigError(
                f"{self.key}.layers: no module of the types {p.layers} is left to prune"
            )
        if p.scope == "global":
            prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=p.amount)
        else:
            for module, name in targets:
                prune.l1_unstructured(module, name, amount=p.amount)
        # Fine-tune with the masks on, so pruned weights stay zero; then make them permanent.
        losses = finetune(model, ctx, p, p.finetune_epochs, self.name)
        for module, name in targets:
            prune.remove(module, name)
        zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
        total = sum(m.weight.numel() for m, _ in targets)
        return PassResult(
            model,
            MagnitudePruningDetails(
                reason=(
                    f"zeroed {zeros / total:.0%} of the weights in {len(targets)} layers; they are "
                    "still stored and multiplied, so a dense runtime (ONNX Runtime on CPU) gets no "
                    "speedup: the gain is the compressed (gzip) size"
                ),
                pruned_layer_sparsity=round(zeros / total, 4),
                finetune_losses=losses,
            ),
        )
