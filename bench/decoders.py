"""Decoder language models on a CPU: generation speed, size and memory, against ONNX Runtime
GenAI's model builder on the same folder.

A decoder folder is written here (transformers config, random weights: speed, size and memory
do not depend on them): by default Qwen2-0.5B's shape (494M parameters, the issue's goal), or
with `56m` a LLaMA-style model of 56M (minutes instead of tens of them); see DECODERS. Then it
goes through the commands a user types, each in a process of its own:

- `compress run FOLDER` with no pass: the float export with its key/value cache (the peak
  resident memory of each run's process against the float weights);
- `compress run model.onnx` with `quantize.int4` (and, on the small model, `quantize.dynamic`):
  each report times greedy generation (report.generation) of the float baseline and the
  quantized stage in interleaved rounds, so the decode speedups are paired;
- the builder (`python -m onnxruntime_genai.models.builder -i FOLDER -p int4 -e cpu`, offline)
  and its model run by onnxruntime-genai's own generator, interleaved here with compress's int4
  model run by compress's greedy loop (compress.measure.generation), same prompt, one thread:
  each tool's default (the goal: compress keeps the head at 8 bits, the builder writes it at 4),
  then like for like (the builder's `last_matmul:int8` against compress's default, and the
  builder's default against compress's `head_bits: 4`), so a gap reads as bytes or as kernels.

`python bench/run.py decoders [0.5b | 56m]` runs this part alone. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import print_goals  # noqa: E402

DECODERS = {  # name: (transformers class, config); random weights either way
    # ~56M parameters: the first measured LLaMA-style config (minutes here)
    "56m": ("LlamaForCausalLM", {
        "vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1408,
        "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 4,
        "max_position_embeddings": 1024,
    }),
    # ~0.5B: Qwen2-0.5B's shape (494M parameters, the head tied to the embeddings), the goal's
    "0.5b": ("Qwen2ForCausalLM", {
        "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "max_position_embeddings": 1024, "tie_word_embeddings": True,
    }),
}  # fmt: skip
DEFAULT_SIZE = "0.5b"
INT8, INT4 = ("int8", "[{type: quantize.dynamic}]"), ("int4", "[{type: quantize.int4}]")
# The builder's choice for a tied head: the head, and the lookup sharing it, at 4 bits (the
# default keeps them at 8): shown beside the goals, which are read on the default
INT4_HEAD4 = ("int4-head4", "[{type: quantize.int4, head_bits: 4}]")
# int8 dynamic is a point of comparison on the small model; on 0.5B it would add a whole run
RUNS = {"56m": (INT8, INT4, INT4_HEAD4), "0.5b": (INT4, INT4_HEAD4)}
PROMPT, NEW, ROUNDS = 64, 32, 5
INT4_OVER_FLOAT, INT4_SMALLER, PEAK_OVER_WEIGHTS = 2.5, 6.0, 3.0
QUICK = "batch_sizes: [1], threads: 1, min_runs: 5, min_seconds: 0, max_seconds: 2"
GENERATION = f"{{prompt_tokens: {PROMPT}, new_tokens: {NEW}, min_rounds: {ROUNDS}}}"


def write_folder(folder: Path, size: str) -> tuple[Path, int]:
    """The decoder folder of DECODERS[size] (save_pretrained, with a small tokenizer) and its
    float weight bytes (a tied head counted once)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    kind, settings = DECODERS[size]
    model_class = getattr(transformers, kind)
    model = model_class(model_class.config_class(**settings)).eval()
    model.save_pretrained(folder)
    words = {f"w{i}": i for i in range(1000)} | {"<unk>": 1000}
    core = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<unk>", eos_token="<unk>"
    ).save_pretrained(folder)
    return folder, sum(p.numel() * 4 for p in model.parameters())


# `python -c PEAK_WRAPPER PEAK_FILE ARGS...`: `compress ARGS` writing its peak resident memory
# (VmHWM: this program's own, not counting the parent it was started from) to PEAK_FILE.
PEAK_WRAPPER = """
import atexit, pathlib, runpy, sys
peak_file = sys.argv.pop(1)
def keep():
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            pathlib.Path(peak_file).write_text(line.split()[1])
atexit.register(keep)
runpy.run_module("compress_cli", run_name="__main__", alter_sys=True)
"""


