"""`compress init` on a decoder (a folder, or a .pt2 with its cache): 4-bit weights judged by
perplexity, generation timed.

A decoder's cost is generation, where reading the weights sets the speed, so the starter
proposes quantize.int4 (MatMulNBits) and times a greedy generation over the key/value cache
(report.generation: a prompt, then new tokens, within the model's positions). With `--data` a
text file becomes running text in windows (compress.data.text_windows) for calibration and for
data.eval, judged by perplexity with a budget of a 3% rise. A .pt2 holds no tokenizer: text
given to --data is read with the one `--tokenizer` names (written to model.tokenizer), and
refused without it; without --data its starter says how to add the text (`program_text_note`).
"""

from __future__ import annotations

from pathlib import Path

from compress.config import GenerationSection
from compress.errors import DataError
from compress.starter.data import CALIBRATION_LIMIT, StarterData, flow, relative_to

WINDOW = 128  # tokens per window of the eval text, when the model has that many positions
PERPLEXITY_BUDGET = 0.03  # a 3% rise


def decoder_text(path: Path, config_dir: Path, tokenizer, positions: int | None) -> StarterData:
    """--data for a decoder: the file as running text (one window length, fit to the model)."""
    if path.suffix.lower() != ".txt":
        raise DataError(
            f"--data {path}: a decoder reads running text; give a .txt file (its lines are "
            "joined and cut into windows)"
        )
    if tokenizer is None:
        raise DataError(
            f"--data {path}: text is tokenized with the model's tokenizer, and the folder has "
            "none; save the tokenizer into the folder (tokenizer.save_pretrained)"
        )
    longest = min(n for n in (positions, tokenizer.max_length, WINDOW) if n)
    return StarterData({"path": relative_to(path, config_dir), "max_length": longest}, False)


def program_decoder_text(
    path: Path, config_dir: Path, tokenizer_dir: Path, positions: int | None, trust: bool
) -> StarterData:
    """--data text for a .pt2 decoder, read with the tokenizer saved in `tokenizer_dir`."""
    from compress.models.hf_tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir, trust, "--tokenizer")
    return decoder_text(path, config_dir, tokenizer, positions)


def text_data(data: StarterData) -> list[str]:
    """The data section of a decoder's starter from --data text."""
    return [
        "data:  # from `compress init --data`: one running text in windows of max_length",
        f"  calibration: {flow(data.source | {'limit': CALIBRATION_LIMIT})}",
        f"  eval: {flow(data.source)}  # windows overlap by half (data.eval.stride)",
    ]


def generation(positions: int | None) -> str:
    """report.generation's flow mapping: its defaults, within the model's positions."""
    fitted = GenerationSection.within(positions)
    return (
        f"{{prompt_tokens: {fitted.prompt_tokens}, new_tokens: {fitted.new_tokens}, "
        "batch_sizes: [1]}"
    )


def decoder_passes() -> list[str]:
    return [
        "  # 4-bit weights (MatMulNBits): a decode step reads every weight, so fewer bytes "
        "run faster",
        "  - type: quantize.int4",
        "    block_size: 32",
        "  # or `- type: quantize.auto` (needs data.eval: --data): it also weighs 8-bit weights "
        "and dynamic int8 on decode steps and keeps the fastest within the budget",
    ]


def decoder_report(
    data: StarterData | None, positions: int | None, needs: str = "--data", metric: str = ""
) -> list[str]:
    """export, report and gates; `needs`: what the commented perplexity budget needs; `metric`:
    report.metric's line where the data is not text (token ids)."""
    budget = f"  max_accuracy_drop: {PERPLEXITY_BUDGET}  # perplexity may rise by 3%"
    lines = [
        "export: {opset: 18, dynamic_batch: true}",
        "report:",
        "  batch_sizes: [1]  # a prefill of data.eval's windows (or the made-up inputs)",
        "  threads: 1",
        f"  generation: {generation(positions)}  # what a user waits for",
    ]
    if data is not None:
        lines.append("  metric: perplexity  # of data.eval's text; a budget is its relative rise")
    elif metric:
        lines.append(f"  metric: {metric}")
    return lines + [
        "gates:  # a gate that fails makes the run exit 3",
        "  min_size_ratio: 4  # 4-bit weights are ~6x smaller; embeddings and norms are not",
        budget if data is not None else "  # " + budget.strip() + f" (needs {needs})",
        "  # min_tokens_per_second: 20  # decode speed at batch 1, on the machine that runs it",
    ]


def program_text(path: Path, name: str) -> DataError:
    """--data text for a .pt2 decoder given without --tokenizer: it holds none to read it with."""
    return DataError(
        f"--data {path}: {name} holds no tokenizer to read text with; add --tokenizer FOLDER "
        "(where the tokenizer was saved), or give token ids in an .npz (input_ids, "
        "attention_mask)"
    )


def program_text_note(positions: int | None) -> list[str]:
    """The data section of a .pt2 decoder's starter, without --data: how to judge it."""
    longest = min(positions or WINDOW, WINDOW)
    return [
        "# Perplexity on running text judges a decoder (docs/pages/decoders.md); a .pt2 holds no",
        "# tokenizer, so name the folder it was saved to, and the text (a .txt, relative to",
        "# this file), then set report.metric: perplexity and gates.max_accuracy_drop (or run",
        "# compress init again with --data TEXT.txt --tokenizer FOLDER):",
        "# model: {tokenizer: my-tokenizer}",
        "# data:",
        f"#   eval: {{path: text.txt, max_length: {longest}}}",
    ]
