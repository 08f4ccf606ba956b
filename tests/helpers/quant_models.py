"""Small models whose int8 trouble is made on purpose, for the sensitivity and fallback tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAYERS = ["/0/Gemm", "/2/Gemm", "/4/Gemm", "/6/Gemm", "/8/Gemm", "/10/Gemm"]  # Linear i: LAYERS[i]


def outlier_mlp(path: Path, outliers: list[tuple[int, float]], seed: int = 0) -> Path:
    """A 6-layer ReLU MLP (16 -> 32 ... -> 8) as ONNX; for each (i, factor) in `outliers`, Linear
    i's channel 0 is `factor` times larger and Linear i+1 scales it back. The float model is the
    same, but int8 gives that tensor one scale for a huge range, so the small channels round to
    nothing and Linear i+1, which reads them, is ruined."""
    import torch

    torch.manual_seed(seed)
    linears = [torch.nn.Linear(16, 32)] + [torch.nn.Linear(32, 32) for _ in range(4)]
    linears.append(torch.nn.Linear(32, 8))
    modules = []
    for linear in linears[:-1]:
        modules += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*modules, linears[-1]).eval()
    with torch.no_grad():
        for index, factor in outliers:
            linears[index].weight[0] *= factor
            linears[index].bias[0] = 2 * factor
            linears[index + 1].weight[:, 0] /= factor
    torch.onnx.export(
        model,
        (torch.zeros(2, 16),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    return path


def samples(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 16)).astype(np.float32)


def write_data(folder: Path) -> None:
    """calib.npz (64 samples) and eval.npz (256) beside a config in `folder`."""
    np.savez(folder / "calib.npz", x=samples(64, seed=1))
    np.savez(folder / "eval.npz", x=samples(256, seed=2))


STATIC_PASSES = "passes:\n  - type: quantize.static\n    per_channel: true\n"


def one_pass_config(folder: Path, entry: str, name: str) -> Path:
    """folder/name: the pass `entry` (a YAML flow mapping) on calib.npz / eval.npz (input x),
    judged by cosine."""
    path = folder / name
    path.write_text(
        "version: 1\n"
        "data:\n"
        "  calibration: {path: calib.npz, inputs: [x]}\n"
        "  eval: {path: eval.npz, inputs: [x]}\n"
        f"passes:\n  - {entry}\n"
        "report: {batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2}\n"
    )
    return path


def static_config(folder: Path, extra: str = "", passes: str = STATIC_PASSES) -> Path:
    """A config for the MLP: static int8 per channel (with `extra` keys), judged by cosine."""
    write_data(folder)
    path = folder / "config.yaml"
    path.write_text(
        "version: 1\n"
        "data:\n"
        "  calibration: {path: calib.npz, inputs: [x]}\n"
        "  eval: {path: eval.npz, inputs: [x]}\n"
        + passes
        + extra
        + "report: {batch_sizes: [8], metric: cosine, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2, warmup_runs: 1}\n"
    )
    return path