def measured(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `command`; its result, seconds, and for `compress` commands (command[0] ==
    "compress") the peak resident memory of that process in MB (0 otherwise)."""
    env = {**os.environ, "COMPRESS_NO_CACHE": "1", "HF_HUB_OFFLINE": "1"}
    peak_file = cwd / "peak.kb"
    peak_file.unlink(missing_ok=True)
    if command[0] == "compress":
        command = [sys.executable, "-c", PEAK_WRAPPER, str(peak_file), *command[1:]]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    peak = int(peak_file.read_text()) / 1024 if peak_file.exists() else 0.0
    return done, seconds, peak


def compress_run(model: Path, passes: str, out: str, cwd: Path) -> tuple[dict, float, float]:
    config = cwd / f"{out}.yaml"
    config.write_text(
        f"version: 1\npasses: {passes}\nreport: {{{QUICK}, generation: {GENERATION}}}\n"
    )
    command = ["compress", "run", str(model), "-c", str(config)]
    done, seconds, peak = measured([*command, "-o", out, "--json"], cwd)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"compress run ({out}) failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout), seconds, peak


# The builder's own option for an 8-bit head (its default is 4 bits for every MatMul). With the
# head shared with the lookup (its default for a tied model) it writes a graph that does not load
# (0.18: "lm_head.MatMul.weight_Q8G32 is not ... an initializer"), so the table stays apart: a
# decode step reads the same bytes (the whole head, one row of the table).
BUILDER_HEAD8 = (
    "--extra_options", "matmul_mixed_precision=last_matmul:int8", "shared_embeddings=false",
)  # fmt: skip


def builder_int4(folder: Path, cwd: Path, head8: bool = False) -> Path | None:
    """The builder's int4 CPU model of `folder` (`head8`: its head at 8 bits, as compress's
    default keeps it), set to one thread; None where it fails."""
    target = cwd / ("genai-int4-head8" if head8 else "genai-int4")
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", "local", "-i",
        str(folder), "-o", str(target), "-p", "int4", "-e", "cpu", "-c", str(cwd / "cache"),
        *(BUILDER_HEAD8 if head8 else ()),
    ]  # fmt: skip
    done, _, _ = measured(command, cwd)
    config_file = target / "genai_config.json"
    if done.returncode or not config_file.exists():
        print(f"builder failed: {done.stderr[-800:]}")
        return None
    config = json.loads(config_file.read_text())
    options = config["model"]["decoder"]["session_options"]
    options |= {"intra_op_num_threads": 1, "inter_op_num_threads": 1}
    config_file.write_text(json.dumps(config, indent=2))
    return target


def genai_decode_ms(model, prompt: np.ndarray) -> list[float]:
    """Decode steps (ms) of onnxruntime-genai's greedy generator after `prompt`."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=PROMPT + NEW, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt.astype(np.int32))
    steps = []
    while not generator.is_done():
        began = time.perf_counter()
        generator.generate_next_token()
        steps.append((time.perf_counter() - began) * 1000)
    return steps[1:]  # the first token comes from the prefill, as in compress's loop


def versus_builder(ours: Path, theirs: Path) -> dict | None:
    """Decode ms per token of compress's int4 model and the builder's, in alternating rounds."""
    import onnxruntime_genai as og

    from compress.measure.decoder_feeds import session_inputs
    from compress.measure.generation import generate
    from compress.measure.latency import paired_speedup
    from compress.measure.runtime import open_session

    try:
        model = og.Model(str(theirs))
    except Exception as e:  # the builder wrote a model its own runtime cannot load
        print(f"the builder's {theirs.name} does not load: {e}")
        return None
    session = open_session(ours, 1)
    declared = session_inputs(session)
    prompt = np.random.default_rng(0).integers(0, 1000, (1, PROMPT)).astype(np.int64)
    generate(session, declared, prompt, 4), genai_decode_ms(model, prompt[0])  # warm-up
    rounds: dict[str, list[float]] = {"compress": [], "builder": []}
    for _ in range(ROUNDS):
        rounds["compress"].append(
            float(np.median(generate(session, declared, prompt, NEW).decode_ms))
        )
        rounds["builder"].append(float(np.median(genai_decode_ms(model, prompt[0]))))
    paired = paired_speedup(rounds["builder"], rounds["compress"])
    return {
        "compress_tokens_per_second": round(1000 / np.median(rounds["compress"]), 1),
        "builder_tokens_per_second": round(1000 / np.median(rounds["builder"]), 1),
        "compress_over_builder": round(paired.ratio, 3),
        "ci": paired.interval(),
        "builder_bytes": sum(p.stat().st_size for p in theirs.glob("model.onnx*")),
    }


