"""Text data given as text (.txt, .jsonl, .csv with `text:`), tokenized with the model's own
tokenizer with the settings the config gives; bad text is one line naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compress.config import DataSource
from compress.data import load_dataset
from compress.errors import ConfigError, DataError
from compress.job.preflight import check_config
from compress.job.text_data import with_tokens
from compress.passes.recipe import parse_recipe
from tests.helpers.hf_folders import sentences


def source(path: Path, **settings) -> DataSource:
    return DataSource(path=path.name, **settings)


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def checked(folder: Path, data: str, model: Path | None, extra: str = ""):
    """check_config then with_tokens on a config with `data` as data.eval, written in `folder`."""
    config = folder / "config.yaml"
    text = f"version: 1\n{extra}data:\n  eval: {data}\nreport: {{metric: cosine}}\n"
    config.write_text(text)
    return with_tokens(check_config(config), model, False)


def test_a_txt_is_one_example_per_line(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("first line\n\n   \nsecond line\nthird\n")
    dataset = load_dataset(source(path), "data.eval", tmp_path)
    assert dataset.untokenized and len(dataset) == 3
    assert dataset.text.texts == ["first line", "second line", "third"]


def test_jsonl_and_csv_fields_pairs_and_labels(tmp_path):
    rows = [{"q": "w1 w2", "c": "a b", "label": "yes"}, {"q": "w3", "c": "c", "label": "no"}]
    for path in (jsonl(tmp_path / "d.jsonl", rows), tmp_path / "d.csv"):
        if path.suffix == ".csv":
            path.write_text(
                "q,c,label\n" + "".join(f"{r['q']},{r['c']},{r['label']}\n" for r in rows)
            )
        given = source(path, text="q", text_pair="c", labels="label")
        assert given.kind == "text"
        dataset = load_dataset(given, "data.eval", tmp_path)
        assert dataset.text.texts == ["w1 w2", "w3"] and dataset.text.pairs == ["a b", "c"]
        assert list(dataset.labels) == [1, 0] and dataset.classes == ["no", "yes"]


@pytest.mark.parametrize(
    ("name", "content", "settings", "needles"),
    [
        ("s.txt", "\n  \n\n", {}, ["s.txt has no text (every line is empty)"]),
        ("s.txt", b"fine\nbad \xff byte\n", {}, ["s.txt line 2 is not UTF-8"]),
        ("d.jsonl", '{"text": "a"}\n{"txt": "b"}\n', {}, ["d.jsonl line 2 has no field 'text'"]),
        ("d.jsonl", '{"text": "a"}\nnot json\n', {}, ["d.jsonl line 2 is not JSON"]),
        ("d.jsonl", '{"text": 5}\n', {}, ["line 1: 'text' holds int"]),
        ("d.csv", "a,b\nx,y\n", {"text": "sentence"}, ["d.csv line 2 has no field 'sentence'"]),
    ],
)
def test_bad_text_names_the_file_and_line(tmp_path, name, content, settings, needles):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as refused:
        load_dataset(source(path, **settings), "data.eval", tmp_path)
    for needle in needles:
        assert needle in str(refused.value)


def test_text_settings_belong_to_text(tmp_path):
    for text in ("{path: x.npz, inputs: [x], max_length: 8}", "{path: s.txt, labels: y}"):
        with pytest.raises(ConfigError, match="text"):
            parse_recipe(f"version: 1\ndata:\n  eval: {text}\n", tmp_path / "c.yaml")


def test_tokenized_with_the_folders_tokenizer(hf_folders, tmp_path):
    (tmp_path / "s.txt").write_text("\n".join(sentences(10)) + "\n")
    data = "{path: s.txt, max_length: 8, padding: max_length}"
    config, _, datasets = checked(tmp_path, data, hf_folders["classifier"])
    tokens = datasets["eval"]
    assert list(tokens.inputs) == ["input_ids", "token_type_ids", "attention_mask"]
    ids = tokens.inputs["input_ids"]
    assert ids.shape == (10, 8) and ids.dtype == np.int64
    assert (ids[:, 0] == 2).all()  # [CLS], as the tokenizer puts it
    assert tokens.tokenizer.max_length == 8 and tokens.tokenizer.source == "classifier"
    longest = checked(
        tmp_path, "{path: s.txt, inputs: [input_ids, attention_mask]}", hf_folders["base"]
    )
    arrays = longest[2]["eval"].inputs
    assert list(arrays) == ["input_ids", "attention_mask"]
    assert arrays["input_ids"].shape[1] == arrays["attention_mask"].sum(1).max()  # "longest"


def test_a_sentence_folder_tokenizes_to_its_max_seq_length(hf_folders, tmp_path):
    (tmp_path / "s.txt").write_text(" ".join(["w1"] * 100) + "\n")
    _, _, datasets = checked(tmp_path, "{path: s.txt}", hf_folders["sentence"])
    assert datasets["eval"].inputs["input_ids"].shape == (1, 32)  # sentence_bert_config.json


def test_a_tokenizer_is_needed(hf_folders, tmp_path):
    (tmp_path / "s.txt").write_text("a b c\n")
    (tmp_path / "model.pt2").write_bytes(b"a model file holds no tokenizer")
    with pytest.raises(DataError, match="set model.tokenizer"):
        checked(tmp_path, "{path: s.txt}", tmp_path / "model.pt2")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((hf_folders["base"] / name).read_bytes())
    with pytest.raises(DataError, match="has no tokenizer"):
        checked(tmp_path, "{path: s.txt}", bare)
    tokenizer = f"model: {{tokenizer: {hf_folders['base']}}}\n"
    _, _, datasets = checked(tmp_path, "{path: s.txt}", tmp_path / "model.pt2", tokenizer)
    assert datasets["eval"].tokenizer.source == "model.tokenizer"
    with pytest.raises(DataError, match="more than the 64 the model takes"):
        checked(tmp_path, "{path: s.txt, max_length: 100}", hf_folders["base"])
