"""A decoder folder exports with its key/value cache: one graph with the cache's inputs and
outputs on dynamic axes, in ONNX Runtime's fused operators (every layer's norms, rotary
embeddings and attention), whose greedy generation in ONNX Runtime (a prefill, then one token at
a time against the cache it wrote) gives the tokens transformers' generate gives; a model without
an exportable cache is one ModelLoadError."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compress.config import ExportSection, ModelSection
from compress.errors import ExportError, ModelLoadError
from compress.measure.decoder_feeds import completed_feeds, session_inputs
from compress.measure.runtime import open_session
from compress.models import load_model
from compress.models.decoder import probe_layout
from compress.torch import export  # export.export_to_onnx: made once a session (conftest)
from compress.torch.kv_export import check_decode_parity
from tests.helpers.hf_folders import token_arrays, transformers_greedy


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def exported(request, hf_folders, tmp_path_factory):
    folder = hf_folders[request.param]
    module = load_model(folder, ModelSection(), folder.parent).model
    target = tmp_path_factory.mktemp("kv") / f"{request.param}.onnx"
    tokens = token_arrays(4)
    example = [tokens["input_ids"], tokens["attention_mask"]]
    export.export_to_onnx(module, "hf_folder", example, [], [], target, ExportSection())
    return module, target


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_the_graph_has_the_cache_on_dynamic_axes(exported):
    module, path = exported
    graph = onnx.load(str(path)).graph
    layout = module.layout
    assert [i.name for i in graph.input] == layout.input_names
    assert [o.name for o in graph.output] == ["logits", *layout.present_names]
    past = dims(graph.input[3])
    assert past[0] == "batch" and past[2] == "past_sequence" and past[1] == layout.kv_heads
    assert dims(graph.input[1]) == ["batch", "total_sequence"]


FUSED = {  # per model of 2 layers: ONNX Runtime's operators, and what they replaced
    "llama": (
        {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 4,
         "RotaryEmbedding": 4, "GroupQueryAttention": 2},
        {"Pow", "ReduceMean", "Neg", "Softmax", "MultiHeadAttention"},
    ),
    "gpt2": (
        {"SkipLayerNormalization": 5, "GroupQueryAttention": 2},
        {"Softmax", "MultiHeadAttention"},
    ),
    "qwen2": (  # heads of 16: rotated inside GroupQueryAttention (llama's 8 stay outside)
        {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 4,
         "RotaryEmbedding": 0, "GroupQueryAttention": 2},
        {"Pow", "ReduceMean", "Neg", "Softmax", "MultiHeadAttention"},
    ),
}  # fmt: skip


def test_every_layer_is_fused_and_the_file_loads_as_a_model(exported, request):
    module, path = exported
    fused, gone = FUSED[request.node.callspec.params["exported"]]
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert {op: ops.count(op) for op in fused} == fused
    assert not gone & set(ops)
    writers = {output: node.op_type for node in graph.node for output in node.output}
    assert {writers[o.name] for o in graph.output[1:]} == {"GroupQueryAttention"}  # the cache
    rotates = {
        attribute.i for node in graph.node if node.op_type == "GroupQueryAttention"
        for attribute in node.attribute if attribute.name == "do_rotary"
    }  # fmt: skip
    assert rotates == ({1} if fused.get("RotaryEmbedding") == 0 else set())
    assert load_model(path, ModelSection(), path.parent).is_onnx  # onnx.checker passes it


def test_greedy_generation_over_the_cache_matches_transformers(exported):
    module, path = exported
    prompt = np.array([[7, 12, 40, 9, 5], [3, 8, 8, 100, 2]], np.int64)
    expected = transformers_greedy(module, prompt, 6)
    session = open_session(path, threads=1)
    declared = session_inputs(session)
    names = [name for name, _, _ in declared]
    mask = np.ones_like(prompt)
    outputs = session.run(None, completed_feeds(declared, [prompt, mask]))
    tokens = []
    for _ in range(6):
        chosen = outputs[0][:, -1].argmax(-1)[:, None]
        tokens.append(chosen)
        position = np.full_like(chosen, mask.shape[1])
        mask = np.ones((2, mask.shape[1] + 1), np.int64)
        feed = dict(zip(names, [chosen, mask, position, *outputs[1:]], strict=True))
        outputs = session.run(None, feed)
    np.testing.assert_array_equal(np.concatenate(tokens, axis=1), expected)


def test_padded_rows_and_chunks_over_the_cache_compute_what_transformers_does(exported):
    """GroupQueryAttention reads the mask: rows padded on the left (as batched generation pads
    them) or on the right, prefilled in two chunks of a batch, give transformers' logits."""
    module, path = exported
    ids = np.random.default_rng(2).integers(5, 100, (3, 10)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, :4] = mask[2, 7:] = 0
    with torch.no_grad():
        expected = module(torch.from_numpy(ids), torch.from_numpy(mask))["logits"].numpy()
    session = open_session(path, threads=1)
    declared = session_inputs(session)
    names = [name for name, _, _ in declared]
    outputs = session.run(None, completed_feeds(declared, [ids[:, :4], mask[:, :4]]))
    positions = np.where(mask == 1, mask.cumsum(-1) - 1, 1)
    got = [outputs[0]]
    for begin, end in ((4, 8), (8, 9), (9, 10)):  # a chunk of 4, then single steps
        feed = {"input_ids": ids[:, begin:end], "attention_mask": mask[:, :end]}
        feed["position_ids"] = positions[:, begin:end]
        outputs = session.run(None, feed | dict(zip(names[3:], outputs[1:], strict=True)))
        got.append(outputs[0])
    real = mask == 1
    np.testing.assert_allclose(np.concatenate(got, axis=1)[real], expected[real], atol=1e-4)


def test_a_cache_that_computes_otherwise_fails_decode_parity(exported, tmp_path):
    module, path = exported
    ids = token_arrays(2)["input_ids"]
    assert check_decode_parity(module, path, ids, 1e-4) < 1e-4
    broken = onnx.load(str(path))
    attention = next(n for n in broken.graph.node if n.op_type == "GroupQueryAttention")
    attention.input[3], attention.input[4] = attention.input[4], attention.input[3]  # k <-> v
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(ExportError, match="decode parity check failed"):
        check_decode_parity(module, tmp_path / "broken.onnx", ids, 1e-4)


def test_a_model_without_a_cache_is_refused():
    class NoCache(torch.nn.Module):
        config = None

        def forward(self, input_ids, attention_mask=None, use_cache=None, **options):
            return {"logits": torch.zeros(1, 2, 5)}

    with pytest.raises(ModelLoadError, match="keeps no key/value cache compress can export"):
        probe_layout(NoCache(), "tiny")
