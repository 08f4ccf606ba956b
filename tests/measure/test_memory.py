"""The batch-memory check estimates what a batch of more than one needs; a batch of one is what
every step runs anyway, so it is not estimated (the estimate holds a sample's every tensor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress.errors import ConfigError
from compress.measure import memory


def test_a_batch_of_one_is_not_estimated(monkeypatch):
    def estimate(path, sample):
        raise AssertionError("estimated")

    monkeypatch.setattr(memory, "bytes_per_sample", estimate)
    memory.check_batch_memory(Path("model.onnx"), [np.zeros(3, np.float32)], [1])


def test_a_larger_batch_is_estimated_and_refused_past_half_the_memory(monkeypatch):
    monkeypatch.setattr(memory, "bytes_per_sample", lambda path, sample: 2**40)
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**34)
    with pytest.raises(ConfigError, match="a batch of 2 needs about"):
        memory.check_batch_memory(Path("model.onnx"), [np.zeros(3, np.float32)], [1, 2])
