"""Benchmark: every recipe on its sample model, speed reported as ratios taken in one run.

Each stage's latency is measured in interleaved rounds inside one process (see
compress.measure.latency), so the ratios compare like with like on this machine.
Then compress against the plain ONNX Runtime quantization script (bench/peer.py), with the
issue's goals checked on the measured numbers; exits 1 when a goal is not met.
Run with `make bench`; prints the tables and writes bench/results.json (not committed).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.batch import batch_row  # noqa: E402
from bench.decoder_accuracy import decoder_accuracy_table  # noqa: E402
from bench.decoder_accuracy import main as decoder_accuracy_main  # noqa: E402
from bench.decoder_auto import decoder_auto_table  # noqa: E402
from bench.decoder_auto import main as decoder_auto_main  # noqa: E402
from bench.decoders import decoder_table  # noqa: E402
from bench.decoders import main as decoders_main  # noqa: E402
from bench.folders import folders_table  # noqa: E402
from bench.folders import main as folders_main  # noqa: E402
from bench.goals import goal_line, print_goals  # noqa: E402
from bench.int4_budget import int4_budget_row  # noqa: E402
from bench.int4_budget import main as int4_main  # noqa: E402
from bench.iterate import iterate_table  # noqa: E402
from bench.iterate import main as iterate_main  # noqa: E402
from bench.peer import peer_table, print_table  # noqa: E402
from bench.prune_transformers import recovery, recovery_goal, transformer_table  # noqa: E402
from bench.real import main as real_main  # noqa: E402
from bench.real import print_results, real_table  # noqa: E402
from bench.timing import main as timing_main  # noqa: E402
from bench.timing import timing_checks  # noqa: E402
from bench.zoo import main as zoo_main  # noqa: E402
from bench.zoo import print_zoo, zoo_table  # noqa: E402
from compress.job.pipeline import run  # noqa: E402


def recipes():
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        found = re.search(
            r"compress run (\S+) -c configs/" + re.escape(config.name), config.read_text()
        )
        if found:
            yield config, ROOT / found.group(1)


def recipe_rows() -> list[dict]:
    rows = []
    for config, model in recipes():
        with tempfile.TemporaryDirectory() as out:
            report = run(model, config, Path(out) / "o")
        base, final = report.baseline, report.final
        speedups = {b: base.latency_ms[b].p50 / final.latency_ms[b].p50 for b in base.latency_ms}
        rows.append(
            {
                "recipe": config.name,
                "model": model.name,
                "size_ratio": report.summary.size_ratio,
                "gzip_ratio": report.summary.gzip_ratio,
                "speedup_p50": {b: round(s, 3) for b, s in speedups.items()},
                "macs_ratio": round(base.macs / final.macs, 3),
                "accuracy_drop": report.summary.accuracy_drop,
                "cpu": report.environment.cpu,
                "threads": report.environment.threads,
            }
        )
    for row in rows:
        speed = "  ".join(f"batch {b}: {s:.2f}x" for b, s in row["speedup_p50"].items())
        print(
            f"{row['recipe']:<22} {row['model']:<22} size {row['size_ratio']:.2f}x "
            f"(gzipped {row['gzip_ratio']:.2f}x)  "
            f"{speed}  MACs ratio {row['macs_ratio']:.2f}x  accuracy drop {row['accuracy_drop']}"
        )
    return rows


def pruning_checks(rows: list[dict]) -> list[tuple[str, bool]]:
    """The pruning goals, on the rows of this run: real channels gone, real time saved."""
    by_recipe = {row["recipe"]: row for row in rows}
    cnn, resnet = by_recipe.get("prune-channels.yaml"), by_recipe.get("prune-channels-resnet.yaml")
    checks = []
    if cnn:
        checks += [
            (
                f"prune.channels amount 0.5 on the CNN: about 4x fewer MACs in the exported "
                f"ONNX model (measured {cnn['macs_ratio']:.2f}x)",
                3.5 <= cnn["macs_ratio"] <= 4.5,
            ),
            (
                f"prune.channels amount 0.5 on the CNN: at least 2x lower ONNX latency at batch "
                f"32 than the fp32 baseline (measured {cnn['speedup_p50']['32']:.2f}x)",
                cnn["speedup_p50"]["32"] >= 2.0,
            ),
        ]
    checks.append(
        (
            "prune.channels on the residual depthwise CNN prunes and exports"
            + (f" ({resnet['macs_ratio']:.2f}x fewer MACs)" if resnet else " (did not run)"),
            bool(resnet) and resnet["macs_ratio"] > 1.5,
        )
    )
    return checks


def distillation_checks(rows: list[dict]) -> list[tuple[str, bool]]:
    """The recipe's three figures against the fp32 ONNX baseline of the same run, and the
    transformer student."""
    by_recipe = {row["recipe"]: row for row in rows}
    recipe, student = (
        by_recipe.get("digits-prune-distill-int8.yaml"),
        by_recipe.get("text-distill-student.yaml"),
    )
    if not recipe:
        return [("digits-prune-distill-int8 ran", False)]
    speedup, drop = recipe["speedup_p50"]["32"], recipe["accuracy_drop"]
    return [
        (
            f"prune -> distill -> int8 on the CNN: at least 4x faster at batch 32 than fp32 "
            f"ONNX (measured {speedup:.2f}x)",
            speedup >= 4,
        ),
        (
            f"prune -> distill -> int8 on the CNN: at least 10x smaller (measured "
            f"{recipe['size_ratio']:.2f}x)",
            recipe["size_ratio"] >= 10,
        ),
        (
            f"prune -> distill -> int8 on the CNN: top-1 within 0.5 point of fp32 (drop {drop})",
            drop is not None and drop <= 0.005,
        ),
        (
            "a declared transformer student distils, exports and runs"
            + (
                f" ({student['size_ratio']:.2f}x smaller, {student['speedup_p50']['32']:.2f}x "
                f"faster, top-1 drop {student['accuracy_drop']})"
                if student
                else " (did not run)"
            ),
            bool(student),
        ),
    ]


def main(argv: list[str]) -> int:
    """`run.py` runs every part (the zoo's pruning included); `run.py peer` only the
    side-by-side with plain onnxruntime; `run.py batch` only the batch row (--jobs 2 against
    --jobs 1); `run.py real` only the real pretrained models (bench/real.py); `run.py zoo
    [ARGS]` only the pruned architectures (bench/zoo.py); `run.py timing` only the timing
    goals (bench/timing.py); `run.py iterate` only the stage cache and sweep rows
    (bench/iterate.py); `run.py folders` only the model folders (bench/folders.py); `run.py
    int4` only the budgeted 4-bit MiniLM row (bench/int4_budget.py); `run.py decoders [0.5b |
    56m]` only the decoder language model (bench/decoders.py; 0.5b unless told); `run.py
    decoder-accuracy` only the decoder trained here on Python's sources, int4 judged by
    perplexity (bench/decoder_accuracy.py); `run.py decoder-auto` only quantize.auto on the 55M
    decoder (bench/decoder_auto.py)."""
    if argv[1:] == ["batch"]:
        _, check = batch_row()
        return print_goals([check])
    if argv[1:] == ["real"]:
        return real_main()
    if argv[1:2] == ["zoo"]:
        return zoo_main(argv[2:])
    if argv[1:] == ["timing"]:
        return timing_main()
    if argv[1:] == ["iterate"]:
        return iterate_main()
    if argv[1:] == ["folders"]:
        return folders_main()
    if argv[1:] == ["int4"]:
        return int4_main()
    if argv[1:2] == ["decoders"] and len(argv) <= 3:
        return decoders_main(*argv[2:])
    if argv[1:] == ["decoder-accuracy"]:
        return decoder_accuracy_main()
    if argv[1:] == ["decoder-auto"]:
        return decoder_auto_main()
    rows = [] if argv[1:] == ["peer"] else recipe_rows()
    peer_rows, checks = peer_table()
    batch, batch_check = batch_row() if rows else (None, None)
    checks += [batch_check] if batch_check else []
    if rows:
        checks += pruning_checks(rows) + distillation_checks(rows)
    real_rows, real_checks = real_table() if rows else ([], [])
    zoo_rows, zoo_checks = zoo_table([], []) if rows else ([], [])
    transformer_rows, transformer_checks = [], []
    if rows:
        with tempfile.TemporaryDirectory() as folder:
            transformer_rows, transformer_checks = transformer_table(Path(folder), [])
            recovered = recovery(Path(folder))
            transformer_rows.append(recovered)
            transformer_checks.append(recovery_goal(recovered))
    timing = timing_checks() if rows else []
    iterate, iterate_checks = iterate_table() if rows else ({}, [])
    timing += iterate_checks
    folders, folder_checks = folders_table() if rows else ({}, [])
    timing += folder_checks
    int4, int4_checks = int4_budget_row() if rows else ({}, [])
    timing += int4_checks
    decoders, decoder_checks = decoder_table() if rows else ({}, [])
    timing += decoder_checks
    accuracy, accuracy_checks = decoder_accuracy_table() if rows else ({}, [])
    timing += accuracy_checks
    decoder_auto, decoder_auto_checks = decoder_auto_table() if rows else ({}, [])
    timing += decoder_auto_checks
    print_table(peer_rows, checks)
    for text, met in timing:
        print(goal_line(text, met))
    checks += timing
    if real_rows:
        print_results(real_rows, real_checks)
    if zoo_rows:
        print_zoo(zoo_rows, zoo_checks + transformer_checks, [])
    checks += real_checks + zoo_checks + transformer_checks
    results = {
        "recipes": rows,
        "versus_plain_ort": peer_rows,
        "batch": batch,
        "real_models": real_rows,
        "pruned_architectures": zoo_rows,
        "pruned_transformers": transformer_rows,
        "iterate": iterate,
        "model_folders": folders,
        "int4_budget": int4,
        "decoders": decoders,
        "decoder_accuracy": accuracy,
        "decoder_auto": decoder_auto,
        "goals": checks,
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(met for _, met in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
