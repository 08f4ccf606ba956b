"""The fine-tune after pruning learns from data.train, and the same seed gives the same weights."""

from __future__ import annotations

import numpy as np
import torch

from compress.data import Dataset
from compress.job.context import Context
from compress.torch.finetune import FinetuneParams, finetune
from tests.helpers.paths import SAMPLES


def tuned(tmp_path, seed: int):
    arrays = np.load(SAMPLES / "digits_train.npz")
    train = Dataset("data.train", SAMPLES, {"x": arrays["x"]}, arrays["y"])
    ctx = Context(None, {"train": train}, ["x"], tmp_path)
    torch.manual_seed(123)  # the same starting weights for every call
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    losses = finetune(model, ctx, FinetuneParams(seed=seed, lr=0.01), 3, "test")
    return model, losses


def test_fine_tune_lowers_the_loss_and_is_seeded(tmp_path):
    model, losses = tuned(tmp_path, seed=0)
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.5
    assert not model.training  # left ready for export
    again, _ = tuned(tmp_path, seed=0)
    other, _ = tuned(tmp_path, seed=1)
    assert torch.equal(model[1].weight, again[1].weight)
    assert not torch.equal(model[1].weight, other[1].weight)
