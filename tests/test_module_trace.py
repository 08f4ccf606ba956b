"""Errors name the module to ignore: the one a failing forward was in, the ones that attend."""

from __future__ import annotations

import torch
from torch import nn

from compress.module_trace import failing_module, named_attention
from tests.attention_models import VOCAB, HFStyleEncoder


class FixedReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 6)

    def forward(self, x):
        return self.linear(x).reshape(x.shape[0], 2, 4)  # 6 features cannot take this shape


def test_the_failing_module_is_the_innermost_of_the_models_own():
    model = nn.Sequential(nn.Linear(8, 8), nn.Sequential(FixedReshape()))
    where, error = failing_module(model, (torch.zeros(2, 8),))
    assert where == "1.0" and isinstance(error, RuntimeError)
    assert failing_module(nn.Linear(8, 8), (torch.zeros(2, 8),)) == (None, None)


def test_attention_modules_are_named_and_outputs_are_untouched():
    torch.manual_seed(0)
    model = HFStyleEncoder().eval()
    inputs = (torch.randint(0, VOCAB, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    expected = model(*inputs)
    assert named_attention(model, inputs) == ": layers.0.attention, layers.1.attention"
    assert named_attention(model, inputs, most=1) == ": layers.0.attention and 1 more"
    assert torch.equal(model(*inputs), expected)
    assert named_attention(nn.Sequential(nn.Linear(2, 2)), (torch.zeros(1, 2),)) == ""
