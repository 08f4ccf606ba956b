"""Rebuild the sample models and data sets in ``sample_models/``.

Run from the repository root (``make samples``)::

    .venv/bin/python sample_models/build.py                # everything
    .venv/bin/python sample_models/build.py --only resnet  # one model

Uses scikit-learn's bundled ``load_digits()`` (no downloads), trains
:class:`arch.DigitsCNN`, :class:`arch.DigitsResNet` and
:class:`arch.TextTransformer` deterministically on CPU, and writes npz data
splits, exported models (torch.export ``.pt2``, TorchScript ``.ts``), state
dicts and ``README.md``.

Saving a ``.pt2`` / ``.ts`` is not byte-reproducible (the archives embed a
random serialization id), so rebuilding a model rewrites its files even when
the weights are identical. ``--only NAME`` rebuilds just the named models: the
npz splits are read back instead of rewritten, and the README rows of the other
models are recomputed from their committed state dicts, so their files stay
untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from arch import DigitsCNN, DigitsResNet, TextTransformer  # noqa: E402

SEED = 0
SEQ_LEN = 64
PAD_ID = 0
TOKEN_OFFSET = 2  # ids 0 = PAD, 1 = reserved, 2..18 = pixel intensity 0..16
SPLITS = ("train", "calib", "eval")


def set_determinism(seed: int = SEED) -> None:
    """Seed everything and pin torch to one deterministic CPU thread."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def split_digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified split of the 1797 digits into train/calib/eval (1200/200/397)."""
    digits = load_digits()
    images = digits.images.astype(np.float32)
    labels = digits.target.astype(np.int64)
    rest_x, eval_x, rest_y, eval_y = train_test_split(
        images, labels, test_size=397, stratify=labels, random_state=SEED
    )
    train_x, calib_x, train_y, calib_y = train_test_split(
        rest_x, rest_y, test_size=200, stratify=rest_y, random_state=SEED
    )
    return {
        "train": (train_x, train_y),
        "calib": (calib_x, calib_y),
        "eval": (eval_x, eval_y),
    }


