"""A short, seeded fine-tune of a torch module on data.train (cross-entropy on its labels), to win
back what pruning cost. Shows a progress bar on a terminal and logs one line per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from compress.errors import ConfigError
from compress.passes.base import PassParams

if TYPE_CHECKING:
    from compress.context import Context


class FinetuneParams(PassParams):
    """Fine-tune settings shared by the passes that change weights; used when data.train is set."""

    finetune_epochs: int = Field(default=3, ge=0, description="epochs on data.train (0: none)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        default="adam", description="sgd runs with momentum 0.9"
    )
    lr: float = Field(default=1e-3, gt=0, description="learning rate of the fine-tune")
    batch_size: int = Field(default=64, ge=1, description="train samples per step")
    seed: int = Field(default=0, description="seeds the weights' updates and the shuffling")


def check_train_data(params: FinetuneParams, config, key: str) -> None:
    """Fine-tuning needs labels; refuse a data.train without them before any work."""
    train = config.config.data.train
    if train is not None and params.finetune_epochs > 0 and not train.labels:
        raise ConfigError(
            f"{key}.finetune_epochs: fine-tuning needs data.train.labels; add labels to "
            "data.train or set finetune_epochs: 0"
        )


def finetune(model, ctx: Context, params: FinetuneParams, epochs: int, what: str) -> list[float]:
    """Train `model` in place for `epochs` on data.train; the mean loss of each epoch."""
    import torch

    train = ctx.datasets.get("train")
    if train is None or epochs == 0:
        return []
    torch.manual_seed(params.seed)
    shuffle = torch.Generator().manual_seed(params.seed)
    inputs = [torch.from_numpy(a) for a in train.inputs.values()]
    labels = torch.from_numpy(train.labels).long()
    optimizer = _optimizer(params, model.parameters())
    losses = []
    model.train()
    with ctx.progress(f"fine-tune {what}", epochs * -(-len(labels) // params.batch_size)) as step:
        for epoch in range(epochs):
            total, order = 0.0, torch.randperm(len(labels), generator=shuffle)
            for start in range(0, len(labels), params.batch_size):
                index = order[start : start + params.batch_size]
                logits = model(*(a[index] for a in inputs))
                loss = torch.nn.functional.cross_entropy(first_output(logits), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
                step()
            losses.append(total / len(labels))
            ctx.log(f"fine-tune {what}: epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
    model.eval()
    return losses


def first_output(output):
    """The logits of a model that may return a tuple (logits first)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _optimizer(params: FinetuneParams, weights):
    import torch

    if params.optimizer == "sgd":
        return torch.optim.SGD(weights, lr=params.lr, momentum=0.9)
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(weights, lr=params.lr)
