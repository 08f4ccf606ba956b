"""Text data given as text: a .txt (one example per line), a .jsonl (one JSON object per line) or
a .csv with a header, whose `text` field (and `text_pair`, for pairs) is tokenized with the
model's own tokenizer into the token arrays the model takes; labels come from a field as in any
CSV. The file is read whole, within MAX_TEXT_DATA_BYTES, as UTF-8: an undecodable byte, a line
that is not JSON, a missing field or a file of empty lines is refused naming the file and line.

Reading and tokenizing are two steps: the text is read and checked with the config (so `compress
validate` checks it), and tokenized once the model's tokenizer is known (compress.job.text_data).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from pydantic import Field

from compress.config.limits import MAX_TEXT_DATA_BYTES
from compress.errors import DataError
from compress.files import read_bounded
from compress.records import Record

if TYPE_CHECKING:
    from compress.config import DataSource
    from compress.data import Dataset

DEFAULT_MAX_LENGTH = 512  # when neither the data, the folder nor the tokenizer says


class Tokenizer(Protocol):
    """What tokenizing text data needs of a tokenizer (compress.models.hf_tokenizer's
    LoadedTokenizer): its class, its arrays' names, the lengths it knows, and encode."""

    @property
    def class_name(self) -> str: ...

    @property
    def input_names(self) -> list[str]: ...

    @property
    def max_length(self) -> int | None: ...

    @property
    def default_length(self) -> int | None: ...

    def encode(
        self, texts: list[str], pairs: list[str] | None, max_length: int, padding: str,
        truncation: bool,
    ) -> dict[str, np.ndarray]: ...  # fmt: skip

    def encode_running(self, text: str) -> np.ndarray: ...

    @property
    def pad_id(self) -> int: ...


@dataclass(frozen=True)
class TextExamples:
    texts: list[str]
    pairs: list[str] | None  # the second text of each example (text_pair)


class TextTokenizer(Record):
    """The tokenizer text data was tokenized with, and how."""

    source: str = Field(description="the model folder, or model.tokenizer")
    tokenizer_class: str
    max_length: int
    padding: str
    truncation: bool
    inputs: list[str] = Field(description="the arrays it made, in the model's input order")
    stride: int | None = Field(
        default=None, description="a decoder's running text: tokens between window starts"
    )
    scored_tokens: int | None = Field(
        default=None, description="a decoder's running text: the tokens its metrics score"
    )

    def describe(self) -> str:
        if self.stride is not None:
            return (
                f"{self.tokenizer_class} from {self.source}: running text in windows of "
                f"{self.max_length} tokens, stride {self.stride}, {self.scored_tokens:,} tokens "
                "scored"
            )
        cut = ", truncation" if self.truncation else ""
        return (
            f"{self.tokenizer_class} from {self.source}: max_length {self.max_length}, padding "
            f"{self.padding}{cut} -> {', '.join(self.inputs)}"
        )


def read(source: DataSource, where: str, path: Path):
    """(the examples, label names or numbers as text, or None)."""
    lines = _lines(path, where)
    suffix = path.suffix.lower()
    if suffix == ".txt" and source.format in (None, "text"):
        texts = [line for line in lines if line.strip()][: source.limit]
        rows = None
    else:
        parse = _jsonl_rows if suffix == ".jsonl" else _csv_rows
        rows = parse(lines, where, path)[: source.limit]
        texts = _field(rows, source.text or "text", where, path)
    if not texts:
        raise DataError(
            f"{where}: {path.name} has no text (every line is empty); put one example per line"
        )
    pairs = _field(rows, source.text_pair, where, path) if rows and source.text_pair else None
    labels = [str(value) for value in _field(rows, source.labels, where, path, str, int)] if (
        rows and source.labels
    ) else None  # fmt: skip
    return TextExamples(texts, pairs), labels


