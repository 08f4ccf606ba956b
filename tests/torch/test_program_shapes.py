"""A `.pt2` program's fixed sizes follow pruning: reshapes refitted from the shapes it was saved
with, an embedding tied to the output projection made two layers on one weight."""

from __future__ import annotations

import onnx
import pytest
import torch

from compress.job.pipeline import run
from compress.torch.editable import relift
from compress.torch.program_shapes import refit_sizes
from tests.helpers.attention_models import (
    CONFIG,
    HIDDEN,
    VOCAB,
    HFStyleEncoder,
    TiedLM,
    saved_model,
    tokens,
)
from tests.helpers.configs import write_config


@pytest.mark.parametrize(
    ("sizes", "saved_in", "saved_out", "now_in", "refitted"),
    [
        ([-1, 32, 384], (4, 32, 384), (4, 32, 384), (4, 32, 264), [-1, 32, 264]),  # width
        ([4, 32, 6, 64], (4, 32, 384), (4, 32, 6, 64), (4, 32, 256), [4, 32, 4, 64]),  # heads
        ([4, 32, 384], (4, 32, 6, 64), (4, 32, 384), (4, 32, 4, 64), [4, 32, 256]),  # merged
        ([4, 32, -1, 64], (4, 32, 384), (4, 32, 6, 64), (4, 32, 256), [4, 32, -1, 64]),
        ([-1, 384], (4, 32, 384), (128, 384), (2, 32, 264), [-1, 264]),  # batch follows by -1
        ([4, 32, 6, 64], (4, 32, 384), (4, 32, 6, 64), (4, 32, 250), None),  # not whole heads
    ],
)
def test_reshape_sizes_are_refitted_to_the_pruned_input(
    sizes, saved_in, saved_out, now_in, refitted
):
    assert refit_sizes(sizes, saved_in, saved_out, now_in) == refitted


def test_a_tied_lm_head_becomes_two_layers_on_one_weight():
    torch.manual_seed(0)
    model = TiedLM().eval()
    ids, mask = torch.randint(0, VOCAB, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    batch = torch.export.Dim("batch", min=2)
    program = torch.export.export(model, (ids, mask), dynamic_shapes=({0: batch}, {0: batch}))
    editable = relift(program.module())
    head, table = editable.get_submodule("lm_head"), editable.get_submodule("lm_head_embedding")
    assert isinstance(head, torch.nn.Linear) and isinstance(table, torch.nn.Embedding)
    assert head.weight is table.weight
    assert torch.allclose(editable(ids, mask), model(ids, mask), atol=1e-6)


def test_a_tied_lm_program_prunes_its_width_and_keeps_its_vocabulary(tmp_path):
    tokens(tmp_path)
    path = saved_model(tmp_path, False, program=True, model=TiedLM().eval())
    config = write_config(tmp_path, CONFIG.format(model=""))
    baseline, pruned = run(path, config, tmp_path / "out").stages
    assert pruned.details.channels["layers.0.ffn.2"] == [HIDDEN, HIDDEN // 2]  # the width
    assert "lm_head" not in pruned.details.channels  # the vocabulary stays whole
    assert pruned.params < baseline.params / 1.5


class PooledEncoder(HFStyleEncoder):
    """Token states mean-pooled as the output (a sentence embedding): no layer makes it."""

    def forward(self, input_ids, attention_mask):
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, bias)
        return x.mean(dim=1)


def test_pruning_keeps_an_output_no_layer_makes_at_its_width(tmp_path):
    tokens(tmp_path)
    path = saved_model(tmp_path, False, program=True, model=PooledEncoder().eval())
    out = tmp_path / "out"
    _, pruned = run(path, write_config(tmp_path, CONFIG.format(model="")), out).stages
    assert pruned.details.channels["layers.0.attention.query"] == [HIDDEN, HIDDEN // 2]
    assert "layers.0.ffn.2" not in pruned.details.channels  # the width is the output
    written = onnx.load(out / "model.onnx").graph.output[0].type.tensor_type.shape
    assert written.dim[1].dim_value == HIDDEN


class Concatenations(torch.nn.Module):
    """An empty cache concatenated in front of the keys (as a saved GPT-2 program has), and a
    concatenation of concatenations."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(HIDDEN, HIDDEN)
        self.register_buffer("cache", torch.zeros(0))

    def forward(self, x):
        keys = torch.cat([self.cache, self.linear(x)], dim=-2)
        return torch.cat([torch.cat([keys, x], dim=-1), x], dim=-1)


def test_relifting_drops_an_empty_cache_and_follows_nested_concatenations():
    model = Concatenations().eval()
    x = torch.randn(2, 4, HIDDEN)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    editable = relift(program.module())
    cats = [n for n in editable.graph.nodes if n.target == torch.ops.aten.cat.default]
    assert len(cats) == 2  # the cache's concatenation is gone, the nested ones stay
    assert torch.allclose(editable(x), model(x))
