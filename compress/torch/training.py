"""The one training loop of the passes that change weights (fine-tune after pruning, distill):
seeded shuffling and augmentation, optimizer and schedule, an eval metric per epoch with early
stopping and the best epoch restored, a time budget, and progress on stderr."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from compress.data.augment import augment_batch

if TYPE_CHECKING:
    import torch

    from compress.torch.context import TorchContext

# step_loss(batch inputs, batch labels or None, the batch's sample indices) -> the batch's loss
StepLoss = Callable[[list["torch.Tensor"], "torch.Tensor | None", "torch.Tensor"], "torch.Tensor"]


class TrainParams(BaseModel):
    """How a pass trains on data.train (a pass's Params adds these to its own)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=10, ge=1, description="passes over data.train (at most)")
    batch_size: int = Field(default=64, ge=1, description="train samples per step")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        default="adam", description="sgd runs with momentum 0.9"
    )
    lr: float = Field(default=1e-3, gt=0, description="learning rate at the start")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 penalty (decoupled for adamw)")
    schedule: Literal["cosine", "step", "constant"] = Field(
        default="cosine", description="cosine: lr falls to 0 over the epochs; step: see step_size"
    )
    step_size: int = Field(default=10, ge=1, description="step schedule: epochs between drops")
    gamma: float = Field(default=0.1, gt=0, le=1, description="step schedule: lr factor per drop")
    seed: int = Field(
        default=0, ge=0, le=2**32 - 1, description="the same seed gives the same weights"
    )
    patience: int | None = Field(
        default=None, ge=1, description="stop after this many epochs without a better eval metric"
    )
    restore_best: bool = Field(
        default=True, description="end with the weights of the epoch with the best eval metric"
    )
    max_minutes: float | None = Field(
        default=None, gt=0, description="time budget: stop after the step that runs past it"
    )


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # mean train loss of each epoch
    metrics: list[float] = field(default_factory=list)  # eval metric after each epoch
    best_epoch: int | None = None  # 1-based, by the eval metric
    restored: bool = False  # the model ends with the best epoch's weights
    stopped: str = "ran every epoch"
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        return len(self.losses)


class EpochScore(Protocol):
    """How training scores each epoch's model (compress.torch.export's TorchJudge): `metric`
    names the score, calling it scores a model."""

    @property
    def metric(self) -> str: ...

    def __call__(self, model: Any) -> float: ...


def train(
    model,
    step_loss: StepLoss,
    params: TrainParams,
    ctx: TorchContext,
    what: str,
    extra_modules=None,
    judge: EpochScore | None = None,
) -> TrainResult:
    """Train `model` in place on data.train; `extra_modules` (an nn.Module: projections) learn
    with it. With `judge`, score every epoch, stop early and restore the best epoch as asked."""
    import torch

    started = time.perf_counter()
    train_set = ctx.datasets["train"]
    torch.manual_seed(params.seed)
    shuffle = torch.Generator().manual_seed(params.seed)
    randomness = torch.Generator().manual_seed(params.seed + 1)  # augmentation's own stream
    inputs = [torch.from_numpy(a) for a in train_set.inputs.values()]
    labels = None if train_set.labels is None else torch.from_numpy(train_set.labels).long()
    modules = [m for m in (model, extra_modules) if m is not None]
    weights = [w for m in modules for w in m.parameters() if w.requires_grad]
    optimizer = _optimizer(params, weights)
    scheduler = _scheduler(params, optimizer)
    samples = len(inputs[0])
    steps = math.ceil(samples / params.batch_size)
    deadline = started + params.max_minutes * 60 if params.max_minutes else math.inf
    result, best_metric, best_state, waited = TrainResult(), -math.inf, None, 0
    with ctx.progress(what, params.epochs * steps) as bar:
        for epoch in range(1, params.epochs + 1):
            for m in modules:
                m.train()
            total, seen, order = 0.0, 0, torch.randperm(samples, generator=shuffle)
            for start in range(0, samples, params.batch_size):
                index = order[start : start + params.batch_size]
                batch = augment_batch([a[index] for a in inputs], train_set.augment, randomness)
                loss = step_loss(batch, None if labels is None else labels[index], index)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, seen = total + loss.item() * len(index), seen + len(index)
                bar.advance()
                if time.perf_counter() > deadline:
                    break
            scheduler.step()
            for m in modules:
                m.eval()
            result.losses.append(total / seen)
            status = f"epoch {epoch}/{params.epochs}, loss {result.losses[-1]:.4f}"
            if judge is not None:
                result.metrics.append(judge(model))
                status += f", {judge.metric} {result.metrics[-1]:.4f}"
                # Patience counts epochs without a better metric; on a tie the later epoch, which
                # has trained longer, becomes the one kept.
                waited = 0 if result.metrics[-1] > best_metric else waited + 1
                if result.metrics[-1] >= best_metric:
                    best_metric, result.best_epoch = result.metrics[-1], epoch
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bar.status(status)
            ctx.log(f"{what}: {status}")
            if time.perf_counter() > deadline:
                result.stopped = f"time budget of {params.max_minutes:g} min spent"
                break
            if judge is not None and params.patience and waited >= params.patience:
                result.stopped = f"early stop: no better {judge.metric} for {waited} epochs"
                break
    if best_state is not None and params.restore_best:
        model.load_state_dict(best_state)
        result.restored = True
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _optimizer(params: TrainParams, weights):
    import torch

    if params.optimizer == "sgd":
        return torch.optim.SGD(
            weights, lr=params.lr, momentum=0.9, weight_decay=params.weight_decay
        )
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(weights, lr=params.lr, weight_decay=params.weight_decay)


def _scheduler(params: TrainParams, optimizer):
    import torch

    if params.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs)
    if params.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, params.step_size, gamma=params.gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def first_output(output: object) -> torch.Tensor:
    """The logits of a model that may return a tuple, dict or ModelOutput (logits first)."""
    from compress.torch.outputs import named_tensors

    return named_tensors(output)[0][1]
