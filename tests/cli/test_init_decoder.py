"""`compress init` on a decoder folder proposes 4-bit weights judged by perplexity within a
budget of a 3% rise, with its generation timed within the model's positions; `--data text.txt`
fills the data (for a .pt2, read with the tokenizer `--tokenizer` names), and the config it
writes runs."""

from __future__ import annotations

import json

import numpy as np
import yaml

from tests.helpers.cli import invoke
from tests.helpers.hf_folders import sentences

QUICK = [
    f"report.{key}={value}"
    for key, value in (
        ("min_runs", 5),
        ("min_seconds", 0),
        ("max_seconds", 0.2),
        ("warmup_runs", 1),
    )
]


def test_init_proposes_int4_with_perplexity_and_generation(hf_folders, tmp_path):
    bare = yaml.safe_load(invoke("init", hf_folders["gpt2"]).stdout)
    assert bare["passes"] == [{"type": "quantize.int4", "block_size": 32}]
    assert bare["report"]["generation"] == {
        "prompt_tokens": 48,
        "new_tokens": 16,
        "batch_sizes": [1],
    }  # fmt: skip  (64 positions)
    assert "max_accuracy_drop" not in (bare.get("gates") or {})  # nothing to judge it on
    (tmp_path / "text.txt").write_text("\n".join(sentences(40)) + "\n")
    out = tmp_path / "llama.yaml"
    result = invoke("init", hf_folders["llama"], "--data", tmp_path / "text.txt", "-o", out)
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load(out.read_text())
    assert config["data"]["eval"] == {"path": "text.txt", "max_length": 64}
    assert config["report"]["metric"] == "perplexity"
    assert config["gates"]["max_accuracy_drop"] == 0.03
    assert invoke("validate", out).exit_code == 0
    generation = "report.generation={prompt_tokens: 8, new_tokens: 4, min_rounds: 2}"
    run = invoke(
        "run", hf_folders["llama"], "-c", out, "-o", tmp_path / "out", "--json",
        *(arg for setting in QUICK for arg in ("--set", setting)),
        "--set", generation, "--set", "gates.min_size_ratio=1",
    )  # fmt: skip
    assert run.exit_code in (0, 3), run.stderr  # random weights: the budget may not hold
    report = json.loads(run.stdout)
    assert [s["name"] for s in report["stages"]] == ["baseline", "quantize.int4"]
    assert report["stages"][1]["metric"]["tokens"] > 0
    assert report["summary"]["generation"]["tokens_per_second"] > 0


def test_a_decoder_reads_running_text_from_a_txt(hf_folders, tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "w1 w2"}\n')
    result = invoke("init", hf_folders["gpt2"], "--data", tmp_path / "d.jsonl")
    assert result.exit_code == 2 and "a decoder reads running text; give a .txt" in result.stderr


def test_init_on_a_decoder_program_proposes_the_decoders_recipe(toy_programs, hf_folders, tmp_path):
    import torch

    from tests.helpers.program_decoders import causal_lm_program

    torch.export.save(causal_lm_program("llama", positions=64), tmp_path / "llama.pt2")
    result = invoke("init", tmp_path / "llama.pt2")
    assert result.exit_code == 0, result.stderr
    proposed = yaml.safe_load(result.stdout)
    assert proposed["passes"] == [{"type": "quantize.int4", "block_size": 32}]  # no pruning
    assert proposed["report"]["generation"] == {
        "prompt_tokens": 48,
        "new_tokens": 16,
        "batch_sizes": [1],
    }  # fmt: skip  (the program bounds the mask at 64 positions)
    assert "# model: {tokenizer: my-tokenizer}" in result.stdout  # how to judge it by perplexity
    assert "#   eval: {path: text.txt, max_length: 64}" in result.stdout
    (tmp_path / "text.txt").write_text("\n".join(sentences(10)) + "\n")
    text = invoke("init", tmp_path / "llama.pt2", "--data", tmp_path / "text.txt")
    assert text.exit_code == 2 and text.stderr.count("\n") == 1, text.stderr
    assert "llama.pt2 holds no tokenizer to read text with; add --tokenizer FOLDER" in text.stderr
    out = tmp_path / "text.yaml"  # the tokenizer the LLaMA folder was saved with
    arguments = ("--data", tmp_path / "text.txt", "--tokenizer", hf_folders["llama"], "-o", out)
    read = invoke("init", tmp_path / "llama.pt2", *arguments)
    assert read.exit_code == 0, read.stderr  # the starter ran on two of the text's windows
    config = yaml.safe_load(out.read_text())
    assert (tmp_path / config["model"]["tokenizer"]).resolve() == hf_folders["llama"].resolve()
    assert config["data"]["eval"] == {"path": "text.txt", "max_length": 64}
    assert config["report"]["metric"] == "perplexity"
    assert config["gates"]["max_accuracy_drop"] == 0.03
    assert invoke("validate", out).exit_code == 0
    folder = invoke("init", hf_folders["llama"], "--tokenizer", hf_folders["llama"])
    assert folder.exit_code == 2 and "a model folder's own tokenizer is used" in folder.stderr
    unread = invoke("init", tmp_path / "llama.pt2", "--tokenizer", hf_folders["llama"])
    assert unread.exit_code == 2 and "reads text given to --data: add --data" in unread.stderr
    for bad in (tmp_path / "missing", tmp_path / "text.txt"):  # no folder, a file
        refused = invoke("init", tmp_path / "llama.pt2", *arguments[:2], "--tokenizer", bad)
        assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, refused.stderr
    ids = np.arange(5, 53, dtype=np.int64).reshape(6, 8)  # token ids need no tokenizer
    np.savez(tmp_path / "ids.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    out = tmp_path / "toy.yaml"  # the toy program: quick to run
    given = invoke("init", toy_programs["cache"], "--data", tmp_path / "ids.npz", "-o", out)
    assert given.exit_code == 0, given.stderr
    assert yaml.safe_load(out.read_text())["report"]["metric"] == "agreement"
    generation = "report.generation={prompt_tokens: 8, new_tokens: 4, min_rounds: 2}"
    run = invoke(
        "run", toy_programs["cache"], "-c", out, "-o", tmp_path / "out", "--json",
        *(arg for setting in QUICK for arg in ("--set", setting)),
        "--set", generation, "--set", "gates.min_size_ratio=1",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    report = json.loads(run.stdout)
    assert [s["name"] for s in report["stages"]] == ["baseline", "quantize.int4"]
    assert report["summary"]["generation"]["tokens_per_second"] > 0
    assert report["stages"][1]["metric"]["name"] == "agreement"
