"""Text for a decoder: one running text cut into windows of `max_length` tokens.

A language model is judged on running text, not on lines padded to a common length: the
examples of a text file are joined (one per line, as the file holds them) and tokenized once,
without truncation, and the token stream is cut into windows that start `stride` tokens apart
(the sliding-window perplexity of transformers' guide). Each window's `labels` hold the tokens it
scores and IGNORED (-100) elsewhere: a token is scored once, in the first window that reaches
it, and the tokens before it in that window are its context. The last window is padded on the
right (attention mask 0, labels IGNORED), so every window has the same length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.errors import DataError

IGNORED = -100  # a label that is not scored (transformers' ignore_index)
MAX_WINDOWS = 100_000  # a bound on the arrays a text file becomes


@dataclass(frozen=True)
class Windows:
    input_ids: np.ndarray  # [windows, max_length] int64
    attention_mask: np.ndarray  # [windows, max_length] int64, 0 on the last window's padding
    labels: np.ndarray  # [windows, max_length] int64: the token where it is scored, else IGNORED

    @property
    def scored_tokens(self) -> int:
        """Tokens predicted and scored: a label after a window's first position."""
        return int((self.labels[:, 1:] != IGNORED).sum())


def cut_windows(ids: np.ndarray, max_length: int, stride: int, pad_id: int, where: str) -> Windows:
    """Windows of `max_length` tokens of the stream `ids`, starting `stride` apart."""
    if stride > max_length:
        raise DataError(
            f"{where}.stride: {stride} is more than max_length {max_length}, so tokens between "
            "windows would never be read; make stride at most max_length"
        )
    if len(ids) < 2:
        raise DataError(
            f"{where}: the text is {len(ids)} token(s); a language model needs at least 2 to "
            "predict one"
        )
    starts, scored_until = [], 0
    for start in range(0, len(ids), stride):
        starts.append(start)
        if start + max_length >= len(ids):
            break
    if len(starts) > MAX_WINDOWS:
        raise DataError(
            f"{where}: the text makes {len(starts):,} windows, over {MAX_WINDOWS:,}; use a part "
            "of it (`limit` reads the first lines) or a larger stride"
        )
    shape = (len(starts), max_length)
    input_ids = np.full(shape, pad_id, np.int64)
    mask = np.zeros(shape, np.int64)
    labels = np.full(shape, IGNORED, np.int64)
    for row, start in enumerate(starts):
        piece = ids[start : start + max_length]
        input_ids[row, : len(piece)] = piece
        mask[row, : len(piece)] = 1
        new = max(scored_until - start, 0)  # tokens an earlier window scored: context only
        labels[row, new : len(piece)] = piece[new:]
        scored_until = start + len(piece)
    return Windows(input_ids, mask, labels)


def default_stride(max_length: int, role: str) -> int:
    """data.eval overlaps its windows by half (each scored token has context), other data
    does not (calibration and training read each token once)."""
    return max(1, max_length // 2) if role == "eval" else max_length


def running_text(texts: list[str]) -> str:
    """The examples of a text file as the one text they came from."""
    return "\n".join(texts)
