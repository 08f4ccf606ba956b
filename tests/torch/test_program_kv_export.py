"""A causal LM saved as a .pt2 with its cache exports to the interface a folder's decoder has:
the same input and output names on the same named dynamic axes, whose prefill and decode steps in
ONNX Runtime compute what the program does, and whose greedy generation picks the program's
tokens. (A LLaMA-style program goes the whole way through a run in tests/job/test_program_lm.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compress.config import ExportSection, ModelSection
from compress.measure.decoder_feeds import session_inputs
from compress.measure.generation import generate
from compress.measure.runtime import open_session
from compress.models import load_model
from compress.models.decoder_graph import is_decoder_graph
from compress.torch.export import check_parity, export_to_onnx
from compress.torch.kv_export import check_decode_parity
from tests.helpers.hf_folders import token_arrays
from tests.helpers.program_decoders import causal_lm_program, expected_interface, interface


@pytest.fixture(scope="module")
def exported(toy_programs, tmp_path_factory):
    path = toy_programs["cache"]
    module = load_model(path, ModelSection(), path.parent).model
    tokens = token_arrays(4)
    target = tmp_path_factory.mktemp("program_kv") / "toy.onnx"
    example = [tokens["input_ids"], tokens["attention_mask"]]
    export_to_onnx(module, "exported_program", example, [], [], target, ExportSection())
    return module, target


def test_the_graph_has_the_folder_exports_names_and_dynamic_axes(exported):
    module, path = exported
    graph = onnx.load(str(path)).graph
    names = [i.name for i in graph.input]
    assert names == module.layout.input_names and is_decoder_graph(names)
    assert [o.name for o in graph.output] == ["logits", *module.layout.present_names]
    assert interface(path) == expected_interface(layers=2, kv_heads=2, head_dim=16, vocab=131)


def test_a_prefill_and_decode_steps_compute_what_the_program_does(exported):
    module, path = exported
    tokens = token_arrays(3, length=9, seed=1)  # padded rows too
    inputs = [tokens["input_ids"], tokens["attention_mask"]]
    assert check_parity(path, module, inputs, 1e-4, "tokens") < 1e-4  # prefill, empty cache
    assert check_decode_parity(module, path, tokens["input_ids"], 1e-4) < 1e-4


def test_greedy_generation_over_the_cache_picks_the_programs_tokens(exported):
    module, path = exported
    prompt = np.array([[7, 12, 40, 9, 5], [3, 8, 8, 100, 2]], np.int64)
    session = open_session(path, threads=1)
    generated = generate(session, session_inputs(session), prompt, 5).tokens
    sequence = torch.from_numpy(prompt)
    with torch.no_grad():  # the program over the whole sequence, a token at a time
        for _ in range(5):
            logits = module(sequence, torch.ones_like(sequence))["logits"]
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    np.testing.assert_array_equal(generated, sequence[:, 5:].numpy())


FUSED = {  # a LLaMA of 2 layers, as a folder's export fuses it (tests/torch/test_kv_export.py)
    "SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 4,
    "RotaryEmbedding": 4, "GroupQueryAttention": 2,
}  # fmt: skip


@pytest.mark.parametrize("positions", [64, None])
def test_a_llama_program_is_fused_as_a_folders_export_and_keeps_its_parity(positions, tmp_path):
    torch.export.save(causal_lm_program("llama", positions), tmp_path / "llama.pt2")
    module = load_model(tmp_path / "llama.pt2", ModelSection(), tmp_path).model
    assert module.layout.max_positions == positions
    tokens = token_arrays(4)
    example = [tokens["input_ids"], tokens["attention_mask"]]
    path = tmp_path / "llama.onnx"
    note = export_to_onnx(module, "exported_program", example, [], [], path, ExportSection())
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    fused = {op: ops.count(op) for op in FUSED}
    if positions:  # the rotary table is sized by the bound: every layer fused
        assert fused == FUSED and not {"Pow", "ReduceMean", "Neg", "Softmax", "Cos"} & set(ops)
        assert "not fused" not in note
    else:  # no bound, no table: the rotary embeddings stay as exported
        assert fused == FUSED | {"RotaryEmbedding": 0} and {"Neg", "Cos"} <= set(ops)
        unbounded = "the program does not bound the mask's length (a Dim's max)"
        assert note.endswith(
            f"rotary embeddings not fused: {unbounded}, which sizes their cos/sin table"
        )
    assert note.startswith("fused for ONNX Runtime: 1 SimplifiedLayerNormalization")
    assert f"-> {len(ops)} nodes)" in note
    assert interface(path) == expected_interface(layers=2, kv_heads=2, head_dim=8, vocab=131)
    padded = token_arrays(3, length=9, seed=1)
    inputs = [padded["input_ids"], padded["attention_mask"]]
    assert check_parity(path, module, inputs, 1e-4, "tokens") < 1e-4  # prefill, empty cache
    assert check_decode_parity(module, path, padded["input_ids"], 1e-4) < 1e-4
