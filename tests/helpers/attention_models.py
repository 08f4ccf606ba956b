"""Small attention encoders written like Hugging Face's, in plain torch, for the head-pruning
tests: `HFStyleEncoder` has BERT's separate query / key / value projections and head attributes;
`FusedEncoder` has GPT-2's fused `c_attn` and `c_proj` as `Conv1D` layers (weights [in, out])."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

VOCAB, HIDDEN, HEADS, FFN = 20, 32, 4, 64


def attend(q, k, v, head_size: int, bias):
    """Softmax attention on [batch, seq, heads * head_size] tensors, reshaped as HF does."""
    shape = (*q.shape[:-1], -1, head_size)
    q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) * head_size**-0.5 + bias
    context = torch.softmax(scores, dim=-1) @ v
    return context.transpose(1, 2).reshape(*context.shape[:1], context.shape[2], -1)


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_attention_heads = HEADS
        self.attention_head_size = HIDDEN // HEADS
        self.all_head_size = HIDDEN
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))

    def forward(self, x, bias):
        qkv = self.query(x), self.key(x), self.value(x)
        return attend(*qkv, self.attention_head_size, bias)


class Conv1D(nn.Module):
    """transformers' Conv1D: a Linear whose weight is stored [in, out]."""

    def __init__(self, outputs: int, inputs: int) -> None:
        super().__init__()
        self.nf = outputs
        self.weight = nn.Parameter(torch.randn(inputs, outputs) * 0.1)
        self.bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(
            *x.shape[:-1], self.nf
        )


class FusedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.split_size = HEADS, HIDDEN // HEADS, HIDDEN
        self.c_attn = Conv1D(3 * HIDDEN, HIDDEN)
        self.c_proj = Conv1D(HIDDEN, HIDDEN)

    def forward(self, x, bias):
        q, k, v = self.c_attn(x).split(self.split_size, dim=2)
        return self.c_proj(attend(q, k, v, self.head_dim, bias))


class Layer(nn.Module):
    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.attention = FusedAttention() if fused else SelfAttention()
        self.output = nn.Identity() if fused else nn.Linear(HIDDEN, HIDDEN)  # BERT's sibling
        self.norm1, self.norm2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.ffn = nn.Sequential(nn.Linear(HIDDEN, FFN), nn.GELU(), nn.Linear(FFN, HIDDEN))

    def forward(self, x, bias):
        x = self.norm1(x + self.output(self.attention(x, bias)))
        return self.norm2(x + self.ffn(x))


class HFStyleEncoder(nn.Module):
    def __init__(self, fused: bool = False, layers: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(Layer(fused) for _ in range(layers))
        self.classifier = nn.Linear(HIDDEN, classes)

    def forward(self, input_ids, attention_mask):
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, bias)
        return self.classifier(x.mean(dim=1))


def FusedEncoder() -> HFStyleEncoder:  # noqa: N802 - a factory named like the class it makes
    return HFStyleEncoder(fused=True)


class TiedLM(nn.Module):
    """A language model whose output projection shares the embedding table (GPT-2's tied LM
    head), flattening its tokens with the fixed width torch.export writes as a number."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(Layer(False) for _ in range(2))
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.embeddings.weight

    def forward(self, input_ids, attention_mask):
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, bias)
        tokens = x.view(-1, x.shape[-1])  # [batch * seq, HIDDEN]: HIDDEN saved as a number
        return self.lm_head(tokens).view(-1, input_ids.shape[1], VOCAB)


# The head-pruning tests' config, data and saved models.
CONFIG = """\
version: 1
{model}data:
  eval: {{path: tokens.npz, inputs: [input_ids, attention_mask]}}
passes:
  - {{type: prune.channels, amount: 0.5}}
report: {{batch_sizes: [4], metric: cosine, min_runs: 5, min_seconds: 0,
  max_seconds: 0.2, warmup_runs: 1}}
"""


def tokens(folder) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (16, 8)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::2, 6:] = 0
    np.savez(folder / "tokens.npz", input_ids=ids, attention_mask=mask)


def saved_model(folder, fused: bool, program: bool = False, model=None):
    """The encoder as a state_dict (for model.arch), or as a dynamic-batch .pt2 program."""
    torch.manual_seed(0)
    model = model or HFStyleEncoder(fused=fused).eval()
    if not program:
        path = folder / "model_state.pt"
        torch.save(model.state_dict(), path)
        return path
    example = (torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    batch = torch.export.Dim("batch", min=2)
    exported = torch.export.export(model, example, dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(exported, folder / "model.pt2")
    return folder / "model.pt2"
