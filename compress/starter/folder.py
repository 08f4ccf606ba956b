"""`compress init FOLDER`: a starter config for a model folder, from what the folder says.

The folder is loaded as a run loads it (offline, no code of its own without --trust-remote-code)
and read: its architecture, task, sizes and tokenizer become comments, and the task decides the
recipe. An encoder or a sentence embedder gets quantize.auto judged by cosine similarity to the
float model; a classifier gets quantize.auto judged by top-1 agreement with it (top-1 with
labels); a decoder gets 4-bit weights and its generation timed (compress.starter.decoder).
quantize.auto needs data.eval: without --data the starter uses dynamic int8, which runs on
made-up token ids.
With `--data` a text file (.txt, .jsonl, .csv) becomes text data tokenized by the folder's
tokenizer, its max_length chosen so that 95% of the examples fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import DataError
from compress.starter.data import (
    CALIBRATION_LIMIT,
    LABEL_NAMES,
    StarterData,
    flow,
    relative_to,
    starter_data,
)
from compress.starter.decoder import decoder_passes, decoder_report, decoder_text, text_data
from compress.starter.makeup import ModelMakeup, weights_makeup

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")
TEXT_FIELDS = ("text", "sentence", "sentence1", "content", "question", "review", "document")
PAIR_FIELDS = ("text_pair", "sentence2", "context", "hypothesis")
COVERED = 0.95  # the share of the examples that max_length holds whole


@dataclass(frozen=True)
class FolderFacts:
    """What `compress init` read off a model folder."""

    name: str
    task: str
    role: str  # encoder, classifier or decoder (compress.models.hf_tasks)
    described: str  # one line: the architecture, task and sizes
    input_names: list[str]
    inputs: list[dict[str, Any]]  # made-up inputs as model.inputs entries (used without data)
    makeup: ModelMakeup
    tokenizer: Any  # LoadedTokenizer, or None when the folder has none
    positions: int | None = None  # a decoder's longest sequence, where its config says

    @property
    def text(self) -> bool:
        return "input_ids" in self.input_names


def folder_facts(path: Path, trust_remote_code: bool) -> FolderFacts:
    from compress.config import ModelSection
    from compress.models import load_model
    from compress.models.hf_tasks import task_named

    loaded = load_model(path, ModelSection(), path.parent, trust_remote_code=trust_remote_code)
    module, record = loaded.model, loaded.folder
    if record is None:  # load_model gives a model folder its record
        raise DataError(f"{path} is not a model folder")
    tokenizer = None
    if "input_ids" in module.input_names:
        from compress.models.hf_tokenizer import load_tokenizer

        tokenizer = load_tokenizer(path, trust_remote_code, str(path))
    config = module.model.config
    sizes = [
        text.format(value)
        for text, key in (("{} layers", "num_hidden_layers"), ("hidden {}", "hidden_size"))
        + (("{} heads", "num_attention_heads"), ("vocabulary {:,}", "vocab_size"))
        if isinstance(value := getattr(config, key, None), int)
    ]
    architecture = ", ".join(record.architectures) or record.model_type or "a transformers model"
    pooling = f" ({record.pooling})" if record.pooling else ""
    described = f"{architecture}, task {record.task}{pooling} from {record.task_from}"
    described += f"; {', '.join(sizes)}" if sizes else ""
    if tokenizer is not None:
        described += f"; tokenizer {tokenizer.class_name}"
    return FolderFacts(
        name=path.name,
        task=record.task,
        role=task_named(record.task).role,
        described=described,
        input_names=list(module.input_names),
        inputs=[spec.model_dump() for spec in module.input_specs()],
        makeup=weights_makeup(module.state_dict()),
        tokenizer=tokenizer,
        positions=layout.max_positions if (layout := getattr(module, "layout", None)) else None,
    )


def folder_data(facts: FolderFacts, data_path: Path, config_dir: Path) -> StarterData:
    """`--data` for a folder: a text file as text data for a text model, else as for any model."""
    if facts.role == "decoder":
        return decoder_text(data_path, config_dir, facts.tokenizer, facts.positions)
    if facts.text and data_path.suffix.lower() in TEXT_SUFFIXES:
        return _text_source(facts, data_path, config_dir)
    return starter_data(data_path, config_dir, facts.input_names, facts.inputs)


def _text_source(facts: FolderFacts, path: Path, config_dir: Path) -> StarterData:
    from compress.config import DataSource
    from compress.data import text

    if facts.tokenizer is None:
        raise DataError(
            f"--data {path}: text is tokenized with the model's tokenizer, and {facts.name} has "
            "none; save the tokenizer into the folder (tokenizer.save_pretrained)"
        )
    fields = _fields(path)
    source = DataSource(path=path, **fields)
    examples, labels = text.read(source, "--data", path)
    lengths = [
        len(ids) for ids in facts.tokenizer.tokenizer(examples.texts, examples.pairs)["input_ids"]
    ]
    longest = facts.tokenizer.default_length or facts.tokenizer.max_length or 512
    typical = int(np.quantile(lengths, COVERED))
    max_length = min(longest, max(8, 2 ** math.ceil(math.log2(max(typical, 1)))))
    written = {"path": relative_to(path, config_dir), **fields, "max_length": max_length}
    return StarterData(written | {"padding": "max_length"}, labelled=labels is not None)


def _fields(path: Path) -> dict[str, str]:
    """text / text_pair / labels of a .jsonl (its first object's keys) or a .csv (its header),
    found by their usual names; a .txt has none."""
    import csv
    import json

    suffix = path.suffix.lower()
    if suffix == ".txt":
        return {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if suffix == ".jsonl":
                first = next((line for line in handle if line.strip()), "{}")
                keys = list(json.loads(first)) if first.strip().startswith("{") else []
            else:
                keys = [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise DataError(f"--data {path}: cannot read its fields ({e})") from None
    found = {
        key: next((k for k in keys if k.lower() in names), None)
        for key, names in (("text", TEXT_FIELDS), ("text_pair", PAIR_FIELDS))
        + (("labels", LABEL_NAMES),)
    }
    if found["text"] is None:
        raise DataError(
            f"--data {path}: no field holds the text (looked for {', '.join(TEXT_FIELDS)}; it "
            f"has {', '.join(keys) or 'none'}); name one `text`"
        )
    return {key: name for key, name in found.items() if name}


def folder_starter(facts: FolderFacts, data: StarterData | None) -> list[str]:
    """The YAML lines after `version: 1`."""
    lines = [
        f"# read from the folder: {facts.described}",
        f"# model.task: {facts.task} (set it to export another head)",
    ]
    if data is None:
        lines += ["model:", "  # made-up inputs (used while no data is set):", "  inputs:"]
        lines += [f"    - {flow(spec)}" for spec in facts.inputs]
        lines.append(
            "# --data FILE.txt gives running text judged by perplexity"
            if facts.role == "decoder"
            else "# --data FILE (.txt, .jsonl or .csv) gives real text and quantize.auto"
        )
    elif facts.role == "decoder":
        lines += ["model: {}", *text_data(data)]
    else:
        lines.append("model: {}")
        unlabelled = {k: v for k, v in data.source.items() if k != "labels"}
        lines += [
            "data:  # from `compress init --data`, tokenized with the folder's tokenizer",
            f"  calibration: {flow(unlabelled | {'limit': CALIBRATION_LIMIT})}",
            f"  eval: {flow(data.source)}",
        ]
    if facts.role == "decoder":
        passes = ["passes:", f"  # read from the model: {facts.makeup.describe()}"]
        return lines + passes + decoder_passes() + decoder_report(data, facts.positions)
    return lines + _passes(facts, data) + _report(facts, data)


def _passes(facts: FolderFacts, data: StarterData | None) -> list[str]:
    lines = ["passes:", f"  # read from the model: {facts.makeup.describe()}"]
    if data is None:
        lines += ["  # int8 weights, activations quantized at run time (no data.eval to judge)"]
        lines += ["  - type: quantize.dynamic"]
    else:
        lines += [
            "  # tries static and dynamic int8 and keeps the fastest within the accuracy budget",
            "  - type: quantize.auto",
        ]
    return lines + [
        "  # structural pruning (heads and feed-forward widths; list it before the ONNX passes):",
        "  # - type: prune.channels",
        "  #   amount: 0.3",
    ]


def _report(facts: FolderFacts, data: StarterData | None) -> list[str]:
    if facts.role == "classifier":
        metric = "top1  # the labels in data.eval" if data and data.labelled else "agreement"
    else:
        metric = "cosine  # similarity to the float model's outputs"
    budget = 0.01 if facts.role == "classifier" else 0.005
    gate = f"  max_accuracy_drop: {budget}  # quantize.auto keeps its choice within it"
    return [
        "export: {opset: 18, dynamic_batch: true}",
        "report:",
        "  batch_sizes: [8, 1]  # the first is the one speedup and gates use",
        "  threads: 1",
        f"  metric: {metric}",
        "gates:  # a gate that fails makes the run exit 3",
        "  min_size_ratio: 3  # int8 weights are 4x smaller; float parts stay",
        gate if data is not None else "  # " + gate.strip(),
    ]
