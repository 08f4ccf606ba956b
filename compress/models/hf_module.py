"""A model folder's transformers model as every other torch model compress runs: an nn.Module
whose forward takes the data's arrays by position (input_ids, attention_mask, ... in the order
the data names them) and returns the task's outputs by name (`logits`, `last_hidden_state`,
`sentence_embedding`). The transformers model is a real submodule, so pruning, distillation and
fine-tuning change it directly; the export sees this module like any other (compress.torch.export
makes its token axis dynamic, up to `max_tokens`)."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from compress.config import InputSpec
from compress.models.sentence_pooling import SentencePooling

DEFAULT_TOKENS = 128  # the length of made-up token inputs (no data): what latency is timed on


class FolderModule(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        input_names: list[str],
        outputs: tuple[str, ...],
        pooling: SentencePooling | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.outputs = outputs
        self.pooling = pooling
        # the export makes the token axis dynamic (compress.torch.export.dynamic_shapes), up to
        # the positions the model has
        self.dynamic_tokens = True
        self.max_tokens = model_positions(model.config)
        self._extra = {"use_cache": False} if "use_cache" in accepted_inputs(model) else {}

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        given = dict(zip(self.input_names, inputs, strict=True))
        result = self.model(**given, **self._extra, return_dict=True)
        if self.pooling is not None:
            mask = given.get("attention_mask")
            return {"sentence_embedding": self.pooling(result["last_hidden_state"], mask)}
        return {name: result[name] for name in self.outputs}

    def input_specs(self) -> list[InputSpec]:
        """`model.inputs` entries for samples made up without data: token inputs of
        DEFAULT_TOKENS ids (fewer if the model has fewer positions), images at the size the
        config gives."""
        config, specs = self.model.config, []
        tokens = min(DEFAULT_TOKENS, self.max_tokens or DEFAULT_TOKENS)
        for name in self.input_names:
            if name == "pixel_values":
                side = getattr(config, "image_size", 224)
                side = side if isinstance(side, int) else side[0]
                channels = getattr(config, "num_channels", 3)
                specs.append(InputSpec(name=name, shape=["batch", channels, side, side]))
            else:
                specs.append(InputSpec(name=name, shape=["batch", tokens], dtype="int64"))
        return specs


def accepted_inputs(model: nn.Module) -> list[str]:
    """The keyword arguments the transformers model's forward takes."""
    return list(inspect.signature(model.forward).parameters)


def model_positions(config) -> int | None:
    """The most tokens the model has positions for (None: it does not say)."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 1:
            return value
    return None
