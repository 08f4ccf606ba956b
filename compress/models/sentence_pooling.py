"""The sentence embedding of a sentence-transformers folder, computed in torch as
sentence-transformers' Pooling (padded inputs) and Normalize compute it, from the settings
compress.models.sentence_modules read off the folder's files."""

from __future__ import annotations

import torch
from torch import nn


class SentencePooling(nn.Module):
    """Token embeddings [batch, tokens, width] and the attention mask -> the sentence embedding,
    as sentence-transformers' Pooling (padded inputs) and Normalize compute it."""

    def __init__(self, modes: tuple[str, ...], normalize: bool) -> None:
        super().__init__()
        self.modes, self.normalize = modes, normalize

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones(tokens.shape[:-1], dtype=torch.int64)
        pooled = torch.cat([self._pool(mode, tokens, attention_mask) for mode in self.modes], -1)
        return nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    @staticmethod
    def _pool(mode: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width = tokens.shape[-1]
        if mode == "cls":  # the first token that is not padding
            first = mask.to(torch.int32).argmax(dim=1)
            return torch.gather(tokens, 1, first.view(-1, 1, 1).expand(-1, 1, width)).squeeze(1)
        if mode == "max":
            keep = mask.unsqueeze(-1).expand_as(tokens).to(tokens.dtype)
            return tokens.masked_fill(keep == 0, float("-inf")).max(dim=1).values
        if mode == "lasttoken":
            values, index = mask.flip(1).max(1)
            index = torch.where(values == 0, tokens.shape[1] - 1, index)
            last = (tokens.shape[1] - index - 1).view(-1, 1, 1).expand(-1, 1, width)
            keep = mask.unsqueeze(-1).expand_as(tokens).to(tokens.dtype)
            return torch.gather(tokens * keep, 1, last).squeeze(1)
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        if mode == "weightedmean":  # position weights from the first token that is not padding
            steps = torch.arange(1, tokens.shape[1] + 1, dtype=tokens.dtype).view(1, -1, 1)
            weights = weights * (steps - mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
        total = (tokens * weights).sum(dim=1)
        count = torch.clamp(weights.sum(dim=1), min=1e-9)
        return total / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)
