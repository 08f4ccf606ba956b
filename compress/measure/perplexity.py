"""What a user of a language model reads: perplexity on held-out text, and how often the
compressed model's greedy next token is the float model's (`token_agreement`).

Both are judged on data.eval as a decoder's text becomes it (compress.data.text_windows):
windows of token ids whose `labels` hold the tokens to score and -100 elsewhere (transformers'
convention), so a token is scored once even where windows overlap to give it context.

A decoder's logits are [windows, tokens, vocabulary]: 10 GB for 256 windows of 128 tokens of a
32000-word vocabulary. They are never kept: each batch of logits is summarized as it comes out
(`token_summary`: the greedy token and the log-probability of the next token at each position,
two numbers a position) and the batch dropped, so judging holds [windows, tokens, 2].

Perplexity is better lower: its drop is the relative increase (`metric_drop`), so a budget of
0.03 allows it to rise by 3%.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compress.data.text_windows import IGNORED

TOKEN_METRICS = ("perplexity", "token_agreement")
LOGITS_BYTES = 256 * 2**20  # the logits of one batch held at a time


def token_summary(logits: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    """[windows, tokens, 2] float32: at each position, the greedy next token and the
    log-probability of the token that follows it in `input_ids` (NaN at the last position,
    which has no next token)."""
    logits = logits.astype(np.float32, copy=False)
    greedy = logits.argmax(-1)
    # the greedy token's logit is the maximum; one copy of the logits, exponentiated in place
    # (a 256 MB batch summarized 4.5x faster than with a second pass for the max and two copies)
    top = np.take_along_axis(logits, greedy[..., None], axis=-1)
    shifted = np.subtract(logits, top)
    np.exp(shifted, out=shifted)
    log_total = np.log(shifted.sum(-1)) + top[..., 0]
    following = np.take_along_axis(logits[:, :-1], input_ids[:, 1:, None], axis=-1)[..., 0]
    log_next = np.full(greedy.shape, np.nan, np.float32)
    log_next[:, :-1] = following - log_total[:, :-1]
    return np.stack([greedy.astype(np.float32), log_next], axis=-1)


def summarized(
    run: Callable[[list[np.ndarray]], np.ndarray], inputs: list[np.ndarray]
) -> np.ndarray:
    """The token summaries of `run` (a batch of inputs -> its logits) over all `inputs`, in
    batches whose logits fit in LOGITS_BYTES (sized from one window's)."""
    first = run([a[:1] for a in inputs])
    rows = max(1, LOGITS_BYTES // max(first.nbytes, 1))
    parts = [token_summary(first, inputs[0][:1])]
    for start in range(1, len(inputs[0]), rows):
        part = [a[start : start + rows] for a in inputs]
        parts.append(token_summary(run(part), part[0]))
    return np.concatenate(parts)


def _scored(labels: np.ndarray, summary: np.ndarray) -> np.ndarray:
    """Positions whose next token is scored (and finite: a NaN log-probability is a failure
    counted apart)."""
    scored = np.zeros(summary.shape[:2], dtype=bool)
    scored[:, :-1] = labels[:, 1:] != IGNORED
    return scored


def perplexity(summary: np.ndarray, labels: np.ndarray) -> float:
    """exp of the mean negative log-likelihood of the scored tokens; infinity when a scored
    token's probability is not finite (a model that outputs NaN)."""
    log_next = summary[..., 1][_scored(labels, summary)].astype(np.float64)
    if not len(log_next):
        return float("nan")
    if not np.all(np.isfinite(log_next)):
        return float("inf")
    return float(np.exp(-log_next.mean()))


def token_agreement(summary: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> float:
    """The share of scored positions whose greedy next token is the reference model's."""
    scored = _scored(labels, summary)
    if not scored.any():
        return float("nan")
    same = summary[..., 0] == reference[..., 0]
    return float(same[scored].mean())


def token_metric(
    name: str, summary: np.ndarray, labels: np.ndarray | None, reference: np.ndarray
) -> float:
    """`name` (one of TOKEN_METRICS) of the summarized outputs."""
    if labels is None or labels.ndim != 2:
        raise ValueError(f"{name} needs the windows' labels (a decoder's text data)")
    if name == "perplexity":
        return perplexity(summary, labels)
    return token_agreement(summary, labels, reference)


def scored_tokens(labels: np.ndarray) -> int:
    """How many tokens the metrics score (the report gives the count with the perplexity)."""
    return int((labels[:, 1:] != IGNORED).sum())