def decoder_table(size: str = DEFAULT_SIZE) -> tuple[dict, list[tuple[str, bool]]]:
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        written = subprocess.run(
            [sys.executable, __file__, "write", str(work / "llama"), size],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        folder, weights = work / "llama", int(written.stdout.split()[-1])
        float_report, export_s, export_peak = compress_run(folder, "[]", "float", work)
        exported = work / "float" / "model.onnx"
        rows = {"float_export": {"seconds": round(export_s, 1), "peak_rss_mb": round(export_peak)}}
        for kind, passes in RUNS[size]:
            report, seconds, peak = compress_run(exported, passes, kind, work)
            base, final = (
                report["stages"][0]["generation"]["1"],
                report["stages"][-1]["generation"]["1"],
            )
            rows[kind] = {
                "seconds": round(seconds, 1), "peak_rss_mb": round(peak),
                "size_ratio": report["summary"]["size_ratio"],
                "float_tokens_per_second": base["tokens_per_second"],
                "tokens_per_second": final["tokens_per_second"],
                "decode_speedup": final["decode_vs_baseline"]["speedup"],
                "ci": final["decode_vs_baseline"]["ci"],
                "prefill_ms": [base["prefill_ms"], final["prefill_ms"]],
                "stage_peak_rss_mb": [base["peak_rss_mb"], final["peak_rss_mb"]],
            }  # fmt: skip
        # the goal's pair (each tool's default), then like for like: the same head bits
        built, built8 = builder_int4(folder, work), builder_int4(folder, work, head8=True)
        ours, ours4 = work / "int4" / "model.onnx", work / "int4-head4" / "model.onnx"
        rows["builder"] = versus_builder(ours, built) if built else None
        rows["builder_head8"] = versus_builder(ours, built8) if built8 else None
        rows["builder_head4"] = versus_builder(ours4, built) if built and ours4.exists() else None
        del float_report
    return rows, decoder_checks(rows, weights, size)


def decoder_checks(rows: dict, weights: int, size: str) -> list[tuple[str, bool]]:
    int4, int8, builder = rows["int4"], rows.get("int8"), rows["builder"]
    head4 = rows.get("int4-head4")
    export_peak = rows["float_export"]["peak_rss_mb"]
    peak = max(export_peak, *(row["peak_rss_mb"] for row in (int4, int8, head4) if row is not None))
    weights_mb = weights / 2**20
    kind = DECODERS[size][0].removesuffix("ForCausalLM")
    where = f"{kind}, {weights / 4e6:.0f}M parameters, batch 1, 1 thread"
    speed, ci = int4["decode_speedup"], int4["ci"]
    checks = [
        (
            f"int4 decode >= {INT4_OVER_FLOAT}x float tokens/s ({where}): {speed:.2f}x (95% CI "
            f"{ci[0]:.2f}-{ci[1]:.2f}; {int4['float_tokens_per_second']:.0f} -> "
            f"{int4['tokens_per_second']:.0f} tokens/s"
            + (f"; int8 dynamic {int8['decode_speedup']:.2f}x" if int8 else "")
            + (f"; head_bits 4: {head4['decode_speedup']:.2f}x" if head4 else "")
            + ")",
            speed >= INT4_OVER_FLOAT,
        ),
        (
            f"int4 >= {INT4_SMALLER}x smaller than float: {int4['size_ratio']:.2f}x"
            + (f" (int8 dynamic {int8['size_ratio']:.2f}x)" if int8 else "")
            + (f" (head_bits 4, as the builder: {head4['size_ratio']:.2f}x)" if head4 else ""),
            int4["size_ratio"] >= INT4_SMALLER,
        ),
        (
            f"peak memory of a run <= {PEAK_OVER_WEIGHTS}x the float weights: {peak:.0f} MB for "
            f"{weights_mb:.0f} MB of weights ({peak / weights_mb:.2f}x; export {export_peak} MB, "
            + (f"int8 {int8['peak_rss_mb']} MB, " if int8 else "")
            + f"int4 {int4['peak_rss_mb']} MB"
            + (f", head_bits 4 {head4['peak_rss_mb']} MB)" if head4 else ")"),
            peak <= PEAK_OVER_WEIGHTS * weights_mb,
        ),
    ]
    if builder is None:
        return [*checks, ("int4 decode >= the ORT GenAI builder's int4 (it did not run)", False)]
    pairs = (  # (row, compress's, the builder's)
        ("builder", "int4 (8-bit head)", "int4 model (its default: a 4-bit head)"),
        ("builder_head8", "int4 (8-bit head)", "int4 model with last_matmul:int8 (like for like)"),
        ("builder_head4", "int4 head_bits 4", "int4 model (like for like)"),
    )
    return [
        *checks,
        *(_versus(rows[row], ours, theirs) for row, ours, theirs in pairs if rows.get(row)),
    ]


def _versus(row: dict, ours: str, theirs: str) -> tuple[str, bool]:
    """The goal line of compress's `ours` against the builder's `theirs` (a versus_builder row)."""
    mine, its = row["compress_tokens_per_second"], row["builder_tokens_per_second"]
    return (
        f"{ours} decode >= the ORT GenAI builder's {theirs}, run by its own generator: "
        f"{mine:.0f} vs {its:.0f} tokens/s ({row['compress_over_builder']:.2f}x, 95% CI "
        f"{row['ci'][0]:.2f}-{row['ci'][1]:.2f}); its files {row['builder_bytes'] / 2**20:.0f} MB",
        row["compress_over_builder"] >= 1.0,
    )


def main(size: str = DEFAULT_SIZE) -> int:
    rows, checks = decoder_table(size)
    print(json.dumps(rows, indent=2))
    return print_goals(checks)


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        print(write_folder(Path(sys.argv[2]), sys.argv[3])[1])
        sys.exit(0)
    sys.exit(main(*sys.argv[1:2]))
