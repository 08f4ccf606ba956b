"""The shared training loop: early stopping with the best epoch restored, the time budget, the
schedule, and seeded results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.data import Dataset
from compress.job.context import Context
from compress.torch.training import TrainParams, train
from tests.helpers.paths import SAMPLES


class ScriptedJudge:
    """Gives the scores of a script, one per epoch, and keeps a copy of the weights it saw."""

    metric = "top1"

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def __call__(self, model):
        self.seen.append(model.weight.detach().clone())
        return self.scores[len(self.seen) - 1]


def digits_context(tmp_path, limit=None) -> Context:
    arrays = np.load(SAMPLES / "digits_train.npz")
    x, y = arrays["x"].reshape(-1, 64)[:limit], arrays["y"][:limit]
    return Context(None, {"train": Dataset("data.train", SAMPLES, {"x": x}, y)}, ["x"], tmp_path)


def linear_run(ctx, judge=None, **settings):
    torch.manual_seed(123)  # the same starting weights for every call
    model = torch.nn.Linear(64, 10)

    def cross_entropy(batch, labels, index):
        return torch.nn.functional.cross_entropy(model(*batch), labels)

    params = TrainParams(**{"lr": 0.01, **settings})
    return model, train(model, cross_entropy, params, ctx, "test", judge=judge)


def test_early_stopping_restores_the_best_epoch(tmp_path):
    judge = ScriptedJudge([0.5, 0.7, 0.6, 0.65, 0.9])
    model, result = linear_run(digits_context(tmp_path), judge, epochs=5, patience=2)
    assert result.epochs_run == 4 and "early stop" in result.stopped  # 0.9 is never reached
    assert result.metrics == [0.5, 0.7, 0.6, 0.65]
    assert result.best_epoch == 2 and result.restored
    assert torch.equal(model.weight, judge.seen[1])  # the weights scored 0.7
    assert not torch.equal(model.weight, judge.seen[3])


def test_a_tie_keeps_the_later_epoch_but_does_not_reset_patience(tmp_path):
    judge = ScriptedJudge([0.8, 0.8, 0.8, 0.8])
    model, result = linear_run(digits_context(tmp_path), judge, epochs=4, patience=2)
    assert result.epochs_run == 3 and result.best_epoch == 3
    assert torch.equal(model.weight, judge.seen[2])


def test_without_restore_the_last_epoch_stays(tmp_path):
    judge = ScriptedJudge([0.9, 0.1])
    model, result = linear_run(digits_context(tmp_path), judge, epochs=2, restore_best=False)
    assert result.best_epoch == 1 and not result.restored
    assert torch.equal(model.weight, judge.seen[1])


def test_the_time_budget_stops_after_the_step_that_runs_past_it(tmp_path):
    ctx = digits_context(tmp_path)
    _, result = linear_run(ctx, epochs=50, max_minutes=1e-9, batch_size=100)
    assert result.epochs_run == 1 and "time budget" in result.stopped


def test_same_seed_same_weights_and_the_loss_falls(tmp_path):
    ctx = digits_context(tmp_path, limit=600)
    first, result = linear_run(ctx, epochs=3, seed=5)
    again, _ = linear_run(ctx, epochs=3, seed=5)
    other, _ = linear_run(ctx, epochs=3, seed=6)
    assert result.losses[-1] < result.losses[0] * 0.8
    assert torch.equal(first.weight, again.weight)
    assert not torch.equal(first.weight, other.weight)
    assert not first.training  # left ready for export


@pytest.mark.parametrize(
    ("schedule", "last"),
    [("cosine", 0.01 * (1 + np.cos(np.pi * 3 / 4)) / 2), ("step", 0.001), ("constant", 0.01)],
)
def test_schedules_set_the_learning_rate_of_each_epoch(schedule, last):
    from compress.torch.training import _optimizer, _scheduler

    params = TrainParams(epochs=4, lr=0.01, schedule=schedule, step_size=3)
    optimizer = _optimizer(params, torch.nn.Linear(2, 2).parameters())
    scheduler = _scheduler(params, optimizer)
    rates = []
    for _ in range(params.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(last)
