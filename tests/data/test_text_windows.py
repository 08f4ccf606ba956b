"""A decoder's text is one running text in windows: a token is scored at most once (every token
after the first where windows overlap), overlapping windows give it context, the last window is
padded and not scored."""

from __future__ import annotations

import numpy as np
import pytest

from compress.data.text_windows import IGNORED, cut_windows
from compress.errors import DataError


@pytest.mark.parametrize(("length", "stride"), [(8, 4), (8, 8), (5, 3), (8, 1)])
def test_every_token_is_scored_once(length, stride):
    ids = np.arange(10, 33)  # 23 tokens
    windows = cut_windows(ids, length, stride, pad_id=0, where="data.eval")
    scored = []
    for row, labels in enumerate(windows.labels):
        start = row * stride
        real = windows.attention_mask[row].astype(bool)
        assert list(windows.input_ids[row][real]) == list(ids[start : start + length])
        assert (labels[~real] == IGNORED).all()  # padding is never scored
        scored += [int(t) for t in labels[1:] if t != IGNORED]  # position 0 has no context
    assert scored == sorted(set(scored))  # each once, in order
    if stride < length:  # overlapping windows: every token but the text's first
        assert scored == list(ids[1:])
    else:  # side by side: a window's first token has no context (as in transformers' guide)
        assert len(scored) == len(ids) - len(windows.labels)
    assert windows.scored_tokens == len(scored)
    assert windows.input_ids.shape[1] == length and windows.attention_mask[-1, -1] in (0, 1)


def test_overlap_is_context_not_scored_again():
    windows = cut_windows(np.arange(12), 8, 4, pad_id=0, where="data.eval")
    assert len(windows.labels) == 2
    assert list(windows.labels[1][:4]) == [IGNORED] * 4  # tokens 4..7 scored by window 0
    assert list(windows.labels[1][4:]) == [8, 9, 10, 11]


@pytest.mark.parametrize(
    ("ids", "stride", "needle"),
    [(np.arange(20), 9, "stride: 9 is more than max_length 8"), (np.arange(1), 4, "1 token")],
)
def test_bad_windows_are_one_line(ids, stride, needle):
    with pytest.raises(DataError, match=needle):
        cut_windows(ids, 8, stride, pad_id=0, where="data.eval")
