"""weights.round: registered, strict, exact on bfloat16, and a run through `compress run`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from compress.passes.registry import get_pass
from pydantic import ValidationError

from compress_round.rounding import RoundParams, RoundWeights, round_mantissa


def test_the_entry_point_registers_the_pass():
    assert get_pass("weights.round") is RoundWeights


def test_params_refuse_unknown_keys_and_bad_bits():
    with pytest.raises(ValidationError):
        RoundParams.model_validate({"bitz": 7})
    with pytest.raises(ValidationError):
        RoundParams.model_validate({"bits": 0})


def test_seven_bits_round_as_bfloat16_does():
    weight = torch.randn(10_000)
    assert torch.equal(round_mantissa(weight, 7), weight.to(torch.bfloat16).float())


def test_a_run_rounds_the_layers_and_keeps_the_outputs(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    example = (torch.randn(4, 16),)
    batch = ({0: torch.export.Dim("batch")},)  # a dynamic batch: compress times several
    program = torch.export.export(model.eval(), example, dynamic_shapes=batch)
    torch.export.save(program, tmp_path / "mlp.pt2")
    samples = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=samples)
    (tmp_path / "round.yaml").write_text(
        "version: 1\n"
        "data: {eval: {path: eval.npz, inputs: [x]}}\n"
        "passes: [{type: weights.round, bits: 7}]\n"
        "report: {batch_sizes: [8], metric: agreement, min_runs: 5, min_seconds: 0}\n"
    )
    command = ["run", "mlp.pt2", "-c", "round.yaml", "-o", "out", "--json", "--no-cache"]
    done = subprocess.run(
        [sys.executable, "-m", "compress_cli", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr  # the one error line says what went wrong
    report = json.loads(done.stdout)
    final = report["stages"][-1]
    assert final["name"] == "weights.round"
    assert final["details"]["weights"] == 16 * 32 + 32 * 4
    assert final["metric"]["value"] >= 0.99
