"""Real and transformers-built models to measure int8 accuracy on (not run by tests or bench).

    python bench/real_models.py OUT          # writes models, data and configs into OUT

- OUT/effnet/ and OUT/minilm/: EfficientNet-Lite1 and all-MiniLM-L6-v2 as bench/real.py builds
  them (model.pt2 with a dynamic batch, calib.npz, eval.npz), with static.yaml.
- OUT/transformers/: gpt2.{pt2,ts}, bert.{pt2,ts}: GPT-2 and BERT from transformers configs
  (6 layers, width 384, random weights, seed 0) as a torch.export program (dynamic batch) and a
  torch.jit.trace archive; calib.npz / eval.npz: 64 / 96 random token sequences of 32 with
  padding; static.yaml.
- Each static.yaml is static per-channel int8 with metric cosine; add options with --set, e.g.
  `compress run OUT/effnet/model.pt2 -c OUT/effnet/static.yaml -o o --set
  passes[0].bias_correction=true`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.real import efficientnet, minilm, save_program  # noqa: E402

CONFIG = """\
version: 1
data:
  calibration: {{path: calib.npz, inputs: {inputs}}}
  eval: {{path: eval.npz, inputs: {inputs}}}
passes:
  - type: quantize.static
    per_channel: true
report: {{batch_sizes: [{batch}], threads: 2, metric: cosine, min_runs: 5, min_seconds: 0, \
max_seconds: 1}}
"""
TEXT_INPUTS = "[input_ids, attention_mask]"


class TextModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return output.logits


def transformers_models(out: Path) -> None:
    import transformers as T

    torch.manual_seed(0)
    models = {
        "gpt2": T.GPT2LMHeadModel(
            T.GPT2Config(vocab_size=5000, n_embd=384, n_layer=6, n_head=6, n_positions=64)
        ),
        "bert": T.BertForSequenceClassification(
            T.BertConfig(
                vocab_size=5000,
                hidden_size=384,
                num_hidden_layers=6,
                num_attention_heads=6,
                intermediate_size=1536,
                num_labels=5,
                max_position_embeddings=64,
            )  # fmt: skip
        ),
    }
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5000, (160, 32)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, length in zip(mask, rng.integers(16, 33, len(mask)), strict=True):
        row[length:] = 0
    np.savez(out / "calib.npz", input_ids=ids[:64], attention_mask=mask[:64])
    np.savez(out / "eval.npz", input_ids=ids[64:], attention_mask=mask[64:])
    example = (torch.from_numpy(ids[:4]), torch.from_numpy(mask[:4]))
    for name, model in models.items():
        wrapped = TextModel(model.eval()).eval()
        save_program(wrapped, example, out / f"{name}.pt2")
        torch.jit.save(torch.jit.trace(wrapped, example, strict=False), out / f"{name}.ts")
    (out / "static.yaml").write_text(CONFIG.format(inputs=TEXT_INPUTS, batch=8))


def build_all(target: Path) -> None:
    for name, build, inputs, batch in (
        ("effnet", efficientnet, "[x]", 8),
        ("minilm", minilm, TEXT_INPUTS, 4),
        ("transformers", transformers_models, None, None),
    ):
        folder = target / name
        folder.mkdir(parents=True, exist_ok=True)
        build(folder)
        if inputs:
            (folder / "static.yaml").write_text(CONFIG.format(inputs=inputs, batch=batch))
        print(f"{name}: done", flush=True)


if __name__ == "__main__":
    build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "real_models"))
