"""Architectures of the sample models shipped in ``sample_models/``.

All models are plain ``torch.nn`` code with no data-dependent Python control
flow, so they can be exported with ``torch.export``, ``torch.jit.script`` /
``torch.jit.trace`` and ``torch.onnx.export`` (TorchScript and dynamo paths).

* :class:`DigitsCNN` classifies 8x8 digit images ``[batch, 1, 8, 8]``.
* :class:`DigitsResNet` classifies the same images with a small residual CNN
  built from depthwise-separable convolutions and BatchNorm (a MobileNet-like
  pattern: grouped convolutions, residual ``Add``, global average pooling).
* :class:`TextTransformer` classifies the same digits read as token sequences
  ``input_ids`` / ``attention_mask`` (both int64 ``[batch, seq]``).

All return logits ``[batch, num_classes]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Small, weight-dominated CNN for 8x8 images (~240k parameters)."""

    def __init__(self, width: int = 64, num_classes: int = 10, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SeparableBlock(nn.Module):
    """Residual depthwise-separable block.

    ``relu(skip(x) + bn(pointwise(relu(bn(depthwise(x))))))``. With ``stride=2``
    the depthwise conv halves the resolution and the skip becomes a strided 1x1
    projection + BN; otherwise the skip is the identity.
    """

    def __init__(self, width: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            width, width, 3, stride=stride, padding=1, groups=width, bias=False
        )
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.pointwise = nn.Conv2d(width, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        if stride == 1:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = nn.Sequential(
                nn.Conv2d(width, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.depthwise(x)))
        out = self.bn2(self.pointwise(out))
        return self.relu2(out + self.skip(x))


class DigitsResNet(nn.Module):
    """Residual depthwise-separable CNN for 8x8 images (~25k parameters).

    Stem conv 3x3 (1 -> ``width``) + BN + ReLU, then ``blocks``
    :class:`SeparableBlock` s at constant width; block ``blocks // 2`` downsamples
    8x8 -> 4x4. Global average pool, flatten, Linear classifier.
    """

    def __init__(self, width: int = 64, num_classes: int = 10, blocks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            *(SeparableBlock(width, stride=2 if i == blocks // 2 else 1) for i in range(blocks))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(self.flatten(self.pool(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention written with Linear / matmul / softmax."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads != 0:
            raise ValueError("d_model must be divisible by heads")
        self.heads = heads
        self.head_dim = d_model // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D]; bias: [B, 1, 1, S] additive key-padding bias.
        b, s, d = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, B, H, S, Dh]
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale + bias
        attn = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(b, s, d)
        return self.out(ctx)


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer encoder layer."""

    def __init__(self, d_model: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn), nn.GELU(), nn.Linear(ffn, d_model))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.ffn(self.norm2(x))


class TextTransformer(nn.Module):
    """Tiny transformer encoder classifier with masked mean pooling."""

    def __init__(
        self,
        vocab_size: int = 20,
        max_len: int = 64,
        d_model: int = 64,
        heads: int = 2,
        layers: int = 2,
        ffn: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.layers = nn.ModuleList([EncoderLayer(d_model, heads, ffn) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.tok_emb(input_ids) + self.pos_emb[:, :seq]
        mask = attention_mask.to(x.dtype)  # [B, S], 1 = real token
        bias = ((1.0 - mask) * -1e4).unsqueeze(1).unsqueeze(2)  # [B, 1, 1, S]
        for layer in self.layers:
            x = layer(x, bias)
        x = self.norm(x)
        weights = mask.unsqueeze(-1)
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)
