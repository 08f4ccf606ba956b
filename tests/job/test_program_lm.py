"""A causal LM given as a .pt2 with its cache (a LLaMA-style one, exported as the docs export
one) runs as a folder's decoder does: text tokenized with model.tokenizer into running text
judged by perplexity, 4-bit weights, generation timed, an ONNX file with the decoder interface
that `compress bench` times; its positions are recorded only where the program tells them. A
.pt2 over whole sequences says in the log that its generation is not timed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch

from compress.models.decoder_graph import POSITIONS_KEY
from tests.helpers.cli import invoke
from tests.helpers.hf_folders import sentences, tokenizer
from tests.helpers.program_decoders import causal_lm_program, expected_interface, interface

QUICK = "batch_sizes: [2], min_runs: 5, min_seconds: 0, max_seconds: 0.2, warmup_runs: 1"


def test_a_llama_program_compresses_as_a_folders_decoder(tmp_path):
    program = causal_lm_program("llama")
    torch.export.save(program, tmp_path / "llama.pt2")
    tokenizer(("input_ids", "attention_mask")).save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "t.txt").write_text("\n".join(sentences(30)) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: 1\nmodel: {tokenizer: tokenizer}\ndata:\n  eval: {path: t.txt, max_length: 16}\n"
        "passes: [{type: quantize.int4, block_size: 16, accuracy_level: 4}]\n"
        f"report: {{metric: perplexity, {QUICK}, generation: {{prompt_tokens: 8, new_tokens: 4, "
        "min_rounds: 2, peak_memory: false}}\n"
    )
    out = tmp_path / "out"
    result = invoke("run", tmp_path / "llama.pt2", "-c", config, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    for stage in report["stages"]:
        assert stage["generation"]["1"]["tokens_per_second"] > 0
        assert stage["metric"]["name"] == "perplexity" and stage["metric"]["value"] > 1
    assert interface(out / "model.onnx") == expected_interface(2, 2, 8, 131)  # as exported
    model = onnx.load(str(out / "model.onnx"))
    assert "MatMulNBits" in {node.op_type for node in model.graph.node}
    assert POSITIONS_KEY not in {p.key for p in model.metadata_props}  # Dim.DYNAMIC: unknown
    fused = [line for line in result.stderr.splitlines() if "fused for ONNX Runtime" in line]
    assert len(fused) == 1 and "2 GroupQueryAttention" in fused[0], result.stderr  # the baseline
    assert "rotary embeddings not fused: the program does not bound" in fused[0]
    quick = ["report.min_seconds=0", "report.max_seconds=0.1", "report.warmup_runs=1"]
    quick += [f"report.generation.{s}" for s in ("prompt_tokens=5", "new_tokens=3", "min_rounds=2")]
    quick += ["report.generation.peak_memory=false"]
    settings = [arg for setting in quick for arg in ("--set", setting)]
    bench = invoke("bench", out / "model.onnx", *settings)
    assert bench.exit_code == 0, bench.stderr
    assert "5-token prompt" in bench.stdout, bench.stdout


def test_a_program_over_whole_sequences_says_its_generation_is_not_timed(toy_programs, tmp_path):
    ids = np.arange(5, 29, dtype=np.int64).reshape(3, 8)
    np.savez(tmp_path / "t.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n  eval: {path: t.npz, inputs: [input_ids, attention_mask]}\n"
        f"report: {{metric: agreement, {QUICK}}}\n"
    )
    result = invoke("run", toy_programs["no_cache"], "-c", config, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "without a key/value cache" in line]
    assert len(said) == 1, result.stderr
    assert "(input_ids -> [batch, sequence, vocab]): it runs over whole sequences" in said[0]
    assert "generation is not timed" in said[0]
