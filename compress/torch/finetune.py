"""A short, seeded fine-tune of a torch module on data.train (cross-entropy on its labels), to win
back what pruning cost. It runs the shared training loop (compress.torch.training)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from compress.errors import ConfigError
from compress.torch.training import TrainParams, first_output, train

if TYPE_CHECKING:
    from compress.torch.context import TorchContext


class FinetuneParams(BaseModel):
    """Fine-tune settings shared by the passes that change weights; used when data.train is set."""

    model_config = ConfigDict(extra="forbid")

    finetune_epochs: int = Field(default=3, ge=0, description="epochs on data.train (0: none)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        default="adam", description="sgd runs with momentum 0.9"
    )
    lr: float = Field(default=1e-3, gt=0, description="learning rate of the fine-tune")
    batch_size: int = Field(default=64, ge=1, description="train samples per step")
    seed: int = Field(default=0, description="seeds the weights' updates and the shuffling")


def check_train_data(params: FinetuneParams, config, key: str) -> None:
    """Fine-tuning needs labels; refuse a data.train without them before any work."""
    train_source = config.config.data.train
    if train_source is not None and params.finetune_epochs > 0 and not train_source.has_labels:
        raise ConfigError(
            f"{key}.finetune_epochs: fine-tuning needs data.train.labels; add labels to "
            "data.train or set finetune_epochs: 0"
        )


def finetune(
    model, ctx: TorchContext, params: FinetuneParams, epochs: int, what: str
) -> list[float]:
    """Train `model` in place for `epochs` on data.train; the mean loss of each epoch."""
    import torch

    if "train" not in ctx.datasets or epochs == 0:
        return []
    settings = TrainParams(
        epochs=epochs,
        batch_size=params.batch_size,
        optimizer=params.optimizer,
        lr=params.lr,
        schedule="constant",
        seed=params.seed,
    )

    def cross_entropy(batch, labels, index):
        return torch.nn.functional.cross_entropy(first_output(model(*batch)), labels)

    return train(model, cross_entropy, settings, ctx, f"fine-tune {what}").losses
