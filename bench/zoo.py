"""The architectures people ship, with random weights: does `prune.channels` with its defaults
make them faster, not only smaller?

Hand-written CNN families at their real widths and depths (torchvision cannot be installed beside
the CPU torch): MobileNetV2, MobileNetV3-small, EfficientNet-B0, RegNetX-400MF, ResNet-18 and
ShuffleNetV2 x1.0. Each is saved as a dynamic-batch `.pt2` and run through the pipeline with
`prune.channels` amount 0.3 and the pass's defaults (no data.train, so no fine-tune), at 96x96,
batch 8, 1 thread. The speedup is the report's own: the unpruned and pruned ONNX models timed
interleaved in one run. Each is also quantized with static int8 per channel (no pruning), to
show export and int8 work on it. Random weights measure mechanics, size and speed, not accuracy.

`python bench/zoo.py` runs it alone (`python bench/run.py zoo` too); `--set KEY=VALUE` changes
the pass (`--set round_to=16`) to compare settings. BERT, DistilBERT, ViT and GPT-2 from
`transformers` configs (bench/prune_transformers.py builds them) run the same `.pt2` flow on random
tokens (seq 32) or 64x64 images; bench/prune_transformers.py prunes them from a state_dict + arch.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import goal_line  # noqa: E402
from bench.real import save_program  # noqa: E402
from compress.errors import CompressError  # noqa: E402
from compress.job.pipeline import run  # noqa: E402

IMAGE_SIZE, BATCH, AMOUNT, SAMPLES = 96, 8, 0.3, 16
MIN_PARAMS_RATIO = 1.5


# ---- building blocks -------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


def make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcitation(nn.Module):
    """torchvision's: pool, 1x1 conv down (fc1), activation, 1x1 conv up (fc2), gate."""

    def __init__(self, channels: int, squeeze: int, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        scale = self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * scale


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and EfficientNet's MBConv: expand 1x1, depthwise kxk, (SE), project 1x1."""

    def __init__(self, cin, expanded, cout, k, s, act=nn.ReLU6, se_squeeze=0, se_gate=nn.Sigmoid):
        super().__init__()
        layers = [conv_bn(cin, expanded, 1, act=act)] if expanded != cin else []
        layers.append(conv_bn(expanded, expanded, k, s, groups=expanded, act=act))
        if se_squeeze:
            se_act = nn.SiLU if act is nn.SiLU else nn.ReLU
            layers.append(SqueezeExcitation(expanded, se_squeeze, se_act, se_gate))
        layers.append(conv_bn(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class Classifier(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


# ---- the families ----------------------------------------------------------------------------


def mobilenet_v2() -> nn.Module:
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
    settings += [(6, 160, 3, 2), (6, 320, 1, 1)]
    layers, cin = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(InvertedResidual(cin, cin * t, c, 3, s if i == 0 else 1))
            cin = c
    layers.append(conv_bn(cin, 1280, 1, act=nn.ReLU6))
    return Classifier(nn.Sequential(*layers), nn.Linear(1280, 1000))


def mobilenet_v3_small() -> nn.Module:
    re, hs = nn.ReLU, nn.Hardswish
    # kernel, expanded, out, squeeze-excitation, activation, stride
    settings = [(3, 16, 16, True, re, 2), (3, 72, 24, False, re, 2), (3, 88, 24, False, re, 1)]
    settings += [(5, 96, 40, True, hs, 2), (5, 240, 40, True, hs, 1), (5, 240, 40, True, hs, 1)]
    settings += [(5, 120, 48, True, hs, 1), (5, 144, 48, True, hs, 1), (5, 288, 96, True, hs, 2)]
    settings += [(5, 576, 96, True, hs, 1), (5, 576, 96, True, hs, 1)]
    layers, cin = [conv_bn(3, 16, 3, 2, act=hs)], 16
    for k, expanded, cout, se, act, s in settings:
        squeeze = make_divisible(expanded // 4) if se else 0
        layers.append(InvertedResidual(cin, expanded, cout, k, s, act, squeeze, nn.Hardsigmoid))
        cin = cout
    layers.append(conv_bn(cin, 576, 1, act=hs))
    head = nn.Sequential(nn.Linear(576, 1024), hs(), nn.Linear(1024, 1000))
    return Classifier(nn.Sequential(*layers), head)


def efficientnet_b0() -> nn.Module:
    # expand ratio, kernel, stride, out, repeats
    settings = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3)]
    settings += [(6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    layers, cin = [conv_bn(3, 32, 3, 2, act=nn.SiLU)], 32
    for t, k, s, c, n in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            layers.append(InvertedResidual(cin, cin * t, c, k, stride, nn.SiLU, max(1, cin // 4)))
            cin = c
    layers.append(conv_bn(cin, 1280, 1, act=nn.SiLU))
    return Classifier(nn.Sequential(*layers), nn.Linear(1280, 1000))


class XBlock(nn.Module):
    """RegNetX's residual bottleneck (ratio 1): 1x1, grouped 3x3 (16 channels a group), 1x1."""

    def __init__(self, cin: int, cout: int, s: int, group_width: int = 16):
        super().__init__()
        self.f = nn.Sequential(
            conv_bn(cin, cout, 1),
            conv_bn(cout, cout, 3, s, groups=cout // group_width),
            conv_bn(cout, cout, 1, act=None),
        )
        self.proj = conv_bn(cin, cout, 1, s, act=None) if s != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu((self.proj(x) if self.proj is not None else x) + self.f(x))


def regnet_x_400mf() -> nn.Module:
    layers, cin = [conv_bn(3, 32, 3, 2)], 32
    for width, depth in ((32, 1), (64, 2), (160, 7), (400, 12)):
        for i in range(depth):
            layers.append(XBlock(cin, width, 2 if i == 0 else 1))
            cin = width
    return Classifier(nn.Sequential(*layers), nn.Linear(cin, 1000))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, s: int):
        super().__init__()
        self.f = nn.Sequential(conv_bn(cin, cout, 3, s), conv_bn(cout, cout, 3, act=None))
        self.down = conv_bn(cin, cout, 1, s, act=None) if s != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu((self.down(x) if self.down is not None else x) + self.f(x))


def resnet18() -> nn.Module:
    layers, cin = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
    for width, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, width, s), BasicBlock(width, width, 1)]
        cin = width
    return Classifier(nn.Sequential(*layers), nn.Linear(512, 1000))


def channel_shuffle(x, groups: int = 2):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: split (or two branches when downsampling), concat, shuffle."""

    def __init__(self, cin: int, cout: int, s: int):
        super().__init__()
        half = cout // 2
        self.s = s
        if s > 1:
            self.left = nn.Sequential(
                conv_bn(cin, cin, 3, s, groups=cin, act=None), conv_bn(cin, half, 1)
            )
        branch_in = cin if s > 1 else half
        self.right = nn.Sequential(
            conv_bn(branch_in, half, 1),
            conv_bn(half, half, 3, s, groups=half, act=None),
            conv_bn(half, half, 1),
        )

    def forward(self, x):
        if self.s == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.right(b)), 1)
        else:
            out = torch.cat((self.left(x), self.right(x)), 1)
        return channel_shuffle(out)


def shufflenet_v2() -> nn.Module:
    layers, cin = [conv_bn(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)], 24
    for width, repeats in ((116, 4), (232, 8), (464, 4)):
        for i in range(repeats):
            layers.append(ShuffleUnit(cin, width, 2 if i == 0 else 1))
            cin = width
    layers.append(conv_bn(cin, 1024, 1))
    return Classifier(nn.Sequential(*layers), nn.Linear(1024, 1000))


@dataclass
class ZooModel:
    name: str
    build: Callable[[], nn.Module]
    min_speedup: float | None  # the goal for pruned vs unpruned at BATCH; None: no goal
    min_params_ratio: float = MIN_PARAMS_RATIO
    inputs: Callable[[int], dict[str, np.ndarray]] = field(default=None)  # default: images

    def samples(self, count: int) -> dict[str, np.ndarray]:
        """Random inputs by name: images [count, 3, IMAGE_SIZE, IMAGE_SIZE] unless `inputs`."""
        if self.inputs is not None:
            return self.inputs(count)
        rng = np.random.default_rng(0)
        shape = (count, 3, IMAGE_SIZE, IMAGE_SIZE)
        return {"x": rng.standard_normal(shape).astype(np.float32)}


CNNS = [
    ZooModel("mobilenet_v2", mobilenet_v2, 1.2),
    ZooModel("mobilenet_v3_small", mobilenet_v3_small, 1.2),
    ZooModel("efficientnet_b0", efficientnet_b0, 1.2),
    ZooModel("regnet_x_400mf", regnet_x_400mf, 1.2),
    ZooModel("resnet18", resnet18, 1.4),
    ZooModel("shufflenet_v2", shufflenet_v2, None),
]


def _tokens(count: int) -> dict[str, np.ndarray]:
    """Random token ids (seq 32) with padding, as bench/prune_transformers.py writes them."""
    from bench.prune_transformers import SIZE

    rng = np.random.default_rng(0)
    ids = rng.integers(0, SIZE["vocab"], (count, 32)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::2, 24:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _patches(count: int) -> dict[str, np.ndarray]:
    """Random 64x64 images for ViT (patch 8)."""
    rng = np.random.default_rng(0)
    return {"pixel_values": rng.standard_normal((count, 3, 64, 64)).astype(np.float32)}


def _transformer(name: str) -> Callable[[], nn.Module]:
    """bench/prune_transformers.py's builder (transformers is imported only when it runs)."""

    def build() -> nn.Module:
        import bench.prune_transformers as transformers_bench

        return getattr(transformers_bench, name)()

    return build


# BERT, DistilBERT, ViT and GPT-2 from `transformers` configs (installed by the bench only), as
# .pt2 programs: issue 16's transformer goals (params 1.4x fewer, 1.2x faster at amount 0.3).
TRANSFORMERS = [
    ZooModel(name, _transformer(name), 1.2, 1.4, _patches if name == "vit" else _tokens)
    for name in ("bert", "distilbert", "vit", "gpt2")
]


# ---- the run ---------------------------------------------------------------------------------


def prune_one(model: ZooModel, folder: Path, overrides: list[str]) -> dict:
    """The model pruned by the pass (its figures, or the refusal), and int8 static on its own."""
    torch.manual_seed(0)
    module = model.build().eval()
    samples = model.samples(SAMPLES)
    program = folder / f"{model.name}.pt2"
    save_program(module, tuple(torch.from_numpy(a[:4]) for a in samples.values()), program)
    np.savez(folder / "calib.npz", **samples)
    names = list(samples)
    row = {"name": model.name} | _int8(program, folder, names)
    config = _config(folder, "prune.yaml", f"{{type: prune.channels, amount: {AMOUNT}}}", names)
    sets = [f"passes[0].{text}" for text in overrides]
    try:
        report = run(program, config, folder / "out", overrides=sets)
    except CompressError as e:
        return row | {"error": str(e)}
    base, pruned = report.baseline, report.final
    return row | {
        "params_ratio": round(base.params / pruned.params, 3),
        "macs_ratio": round(base.macs / pruned.macs, 3),
        "speedup": round(base.figure(BATCH).p50 / pruned.figure(BATCH).p50, 3),
        "base_ms": base.figure(BATCH).p50,
        "reason": (pruned.details.reason if pruned.details else None) or "",
    }


def _int8(program: Path, folder: Path, names: list[str]) -> dict:
    """Static int8 per channel on the unpruned model: its speedup and size ratio."""
    config = _config(folder, "int8.yaml", "{type: quantize.static, per_channel: true}", names)
    try:
        summary = run(program, config, folder / "int8").summary
    except CompressError as e:
        return {"int8_error": str(e)}
    return {"int8_speedup": summary.speedup, "int8_size_ratio": summary.size_ratio}


def _config(folder: Path, name: str, entry: str, inputs: list[str]) -> Path:
    path = folder / name
    path.write_text(
        "version: 1\n"
        f"data: {{calibration: {{path: calib.npz, inputs: [{', '.join(inputs)}]}}}}\n"
        f"passes: [{entry}]\n"
        f"report: {{batch_sizes: [{BATCH}], threads: 1, min_runs: 30, max_seconds: 8}}\n"
    )
    return path


def goals(row: dict, model: ZooModel) -> list[tuple[str, bool]]:
    if model.min_speedup is None:
        return []
    if "error" in row:
        return [(f"{model.name}: prunes ({row['error']})", False)]
    return [
        (
            f"{model.name}: pruned at least {model.min_speedup}x faster at batch {BATCH} "
            f"(measured {row['speedup']:.2f}x)",
            row["speedup"] >= model.min_speedup,
        ),
        (
            f"{model.name}: at least {model.min_params_ratio}x fewer params "
            f"(measured {row['params_ratio']:.2f}x)",
            row["params_ratio"] >= model.min_params_ratio,
        ),
    ]


def zoo_table(overrides: list[str], only: list[str]) -> tuple[list[dict], list]:
    rows, checks = [], []
    for model in CNNS + TRANSFORMERS:
        if only and model.name not in only:
            continue
        with tempfile.TemporaryDirectory() as folder:
            row = prune_one(model, Path(folder), overrides)
        print(row, flush=True)
        rows.append(row)
        checks += goals(row, model)
    return rows, checks


def print_zoo(rows: list[dict], checks: list[tuple[str, bool]], overrides: list[str]) -> None:
    settings = ", ".join(overrides) or "defaults"
    print(
        f"\nprune.channels amount {AMOUNT} ({settings}), {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH}, "
        "1 thread, random weights, no fine-tune"
    )
    print(
        "| model | params ratio | MACs ratio | speedup | unpruned p50 ms | int8 static speedup "
        "| int8 size ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        int8 = (
            f"{row['int8_speedup']:.2f}x | {row['int8_size_ratio']:.2f}x"
            if "int8_speedup" in row
            else f"failed: {row.get('int8_error', '')} |"
        )
        if "error" in row:
            print(f"| {row['name']} | refused: {row['error']} | | | | {int8} |")
        else:
            print(
                f"| {row['name']} | {row['params_ratio']:.2f}x | {row['macs_ratio']:.2f}x | "
                f"{row['speedup']:.2f}x | {row['base_ms']:.2f} | {int8} |"
            )
    print()
    for text, met in checks:
        print(goal_line(text, met))


def main(argv: list[str]) -> int:
    """`zoo.py [--set KEY=VALUE ...] [MODEL ...]`: the pass's settings, the models to run."""
    overrides, only, args = [], [], iter(argv)
    for arg in args:
        if arg == "--set":
            overrides.append(next(args))
        else:
            only.append(arg)
    unknown = sorted(set(only) - {model.name for model in CNNS + TRANSFORMERS})
    if unknown:
        names = ", ".join(model.name for model in CNNS + TRANSFORMERS)
        print(f"error: no zoo model {', '.join(unknown)}; the models: {names}", file=sys.stderr)
        return 2
    rows, checks = zoo_table(overrides, only)
    print_zoo(rows, checks, overrides)
    return 0 if all(met for _, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
