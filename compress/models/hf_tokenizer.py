"""A tokenizer saved with `save_pretrained` (a model folder's own, or `model.tokenizer`), loaded
offline with transformers' AutoTokenizer after the same checks as a model folder's files: regular
files of bounded size, and no `auto_map` (code of its own) without --trust-remote-code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import DataError, ModelLoadError, first_line
from compress.models.hf_folder import (
    MAX_JSON_BYTES,
    MAX_TOKENIZER_BYTES,
    TOKENIZER_FILES,
    is_model_folder,
    read_layout,
    refuse_remote_code,
)
from compress.models.hf_load import quiet_transformers, transformers_module
from compress.models.regular_files import read_json, regular_size


@dataclass
class LoadedTokenizer:
    source: Path  # the folder it was read from
    tokenizer: Any  # transformers' PreTrainedTokenizerBase
    default_length: int | None = None  # a sentence-transformers folder's max_seq_length

    @property
    def class_name(self) -> str:
        return type(self.tokenizer).__name__

    @property
    def input_names(self) -> list[str]:
        """The arrays it makes, as the model takes them (input_ids, attention_mask, ...)."""
        return list(self.tokenizer.model_input_names)

    @property
    def max_length(self) -> int | None:
        """The longest input the model takes, when the tokenizer knows it (transformers uses a
        huge number for 'unknown')."""
        length = getattr(self.tokenizer, "model_max_length", None)
        return length if isinstance(length, int) and 0 < length < 1_000_000 else None

    def encode(
        self, texts: list[str], pairs: list[str] | None, max_length: int, padding: str,
        truncation: bool,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Token arrays [examples, tokens] by name, int64."""
        with quiet_transformers():
            tokens = self.tokenizer(
                texts, pairs, max_length=max_length, padding=padding, truncation=truncation,
                return_tensors="np",
            )  # fmt: skip
        return {name: np.asarray(array, dtype=np.int64) for name, array in tokens.items()}

    def encode_running(self, text: str) -> np.ndarray:
        """The token ids of one long text, untruncated and without special tokens (a decoder's
        running text, cut into windows afterwards)."""
        with quiet_transformers():
            ids = self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    @property
    def pad_id(self) -> int:
        """What pads a window: the padding token, else the end of text, else 0 (masked out and
        never scored, so any id does)."""
        for token in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if isinstance(token, int):
                return token
        return 0


def tokenizer_folder(path: Path, trust_remote_code: bool) -> tuple[Path, int | None]:
    """Where the tokenizer of `path` lives (a model folder's transformer folder, or `path`),
    and a sentence-transformers folder's max_seq_length."""
    if is_model_folder(path):
        layout = read_layout(path, trust_remote_code)
        length = layout.sentence.max_seq_length if layout.sentence else None
        return layout.model_dir, length
    return path, None


def load_tokenizer(path: Path, trust_remote_code: bool, what: str) -> LoadedTokenizer:
    """The tokenizer saved in the folder `path` (`what` names it: "model.tokenizer", ...)."""
    if path.is_file():
        raise DataError(
            f"{what}: {path} is a file; give the folder that holds the tokenizer's files "
            "(tokenizer.json and tokenizer_config.json, as save_pretrained writes them)"
        )
    if not path.is_dir():
        raise DataError(f"{what}: folder not found: {path}")
    folder, length = tokenizer_folder(path, trust_remote_code)
    present = [folder / n for n in TOKENIZER_FILES if (folder / n).exists()]
    if not present:
        raise DataError(
            f"{what}: {path} has no tokenizer (tokenizer.json, tokenizer_config.json or a "
            "vocabulary); save one beside the model (tokenizer.save_pretrained) or set "
            "model.tokenizer to a folder that has one"
        )
    for file in present:
        if regular_size(file, what) > MAX_TOKENIZER_BYTES:
            raise ModelLoadError(f"{what}: {file} is over {MAX_TOKENIZER_BYTES:,} bytes")
    config = folder / "tokenizer_config.json"
    if config.exists() and not trust_remote_code:
        refuse_remote_code({config: read_json(config, MAX_JSON_BYTES, what)}, path)
    transformers = transformers_module(what)
    try:
        with quiet_transformers():
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code
            )
    except Exception as e:
        raise DataError(
            f"{what}: transformers cannot load the tokenizer in {folder} ({first_line(e, 200)})"
        ) from None
    return LoadedTokenizer(folder, tokenizer, length)