def _lines(path: Path, where: str) -> list[str]:
    """The file's lines: a regular file of at most MAX_TEXT_DATA_BYTES, UTF-8 throughout."""
    data = read_bounded(
        path, MAX_TEXT_DATA_BYTES, f"{where}.path", DataError, "a text file",
        "use a part of it (`limit` reads the first examples)",
    )  # fmt: skip
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{where}: {path.name} line {line} is not UTF-8 text (byte {data[e.start]:#04x}); "
            "save the file as UTF-8"
        ) from None
    return text.splitlines()


def _jsonl_rows(lines: list[str], where: str, path: Path) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise DataError(
                f"{where}: {path.name} line {number} is not JSON; a .jsonl file holds one JSON "
                "object per line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: {path.name} line {number} is not a JSON object")
        rows.append((number, row))
    return rows


def _csv_rows(lines: list[str], where: str, path: Path) -> list[tuple[int, dict]]:
    try:
        reader = csv.reader(io.StringIO("\n".join(lines)))
        header = [name.strip() for name in next(reader, [])]
        rows = []
        for row in reader:
            if any(cell.strip() for cell in row):
                if len(row) != len(header):
                    raise DataError(
                        f"{where}: {path.name} line {reader.line_num} has {len(row)} fields but "
                        f"the header has {len(header)}"
                    )
                rows.append((reader.line_num, dict(zip(header, row, strict=True))))
    except csv.Error as e:
        raise DataError(f"{where}: {path.name} is not a readable CSV file ({e})") from None
    return rows


def _field(rows, name: str, where: str, path: Path, *kinds: type) -> list:
    """Every row's `name` field, which must be there and be one of `kinds` (default: text)."""
    kinds = kinds or (str,)
    values = []
    for number, row in rows:
        if name not in row:
            raise DataError(
                f"{where}: {path.name} line {number} has no field {name!r} (it has: "
                f"{', '.join(map(str, row)) or 'nothing'}); name the field in the config"
            )
        value = row[name]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise DataError(
                f"{where}: {path.name} line {number}: {name!r} holds {type(value).__name__} "
                f"{str(value)[:40]!r}, not {' or '.join(k.__name__ for k in kinds)}"
            )
        values.append(value)
    return values


def tokenized(
    dataset: Dataset, source: DataSource, tokenizer: Tokenizer, named: str, decoder: bool = False
) -> Dataset:
    """`dataset` with its text tokenized into the model's token arrays (`named`: where the
    tokenizer came from, for the report); for a `decoder`, one running text in windows
    (compress.data.text_windows)."""
    examples = dataset.text
    assert examples is not None
    limit = tokenizer.max_length
    length = source.max_length or tokenizer.default_length or limit or DEFAULT_MAX_LENGTH
    if limit and length > limit:
        raise DataError(
            f"{dataset.where}.max_length: {length} tokens is more than the {limit} the model "
            "takes; lower it"
        )
    if decoder:
        return _windowed(dataset, source, tokenizer, named, length)
    padding, truncation = source.padding or "longest", source.truncation is not False
    try:
        arrays = tokenizer.encode(examples.texts, examples.pairs, length, padding, truncation)
    except Exception as e:  # a tokenizer without a padding token, say
        from compress.errors import first_line

        raise DataError(
            f"{dataset.where}: the tokenizer of {named} cannot tokenize {dataset.path.name} "
            f"({first_line(e, 200)})"
        ) from None
    names = source.input_names or tokenizer.input_names
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(
            f"{dataset.where}.inputs: the tokenizer makes {', '.join(arrays)}, not "
            f"{missing[0]!r}; name those"
        )
    record = TextTokenizer(
        source=named, tokenizer_class=tokenizer.class_name, max_length=length,
        padding=padding, truncation=truncation, inputs=names,
    )  # fmt: skip
    inputs = {name: np.ascontiguousarray(arrays[name]) for name in names}
    return replace(dataset, inputs=inputs, tokenizer=record)


def _windowed(
    dataset: Dataset, source: DataSource, tokenizer: Tokenizer, named: str, length: int
) -> Dataset:
    """A decoder's text: the examples as one running text, cut into strided windows whose
    labels say which tokens are scored."""
    from compress.data.text_windows import cut_windows, default_stride, running_text

    text = dataset.text
    if text is None:  # read as text, not tokenized yet: what this is called on
        raise DataError(f"{dataset.where}: no text to cut into windows")
    if text.pairs is not None or dataset.labels is not None:
        raise DataError(
            f"{dataset.where}: a decoder reads running text; remove text_pair and labels"
        )
    try:
        ids = tokenizer.encode_running(running_text(text.texts))
    except Exception as e:
        from compress.errors import first_line

        raise DataError(
            f"{dataset.where}: the tokenizer of {named} cannot tokenize {dataset.path.name} "
            f"({first_line(e, 200)})"
        ) from None
    role = dataset.where.rsplit(".", 1)[-1]
    stride = source.stride or default_stride(length, role)
    windows = cut_windows(ids, length, stride, tokenizer.pad_id, dataset.where)
    record = TextTokenizer(
        source=named, tokenizer_class=tokenizer.class_name, max_length=length,
        padding="windows", truncation=False, inputs=["input_ids", "attention_mask"],
        stride=stride, scored_tokens=windows.scored_tokens,
    )  # fmt: skip
    inputs = {"input_ids": windows.input_ids, "attention_mask": windows.attention_mask}
    return replace(dataset, inputs=inputs, labels=windows.labels, tokenizer=record)
