"""A folder written by save_pretrained is a model: built with transformers from the folder alone,
its task and outputs taken from the folder (or model.task), its inputs named as its tokenizer
names them; a folder that is broken, asks for its own code or lacks what the model needs is one
ModelLoadError naming the problem."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.config import ModelSection
from compress.errors import ModelLoadError
from compress.models import detect_format, load_model
from compress.torch.export import named_torch_outputs
from compress.torch.runnable import runnable
from tests.helpers.hf_folders import token_arrays

TOKENS = token_arrays(4)


def load(folder: Path, task: str | None = None, **options):
    return load_model(folder, ModelSection(task=task), folder.parent, **options)


def outputs(loaded) -> dict[str, np.ndarray]:
    arrays = [TOKENS[name] for name in loaded.model.input_names]
    return named_torch_outputs(runnable(loaded), arrays)


@pytest.mark.parametrize(
    ("name", "task", "inputs", "shapes"),
    [
        ("classifier", "text-classification", 3, {"logits": (4, 3)}),
        ("base", "feature-extraction", 3, {"last_hidden_state": (4, 12, 32)}),
        ("sharded", "feature-extraction", 3, {"last_hidden_state": (4, 12, 32)}),
        (
            "gpt2",
            "text-generation",
            2,  # and the cache it wrote: 2 layers, 4 heads of 8
            {"logits": (4, 12, 131)}
            | {f"present.{i}.{kv}": (4, 4, 12, 8) for i in (0, 1) for kv in ("key", "value")},
        ),  # fmt: skip
        ("sentence", "sentence-embedding", 3, {"sentence_embedding": (4, 32)}),
    ],
)
def test_folders_load_with_their_task(hf_folders, name, task, inputs, shapes):
    loaded = load(hf_folders[name])
    assert loaded.format == "hf_folder" and detect_format(hf_folders[name]) == "hf_folder"
    assert loaded.folder.task == task
    assert len(loaded.model.input_names) == inputs  # the tokenizer's, that the model takes
    assert {k: v.shape for k, v in outputs(loaded).items()} == shapes
    assert isinstance(loaded.model, torch.nn.Module)  # torch passes get real modules


def test_the_record_lists_every_file_the_load_read(hf_folders):
    loaded = load(hf_folders["sharded"])
    names = [f.path for f in loaded.folder.files]
    shards = [n for n in names if n.startswith("model-0")]
    assert len(shards) >= 2 and "model.safetensors.index.json" in names
    assert {"config.json", "tokenizer.json"} <= set(names)
    assert all(len(f.sha256) == 64 and f.bytes > 0 for f in loaded.folder.files)
    assert loaded.folder.architectures == ["BertModel"] and loaded.folder.transformers_version
    again = load(hf_folders["sharded"])
    assert again.sha256 == loaded.sha256  # one digest of the files, stable


def test_sentence_embedding_is_the_normalized_mean_of_the_tokens(hf_folders):
    """As sentence-transformers computes it (mean over unmasked tokens, then L2 norm)."""
    tokens = outputs(load(hf_folders["base"]))["last_hidden_state"]
    embedding = outputs(load(hf_folders["sentence"]))["sentence_embedding"]
    mask = TOKENS["attention_mask"][..., None].astype(np.float32)
    mean = (tokens * mask).sum(1) / mask.sum(1)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(embedding, expected, rtol=1e-5, atol=1e-6)


def test_model_task_overrides_the_folder(hf_folders):
    loaded = load(hf_folders["classifier"], task="feature-extraction")
    assert list(outputs(loaded)) == ["last_hidden_state"]  # its head's weights dropped, by choice
    assert loaded.folder.task_from == "model.task"
    with pytest.raises(ModelLoadError, match="needs a sentence-transformers folder"):
        load(hf_folders["base"], task="sentence-embedding")


def test_inputs_follow_the_data(hf_folders):
    loaded = load(hf_folders["base"], inputs=["attention_mask", "input_ids"])
    assert loaded.model.input_names == ["attention_mask", "input_ids"]
    with pytest.raises(ModelLoadError, match="takes no input 'pixel_values'"):
        load(hf_folders["base"], inputs=["input_ids", "pixel_values"])


def broken(hf_folders, tmp_path, name: str = "classifier") -> Path:
    folder = tmp_path / name
    shutil.copytree(hf_folders[name], folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    content = json.loads(path.read_text())
    path.write_text(json.dumps(content | changes))


def no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def adapter(folder: Path) -> None:
    no_config(folder)
    (folder / "adapter_config.json").write_text("{}")


def no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def config_of_another_model(folder: Path) -> None:  # the head's weights are not in the folder
    edit_json(folder / "config.json", architectures=["BertForMaskedLM"])


def wrong_shapes(folder: Path) -> None:
    labels = {str(i): f"L{i}" for i in range(5)}
    edit_json(
        folder / "config.json", id2label=labels, label2id={v: int(k) for k, v in labels.items()}
    )


def unknown_architecture(folder: Path) -> None:
    edit_json(folder / "config.json", architectures=["FrobnicatorForMagic"])


def unknown_model_type(folder: Path) -> None:
    edit_json(folder / "config.json", model_type="frobnicator")


def remote_code(folder: Path) -> None:
    edit_json(folder / "config.json", auto_map={"AutoModel": "modeling_evil.EvilModel"})


def tokenizer_remote_code(folder: Path) -> None:
    edit_json(folder / "tokenizer_config.json", auto_map={"AutoTokenizer": ["evil.Tok", None]})


def config_not_json(folder: Path) -> None:
    (folder / "config.json").write_text("{architectures: [")


def config_fifo(folder: Path) -> None:
    no_config(folder)
    os.mkfifo(folder / "config.json")


def truncated_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])


def missing_shard(folder: Path) -> None:
    next(folder.glob("model-00002-*.safetensors")).unlink()


def shard_outside(folder: Path) -> None:
    index = folder / "model.safetensors.index.json"
    content = json.loads(index.read_text())
    first = next(iter(content["weight_map"]))
    content["weight_map"][first] = "../evil.safetensors"
    index.write_text(json.dumps(content))


def dense_module(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))


BROKEN = [
    ("classifier", no_config, ["without config.json", "save_pretrained"]),
    ("classifier", adapter, ["an adapter", "merge_and_unload"]),
    ("classifier", no_weights, ["has no PyTorch weights", "model.safetensors"]),
    ("base", config_of_another_model, ["do not fit config.json", "missing: cls.predictions"]),
    ("classifier", wrong_shapes, ["of the wrong shape: classifier.bias, classifier.weight"]),
    ("classifier", unknown_architecture, ["FrobnicatorForMagic is not one transformers"]),
    ("classifier", unknown_model_type, ["model_type 'frobnicator' is not one transformers"]),
    ("classifier", remote_code, ["modeling_evil.EvilModel", "--trust-remote-code"]),
    ("classifier", tokenizer_remote_code, ["tokenizer_config.json asks for code", "evil.Tok"]),
    ("classifier", config_not_json, ["config.json", "is not valid JSON"]),
    ("classifier", config_fifo, ["config.json", "is a named pipe (FIFO), not a file"]),
    ("classifier", truncated_weights, ["model.safetensors: not a valid safetensors file"]),
    ("sharded", missing_shard, ["names the shard model-00002", "which is missing"]),
    ("sharded", shard_outside, ["'../evil.safetensors' is not a file name inside the folder"]),
    ("sentence", dense_module, ["sentence_transformers.models.Dense", "does not compute"]),
]


@pytest.mark.parametrize(
    ("name", "breaks", "needles"), BROKEN, ids=[b.__name__ for _, b, _ in BROKEN]
)
def test_broken_folders_are_one_line(hf_folders, tmp_path, name, breaks, needles):
    folder = broken(hf_folders, tmp_path, name)
    breaks(folder)
    with pytest.raises(ModelLoadError) as refused:
        load(folder)
    message = str(refused.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_without_transformers_a_folder_says_how_to_install_it(hf_folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelLoadError, match=r"pip install 'compress-onnx\[hf\]'"):
        load(hf_folders["base"])


def test_remote_code_runs_only_with_the_flag(hf_folders, tmp_path, monkeypatch):
    """A folder whose config names its own classes (auto_map) loads them with
    trust_remote_code, and only then."""
    folder = broken(hf_folders, tmp_path, "base")
    (folder / "custom_bert.py").write_text(
        "from transformers import BertConfig, BertModel\n"
        "class CustomConfig(BertConfig):\n    model_type = 'custom-bert'\n"
        "class CustomModel(BertModel):\n    config_class = CustomConfig\n"
    )
    edit_json(
        folder / "config.json",
        model_type="custom-bert",
        architectures=["CustomModel"],
        auto_map={"AutoConfig": "custom_bert.CustomConfig", "AutoModel": "custom_bert.CustomModel"},
    )
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load(folder)
    loaded = load(folder, trust_remote_code=True)
    assert type(loaded.model.model).__name__ == "CustomModel"
    assert loaded.folder.remote_code and loaded.folder.task == "feature-extraction"
