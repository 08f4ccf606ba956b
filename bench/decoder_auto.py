"""quantize.auto on the issue's 55M LLaMA-style decoder: does it choose in minutes and within
memory?

The model is bench/decoders.py's 56M config (DECODERS["56m"]: hidden 512, 8 layers, vocabulary
32000, random weights) with a word-level tokenizer of 32000 words learnt from the standard
library's .py files here, so Python's own text tokenizes into real ids; one held-out file
(HELD_OUT, never learnt from) is the running text that data.calibration and data.eval read
(windows of 128 tokens), as `compress init --data` writes them. In processes of their own, as a
user types them: `compress run FOLDER` with no pass (the float export with its key/value cache),
then `compress run model.onnx` with `quantize.auto`, judged by perplexity within a 3% rise,
generation timed (64-token prompt, 32 new tokens, batch 1, 1 thread). The second process's wall
time and peak resident memory (bench/decoders.py's PEAK_WRAPPER) are measured, and the pass's
own seconds read from its details.

Goals (issue 29): quantize.auto under 3 minutes and under 4 GB peak on this model (713 s and
10 GB before it judged decoders streaming). `python bench/run.py decoder-auto` runs this part
alone. Nothing is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decoders import DECODERS, GENERATION, QUICK, measured  # noqa: E402
from bench.goals import print_goals  # noqa: E402

HELD_OUT = "textwrap.py"  # ~20 KB of the standard library: 55 windows of 128 tokens
MAX_SECONDS, MAX_PEAK_MB = 180.0, 4096.0
DECODER = DECODERS["56m"][1]  # the 55M LLaMA-style config


def write_folder(folder: Path, held_out: Path) -> None:
    """The decoder folder (save_pretrained) with a word-level tokenizer learnt from the standard
    library's top-level .py files but HELD_OUT, which is written to `held_out`."""
    import sysconfig

    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(stdlib.glob("*.py"))
        if p.name != HELD_OUT
    ]
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=DECODER["vocab_size"], special_tokens=["<unk>"])
    core.train_from_iterator(texts, trainer)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**DECODER)).eval()
    model.save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<unk>", eos_token="<unk>"
    ).save_pretrained(folder)
    held_out.write_text((stdlib / HELD_OUT).read_text(encoding="utf-8"))


def compress_json(command: list[str], cwd: Path, what: str) -> tuple[dict, float, float]:
    """`compress COMMAND --json` in a process of its own: its report, seconds, peak RSS (MB)."""
    done, seconds, peak = measured(["compress", *command, "--json"], cwd)
    if done.returncode not in (0, 3):  # 3: a gate failed, the report is written
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout), seconds, peak


def decoder_auto_table() -> tuple[dict, list[tuple[str, bool]]]:
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        subprocess.run(
            [sys.executable, __file__, "write", str(work / "llama"), str(work / "held-out.txt")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        (work / "float.yaml").write_text(  # only the export: timed as briefly as it can be
            "version: 1\npasses: []\nreport: {batch_sizes: [1], min_runs: 5, min_seconds: 0, "
            "max_seconds: 0, warmup_runs: 1}\n"
        )
        compress_json(["run", "llama", "-c", "float.yaml", "-o", "float"], work, "the export")
        (work / "auto.yaml").write_text(
            "version: 1\n"
            "model: {tokenizer: llama}  # model.onnx carries none: the folder's\n"
            "data:\n"
            "  calibration: {path: held-out.txt, max_length: 128}\n"
            "  eval: {path: held-out.txt, max_length: 128}\n"
            "passes: [{type: quantize.auto}]\n"
            "gates: {max_accuracy_drop: 0.03}  # perplexity may rise by 3%\n"
            f"report: {{{QUICK}, metric: perplexity, generation: {GENERATION}}}\n"
        )
        command = ["run", "float/model.onnx", "-c", "auto.yaml", "-o", "auto"]
        report, seconds, peak = compress_json(command, work, "quantize.auto")
    base, final = report["stages"][0], report["stages"][-1]
    details = final["details"]
    generation = final.get("generation", {}).get("1", {})
    rows = {
        "run_seconds": round(seconds, 1),
        "pass_seconds": details["seconds"],
        "peak_rss_mb": round(peak),
        "chosen": details.get("chosen"),
        "reason": details["reason"],
        "timing": details["timing"],
        "candidates": [
            {k: c.get(k) for k in ("name", "seconds", "p50_ms", "drop", "verdict")}
            for c in details["candidates"]
        ],
        "perplexity": [base["metric"]["value"], final["metric"]["value"]],
        "tokens": final["metric"].get("tokens"),
        "size_ratio": report["summary"]["size_ratio"],
        "decode_speedup": (generation.get("decode_vs_baseline") or {}).get("speedup"),
    }
    return rows, decoder_auto_checks(rows)


def decoder_auto_checks(rows: dict) -> list[tuple[str, bool]]:
    where = (
        f"the 55M LLaMA-style decoder, perplexity on {rows['tokens']} tokens of {HELD_OUT}, "
        "decode steps timed, 1 thread"
    )
    chose = rows["chosen"] or "the input (nothing chosen)"
    speed = rows["decode_speedup"]
    kept = f"kept {chose}, {rows['size_ratio']:.2f}x smaller" + (
        f", decoding {speed:.2f}x float" if speed else ""
    )
    return [
        (
            f"quantize.auto under {MAX_SECONDS:.0f} s ({where}): the pass "
            f"{rows['pass_seconds']:.0f} s, the whole run {rows['run_seconds']:.0f} s; {kept}",
            rows["pass_seconds"] < MAX_SECONDS,
        ),
        (
            f"quantize.auto's run peaks under {MAX_PEAK_MB / 1024:.0f} GB of resident memory: "
            f"{rows['peak_rss_mb']} MB",
            rows["peak_rss_mb"] < MAX_PEAK_MB,
        ),
    ]


def main() -> int:
    rows, checks = decoder_auto_table()
    print(json.dumps(rows, indent=2))
    return print_goals(checks)


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write_folder(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
