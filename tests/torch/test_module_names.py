"""The modules an error names for `ignore`: the ones that compute attention."""

from __future__ import annotations

import torch
from torch import nn

from compress.torch.module_names import attention_modules
from tests.helpers.attention_models import VOCAB, HFStyleEncoder


def test_attention_modules_are_named_and_outputs_are_untouched():
    torch.manual_seed(0)
    model = HFStyleEncoder().eval()
    inputs = (torch.randint(0, VOCAB, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    expected = model(*inputs)
    assert attention_modules(model, inputs) == ["layers.0.attention", "layers.1.attention"]
    assert torch.equal(model(*inputs), expected)
    assert attention_modules(nn.Sequential(nn.Linear(2, 2)), (torch.zeros(1, 2),)) == []
