"""Transformers lose whole attention heads under prune.channels and still run, from a state_dict
with model.arch and from a .pt2 program (heads found in its graph, fixed sizes refitted); a
program whose attention cannot be traced to whole heads is refused before any work."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from compress.job.pipeline import run
from compress.torch.head_pruning import head_counts, linear_from_conv1d, without_kv_cache
from tests.helpers.attention_models import (
    CONFIG,
    HEADS,
    HIDDEN,
    VOCAB,
    HFStyleEncoder,
    SelfAttention,
    attend,
    saved_model,
    tokens,
)
from tests.helpers.cli import assert_refused, run_cli
from tests.helpers.configs import write_config


@pytest.mark.parametrize("program", [False, True], ids=["state_dict", "pt2"])
@pytest.mark.parametrize(
    ("arch", "fused", "projection", "width"),
    [
        ("HFStyleEncoder", False, "layers.0.attention.query", HIDDEN),
        ("FusedEncoder", True, "layers.0.attention.c_attn", 3 * HIDDEN),
    ],
)
def test_attention_loses_whole_heads_and_still_runs(
    tmp_path, arch, fused, projection, width, program
):
    tokens(tmp_path)
    model = "" if program else f'model: {{arch: "tests.helpers.attention_models:{arch}"}}\n'
    config = write_config(tmp_path, CONFIG.format(model=model))
    path = saved_model(tmp_path, fused, program)
    baseline, pruned = run(path, config, tmp_path / "out").stages
    head_size = HIDDEN // HEADS
    before, after = pruned.details.channels[projection]
    assert (before, after) == (width, width // 2)  # half the heads, each whole
    assert after % head_size == 0
    assert f"removed {2 * HEADS // 2} of {2 * HEADS} attention heads" in pruned.details.reason
    assert pruned.params < baseline.params / 1.3
    assert any("ffn.0" in name for name in pruned.details.channels)  # feed-forward too


class RotatedAttention(SelfAttention):
    """Queries mixed with a rolled copy of themselves (as rotary embeddings do) before the heads."""

    def forward(self, x, bias):
        q = self.query(x)
        q = q + torch.roll(q, 1, -1)
        return attend(q, self.key(x), self.value(x), self.attention_head_size, bias)


def test_a_pt2_program_whose_heads_cannot_be_traced_is_refused_in_one_line(tmp_path):
    tokens(tmp_path)
    model = HFStyleEncoder().eval()
    for layer in model.layers:
        layer.attention = RotatedAttention()
    path = saved_model(tmp_path, False, program=True, model=model)
    config = write_config(tmp_path, CONFIG.format(model=""))
    out = tmp_path / "out"
    result = run_cli(path, config, out)
    assert_refused(result, out, "2 of the 2 attention blocks", "whole heads", "model.arch")
    ignored = 'amount: 0.5, ignore: ["layers.*.attention"]'
    text = CONFIG.format(model="").replace("amount: 0.5", ignored)
    assert run_cli(path, write_config(tmp_path, text), out).exit_code == 0  # prune the rest


def test_conv1d_becomes_an_equal_linear_and_fused_heads_are_found():
    torch.manual_seed(0)
    model = HFStyleEncoder(fused=True).eval()
    ids = torch.randint(0, VOCAB, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    expected = model(ids, mask)
    assert linear_from_conv1d(model) == 2 * 2  # c_attn and c_proj in both layers
    assert torch.allclose(model(ids, mask), expected, atol=1e-6)
    assert head_counts(model) == {"layers.0.attention": HEADS, "layers.1.attention": HEADS}


def test_grouped_query_attention_is_not_taken_for_whole_heads():
    """Key / value narrower than the query (grouped-query attention): not cut as equal heads."""
    model = HFStyleEncoder()
    for layer in model.layers:
        layer.attention.key = torch.nn.Linear(HIDDEN, HIDDEN // 2)
    assert head_counts(model) == {}


@pytest.mark.parametrize(
    ("params", "heads_left"),
    [("amount: 0.5, steps: 3", HEADS // 2), ("amount: 0.9, round_to: null", 1)],
)
def test_steps_and_high_amounts_leave_the_heads_they_should(tmp_path, params, heads_left):
    """torch-pruning applies each step's ratio to the heads left, and would take every head at
    0.9: compress corrects the steps and keeps one head."""
    tokens(tmp_path)
    model = 'model: {arch: "tests.helpers.attention_models:HFStyleEncoder"}\n'
    text = CONFIG.format(model=model).replace("amount: 0.5", params)
    _, pruned = run(
        saved_model(tmp_path, False), write_config(tmp_path, text), tmp_path / "o"
    ).stages
    removed = 2 * (HEADS - heads_left)
    assert f"removed {removed} of {2 * HEADS} attention heads" in pruned.details.reason


def test_the_key_value_cache_is_off_only_while_tracing():
    model = HFStyleEncoder()
    model.config = SimpleNamespace(use_cache=True)
    with without_kv_cache(model):
        assert model.config.use_cache is False
    assert model.config.use_cache is True
