"""A sentence-transformers folder's pooling, read from its files (the current `pooling_mode` and
the older `pooling_mode_*_tokens` flags) and computed as sentence-transformers defines each mode,
here against a plain loop over the unmasked tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from compress.errors import ModelLoadError
from compress.models.sentence_modules import read_sentence_modules
from compress.models.sentence_pooling import SentencePooling

TOKENS = torch.randn(3, 5, 4)
MASK = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # right, left, none


def reference(mode: str, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = []
    for sample, keep in zip(tokens, mask.astype(bool), strict=True):
        kept = sample[keep]
        positions = np.flatnonzero(keep)
        if mode == "cls":
            rows.append(kept[0])
        elif mode == "lasttoken":
            rows.append(kept[-1])
        elif mode == "max":
            rows.append(kept.max(0))
        elif mode == "mean":
            rows.append(kept.mean(0))
        elif mode == "mean_sqrt_len_tokens":
            rows.append(kept.sum(0) / np.sqrt(len(kept)))
        else:  # weightedmean: weights 1, 2, ... from the first token that is not padding
            weights = (positions - positions[0] + 1).astype(np.float32)[:, None]
            rows.append((kept * weights).sum(0) / weights.sum())
    return np.stack(rows)


@pytest.mark.parametrize(
    "mode", ["cls", "lasttoken", "max", "mean", "mean_sqrt_len_tokens", "weightedmean"]
)
def test_each_mode_pools_the_unmasked_tokens(mode):
    pooled = SentencePooling((mode,), normalize=False)(TOKENS, MASK).numpy()
    expected = reference(mode, TOKENS.numpy(), MASK.numpy())
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)


def test_modes_concatenate_then_normalize():
    pooled = SentencePooling(("cls", "mean"), normalize=True)(TOKENS, MASK).numpy()
    joined = np.concatenate(
        [reference(m, TOKENS.numpy(), MASK.numpy()) for m in ("cls", "mean")], 1
    )
    np.testing.assert_allclose(
        pooled, joined / np.linalg.norm(joined, axis=1, keepdims=True), atol=1e-6
    )


def write(folder, pooling: dict, modules: list[str]) -> None:
    entries = [
        {"idx": i, "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(
            [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
        )
        if kind in modules
    ]
    (folder / "modules.json").write_text(json.dumps(entries))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


@pytest.mark.parametrize(
    ("pooling", "modes"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True}, ("cls", "max")),
        (
            {"pooling_mode_mean_tokens": False},
            ("mean",),
        ),  # no flag set: sentence-transformers' mean
        ({"pooling_mode": "lasttoken"}, ("lasttoken",)),
        ({"pooling_mode": ["mean", "max"]}, ("mean", "max")),
    ],
)
def test_the_modes_are_read_from_the_folder(tmp_path, pooling, modes):
    write(tmp_path, pooling, ["Transformer", "Pooling", "Normalize"])
    read = read_sentence_modules(tmp_path)
    assert read.modes == modes and read.normalize and read.transformer_dir == tmp_path
    write(tmp_path, pooling, ["Transformer", "Pooling"])
    assert not read_sentence_modules(tmp_path).normalize


def test_bad_pooling_is_refused(tmp_path):
    write(tmp_path, {"pooling_mode": "median"}, ["Transformer", "Pooling"])
    with pytest.raises(ModelLoadError, match="'median' is not one of"):
        read_sentence_modules(tmp_path)
    write(tmp_path, {"pooling_mode": "mean"}, ["Pooling"])
    with pytest.raises(ModelLoadError, match="needs a Transformer and a Pooling module"):
        read_sentence_modules(tmp_path)