def to_tokens(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read images row by row as token ids; trim trailing zero pixels, pad with PAD."""
    pixels = images.reshape(len(images), -1).astype(np.int64)
    ids = np.full(pixels.shape, PAD_ID, dtype=np.int64)
    mask = np.zeros(pixels.shape, dtype=np.int64)
    for i, row in enumerate(pixels):
        nonzero = np.flatnonzero(row)
        length = int(nonzero[-1]) + 1 if len(nonzero) else 1
        ids[i, :length] = row[:length] + TOKEN_OFFSET
        mask[i, :length] = 1
    return ids, mask


def write_data(splits: dict) -> dict[str, dict[str, np.ndarray]]:
    """Write digits_*.npz and text_*.npz; return the arrays keyed by file name."""
    written = {}
    for name in SPLITS:
        images, labels = splits[name]
        cnn = {"x": (images / 16.0).astype(np.float32)[:, None], "y": labels}
        ids, mask = to_tokens(images)
        text = {"input_ids": ids, "attention_mask": mask, "y": labels}
        for stem, arrays in ((f"digits_{name}", cnn), (f"text_{name}", text)):
            np.savez_compressed(HERE / f"{stem}.npz", **arrays)
            written[f"{stem}.npz"] = arrays
    return written


def read_data() -> dict[str, dict[str, np.ndarray]]:
    """Read the npz splits back, keyed and ordered like :func:`write_data`."""
    data = {}
    for name in SPLITS:
        for stem in (f"digits_{name}", f"text_{name}"):
            with np.load(HERE / f"{stem}.npz") as npz:
                data[f"{stem}.npz"] = {k: npz[k] for k in npz.files}
    return data


def batches(n: int, batch_size: int, gen: torch.Generator):
    """Yield shuffled index batches."""
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def train(model: nn.Module, inputs: tuple, y: torch.Tensor, epochs: int, lr: float) -> None:
    """Adam + cosine schedule + cross entropy over a fixed-seed shuffle."""
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(y) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    for _ in range(epochs):
        for idx in batches(len(y), 32, gen):
            opt.zero_grad()
            loss = loss_fn(model(*(t[idx] for t in inputs)), y[idx])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def accuracy(model, inputs: tuple, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return float((model(*inputs).argmax(dim=1) == y).float().mean() * 100)


def tensors(arrays: dict[str, np.ndarray], keys: tuple[str, ...]) -> tuple:
    return tuple(torch.from_numpy(arrays[k]) for k in keys)


def check_close(ref: nn.Module, other, inputs: tuple, what: str) -> None:
    """Assert ``other`` matches the eager model at batch 1 and 32."""
    with torch.no_grad():
        for bs in (1, 32):
            args = tuple(t[:bs] for t in inputs)
            diff = (ref(*args) - other(*args)).abs().max().item()
            if diff > 1e-5:
                raise RuntimeError(f"{what}: batch {bs} differs from eager by {diff}")


def save_cnn(model: DigitsCNN, eval_x: torch.Tensor) -> None:
    """Save digits_cnn.pt2 (dynamic batch), .ts and state dict."""
    torch.save(model.state_dict(), HERE / "digits_cnn_state.pt")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (eval_x[:4],), dynamic_shapes=({0: batch},))
    torch.export.save(program, HERE / "digits_cnn.pt2")
    loaded = torch.export.load(HERE / "digits_cnn.pt2").module()
    check_close(model, loaded, (eval_x,), "digits_cnn.pt2")
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(HERE / "digits_cnn.ts"))
    check_close(model, torch.jit.load(str(HERE / "digits_cnn.ts")), (eval_x,), "digits_cnn.ts")


def save_resnet(model: DigitsResNet, eval_x: torch.Tensor) -> None:
    """Save digits_resnet.pt2 (dynamic batch) and its state dict (eval mode: BN running stats)."""
    model.eval()
    torch.save(model.state_dict(), HERE / "digits_resnet_state.pt")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (eval_x[:4],), dynamic_shapes=({0: batch},))
    torch.export.save(program, HERE / "digits_resnet.pt2")
    loaded = torch.export.load(HERE / "digits_resnet.pt2").module()
    check_close(model, loaded, (eval_x,), "digits_resnet.pt2")


def save_text(model: TextTransformer, inputs: tuple) -> None:
    """Save text_transformer.ts (scripted) and its state dict."""
    torch.save(model.state_dict(), HERE / "text_transformer_state.pt")
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(HERE / "text_transformer.ts"))
    loaded = torch.jit.load(str(HERE / "text_transformer.ts"))
    check_close(model, loaded, inputs, "text_transformer.ts")


def build_cnn(data: dict) -> tuple[int, float]:
    set_determinism()
    x, y = tensors(data["digits_train.npz"], ("x", "y"))
    model = DigitsCNN()
    train(model, (x,), y, epochs=30, lr=3e-3)
    ex, ey = tensors(data["digits_eval.npz"], ("x", "y"))
    acc = accuracy(model, (ex,), ey)
    save_cnn(model, ex)
    return count_params(model), acc


def build_resnet(data: dict) -> tuple[int, float]:
    set_determinism()
    x, y = tensors(data["digits_train.npz"], ("x", "y"))
    model = DigitsResNet()
    train(model, (x,), y, epochs=30, lr=1e-2)
    ex, ey = tensors(data["digits_eval.npz"], ("x", "y"))
    acc = accuracy(model, (ex,), ey)
    save_resnet(model, ex)
    return count_params(model), acc


def build_text(data: dict) -> tuple[int, float]:
    set_determinism()
    keys = ("input_ids", "attention_mask", "y")
    ids, mask, y = tensors(data["text_train.npz"], keys)
    model = TextTransformer()
    train(model, (ids, mask), y, epochs=40, lr=3e-3)
    eids, emask, ey = tensors(data["text_eval.npz"], keys)
    acc = accuracy(model, (eids, emask), ey)
    save_text(model, (eids, emask))
    return count_params(model), acc


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MODEL_FILES = (
    ("digits_cnn.pt2", "torch.export (`torch.export.load`), dynamic batch", "DigitsCNN"),
    ("digits_cnn.ts", "TorchScript (`torch.jit.load`)", "DigitsCNN"),
    ("digits_cnn_state.pt", "state_dict (`torch.load(weights_only=True)`)", "DigitsCNN"),
    ("digits_resnet.pt2", "torch.export (`torch.export.load`), dynamic batch", "DigitsResNet"),
    ("digits_resnet_state.pt", "state_dict (`torch.load(weights_only=True)`)", "DigitsResNet"),
    ("text_transformer.ts", "TorchScript (`torch.jit.load`)", "TextTransformer"),
    (
        "text_transformer_state.pt",
        "state_dict (`torch.load(weights_only=True)`)",
        "TextTransformer",
    ),
)

README_HEAD = """# Sample models

Small deterministic models trained on scikit-learn's bundled `load_digits()`
(8x8 images, 10 classes). Generated by `build.py`; do not edit by hand.

| file | format | arch | params | eval top-1 (%) |
|---|---|---|---|---|
"""

README_DATA = """
Inputs: `DigitsCNN` and `DigitsResNet` take `x` float32 `[batch, 1, 8, 8]`;
`TextTransformer` takes `input_ids`, `attention_mask` int64 `[batch, 64]`. All
return logits `[batch, 10]`. `DigitsResNet` is a residual CNN of depthwise-separable
blocks (depthwise 3x3 conv + BN + ReLU + pointwise 1x1 conv + BN, added to the skip)
with global average pooling, saved in eval mode (BN uses running statistics).

## Data

Stratified split (seed 0) into train / calib / eval. `digits_*` hold pixels / 16.
`text_*` hold the same images read row by row as tokens (id = pixel + 2,
0 = PAD, 1 reserved), trailing zero pixels trimmed and padded back with PAD.

| file | keys (dtype, shape) |
|---|---|
"""

README_TAIL = """
## Rebuild

```
make samples                                 # runs: python sample_models/build.py
python sample_models/build.py --only resnet  # rebuild one model (cnn, resnet, text)
```

Rebuilding rewrites a model's `.pt2` / `.ts` bytes even when the weights are the
same (the archives embed a random id), so rebuild only what changed.
"""


def write_readme(results: dict[str, tuple[int, float]], data: dict) -> None:
    """Write README.md describing every artifact; ``results`` maps arch -> (params, acc)."""
    text = README_HEAD
    for file, fmt, arch in MODEL_FILES:
        params, acc = results[arch]
        text += f"| `{file}` | {fmt} | `arch.py:{arch}` | {params:,} | {acc:.2f} |\n"
    text += README_DATA
    for name, arrays in data.items():
        keys = ", ".join(f"`{k}` {a.dtype} {list(a.shape)}" for k, a in arrays.items())
        text += f"| `{name}` | {keys} |\n"
    (HERE / "README.md").write_text(text + README_TAIL)


def evaluate_saved(arch: str, data: dict) -> tuple[int, float]:
    """(params, eval top-1) of a model from its committed state dict, without rebuilding it."""
    cls, state, keys, split = SAVED[arch]
    model = cls()
    model.load_state_dict(torch.load(HERE / state, weights_only=True))
    model.eval()
    *inputs, y = tensors(data[split], keys)
    return count_params(model), accuracy(model, tuple(inputs), y)


# name on the command line -> (arch, build function)
BUILDERS = {
    "cnn": ("DigitsCNN", build_cnn),
    "resnet": ("DigitsResNet", build_resnet),
    "text": ("TextTransformer", build_text),
}
# arch -> (class, state dict file, npz keys (inputs..., labels), eval split)
SAVED = {
    "DigitsCNN": (DigitsCNN, "digits_cnn_state.pt", ("x", "y"), "digits_eval.npz"),
    "DigitsResNet": (DigitsResNet, "digits_resnet_state.pt", ("x", "y"), "digits_eval.npz"),
    "TextTransformer": (
        TextTransformer,
        "text_transformer_state.pt",
        ("input_ids", "attention_mask", "y"),
        "text_eval.npz",
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(BUILDERS),
        metavar="NAME",
        help=f"rebuild only these models ({', '.join(BUILDERS)}); keep data and other models",
    )
    args = parser.parse_args(argv)
    set_determinism()
    data = read_data() if args.only else write_data(split_digits())
    results = {}
    for name, (arch, build) in BUILDERS.items():
        if args.only and name not in args.only:
            results[arch] = evaluate_saved(arch, data)
            print(
                f"{arch:<16} params={results[arch][0]:,} eval top-1={results[arch][1]:.2f}% (kept)"
            )
            continue
        results[arch] = build(data)
        print(f"{arch:<16} params={results[arch][0]:,} eval top-1={results[arch][1]:.2f}%")
    write_readme(results, data)


if __name__ == "__main__":
    main()
