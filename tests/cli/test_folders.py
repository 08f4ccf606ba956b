"""Model folders through the commands: `compress init FOLDER --data` writes a config that
validates and fits, `compress run FOLDER` prunes, trains and quantizes the model transformers
builds and exports it with dynamic batch and token axes, the report says what the folder and
the tokenizer were, and bad folders are one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from compress.batch.discover import find_models
from compress.cache.keys import stage_keys
from compress.models.run_files import run_inputs
from compress.passes.recipe import load_recipe
from tests.helpers.cli import assert_refused, invoke
from tests.helpers.hf_folders import sentences

QUICK = (
    "report: {batch_sizes: [4], metric: %s, min_runs: 5, min_seconds: 0, "
    "max_seconds: 0.2, warmup_runs: 1}\n"
)


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def labelled(folder, count: int = 24) -> None:
    rows = [{"sentence": s, "label": i % 3} for i, s in enumerate(sentences(count))]
    (folder / "d.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_init_writes_a_config_that_fits_the_folder(hf_folders, tmp_path):
    labelled(tmp_path)
    out = tmp_path / "classifier.yaml"
    result = invoke("init", hf_folders["classifier"], "--data", tmp_path / "d.jsonl", "-o", out)
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load(out.read_text())
    assert config["passes"] == [{"type": "quantize.auto"}]
    assert config["report"]["metric"] == "top1"  # a classifier with labels
    assert config["data"]["eval"] | {"path": "d.jsonl", "text": "sentence", "labels": "label"}
    assert config["data"]["eval"]["max_length"] == 16  # 95% of the examples fit: 2^k tokens
    assert "BertForSequenceClassification, task text-classification" in out.read_text()
    assert invoke("validate", out).exit_code == 0
    (tmp_path / "s.txt").write_text("\n".join(sentences(8)) + "\n")
    embedder = invoke("init", hf_folders["sentence"], "--data", tmp_path / "s.txt")
    assert embedder.exit_code == 0, embedder.stderr
    written = yaml.safe_load(embedder.stdout)
    assert written["report"]["metric"].startswith("cosine")
    assert written["gates"]["max_accuracy_drop"] == 0.005
    decoder = yaml.safe_load(invoke("init", hf_folders["gpt2"]).stdout)
    assert decoder["passes"][0]["type"] == "quantize.int4"  # tests/cli/test_init_decoder.py
    assert [i["name"] for i in decoder["model"]["inputs"]] == ["input_ids", "attention_mask"]


def test_run_trains_prunes_and_quantizes_a_classifier_folder(hf_folders, tmp_path):
    """prune.channels (with a fine-tune), distill and int8 on the model transformers builds;
    the ONNX file takes any batch and length; the report says what the folder and tokenizer
    were."""
    labelled(tmp_path)
    data = "{path: d.jsonl, text: sentence, labels: label, max_length: 16, padding: max_length}"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"version: 1\ndata:\n  train: {data}\n  eval: {data}\n  calibration: {data}\npasses:\n"
        "  - {type: prune.channels, amount: 0.3, finetune_epochs: 1}\n"
        "  - {type: distill, epochs: 1, batch_size: 8}\n  - {type: quantize.dynamic}\n"
        + QUICK
        % "top1"
    )
    result = invoke("run", hf_folders["classifier"], "-c", config, "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    baseline, pruned, distilled, _ = report["stages"]
    assert pruned["params"] < 0.8 * baseline["params"] and "attention heads" in json.dumps(pruned)
    assert "fine-tuned 1 epoch" in pruned["details"]["reason"]
    assert distilled["details"]["epochs_run"] == 1
    assert report["outputs"] == ["logits"]
    provenance = report["provenance"]
    assert provenance["source_format"] == "hf_folder"
    assert provenance["model_folder"]["task"] == "text-classification"
    assert {f["path"] for f in provenance["model_folder"]["files"]} >= {"config.json"}
    assert provenance["tokenizer"]["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert [dims(i) for i in model.graph.input] == [["batch", "sequence"]] * 3
    assert dims(model.graph.output[0]) == ["batch", 3]
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    ids = np.full((3, 7), 9, dtype=np.int64)  # another batch and length than the data's
    feeds = {"input_ids": ids, "token_type_ids": ids * 0, "attention_mask": ids * 0 + 1}
    assert session.run(None, feeds)[0].shape == (3, 3)


def test_pruning_a_base_model_keeps_its_output_shape(hf_folders, tmp_path):
    """last_hidden_state comes straight from a LayerNorm: its width is the model's output and
    stays, while heads and feed-forward width go (and the unused pooler still runs)."""
    from compress.job.preflight import prepare
    from compress.passes.base import PassInput
    from compress.torch.export import named_torch_outputs

    (tmp_path / "s.txt").write_text("\n".join(sentences(8)) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: 1\ndata:\n  eval: {path: s.txt}\npasses: [{type: prune.channels, amount: 0.5}]\n"
        + QUICK % "cosine"
    )
    job = prepare(hf_folders["base"], config, False, lambda message: None)
    try:
        step = job.passes[0]
        given = PassInput(module=job.module, prepared=job.prepared.get(step.key))
        result = step.apply(given, job.context)
        samples = job.context.samples(4)
        output = named_torch_outputs(result.module, samples)["last_hidden_state"]
    finally:
        shutil.rmtree(job.context.workdir, ignore_errors=True)
    assert output.shape == (4, samples[0].shape[1], 32)
    assert "removed 4 of 8 attention heads" in result.details.reason


def test_the_stage_key_and_the_overwrite_guard_cover_the_folders_files(hf_folders, tmp_path):
    folder = tmp_path / "base"
    shutil.copytree(hf_folders["base"], folder)
    (tmp_path / "s.txt").write_text("w1 w2\n")
    config_path = tmp_path / "c.yaml"
    config_path.write_text("version: 1\ndata:\n  eval: {path: s.txt}\n" + QUICK % "cosine")
    config = load_recipe(config_path)
    labels = {item.label for item in run_inputs(folder, config)}
    assert {"the model (config.json)", "the model (tokenizer.json)"} <= labels
    before = stage_keys(folder, config, [], [])
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text() + " ")
    assert stage_keys(folder, config, [], []) != before  # the tokenizer makes the data
    junit = folder / "config.json"
    result = invoke("run", folder, "-c", config_path, "-o", tmp_path / "out", "--junit", junit)
    assert_refused(result, tmp_path / "out", "is the model (config.json)")


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        ("empty folder", ["is a folder without config.json", "save_pretrained"]),
        ("auto_map", ["asks for code from the folder", "--trust-remote-code"]),
        ("fifo", ["is a named pipe (FIFO), not a model file or a model folder"]),
    ],
)
def test_bad_folders_are_refused_in_one_line(hf_folders, tmp_path, make, needles):
    model = tmp_path / "model"
    if make == "empty folder":
        model.mkdir()
    elif make == "auto_map":
        shutil.copytree(hf_folders["base"], model)
        config = json.loads((model / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "modeling.Evil"}
        (model / "config.json").write_text(json.dumps(config))
    else:
        os.mkfifo(model)
    (tmp_path / "c.yaml").write_text("version: 1\n")
    for command in (("run", model, "-c", tmp_path / "c.yaml", "-o", tmp_path / "out"),):
        assert_refused(invoke(*command), tmp_path / "out", *needles)
    assert_refused(invoke("init", model), tmp_path / "out", *needles)


def test_batch_takes_a_folder_holding_config_json_as_one_model(hf_folders, tmp_path):
    shutil.copytree(hf_folders["base"], tmp_path / "models" / "encoder")
    shutil.copytree(hf_folders["sentence"], tmp_path / "models" / "nested" / "embedder")
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    broken = tmp_path / "models" / "broken"
    shutil.copytree(hf_folders["base"], broken)
    (broken / "model.safetensors").unlink()
    found = {entry.relative: entry.problem for entry in find_models(tmp_path / "models", None)}
    assert set(found) == {"encoder", "nested/embedder", "broken"}  # not the files inside them
    assert found["encoder"] is None and "has no PyTorch weights" in found["broken"]
