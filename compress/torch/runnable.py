"""A loaded model as a torch callable for inference: a torch.export program runs through its
`.module()`, in chunks of its batch when that is fixed (saved without dynamic_shapes); every other
torch format, and a decoder program (compress.models.program_decoder), is its own module."""

from __future__ import annotations

from typing import Any

from compress.measure.fixed_batch import chunks
from compress.models import LoadedModel


def runnable(model: LoadedModel) -> Any:
    """`model` as a torch callable (ONNX models are run by ONNX Runtime, not here)."""
    from compress.models.program_decoder import is_program_decoder

    if model.format != "exported_program" or is_program_decoder(model.model):
        return model.model
    if fixed := model.fixed_batch:
        return FixedBatchModule(model.model.module(), fixed)
    return model.model.module()


class FixedBatchModule:
    """A torch callable (a fixed-batch program's `.module()`) that takes any batch: the inputs
    are split into chunks of `batch`, and every tensor of the outputs put together again without
    the padding rows, as a dict by the names compress.torch.outputs gives them (the names, and
    so the order, the program's own outputs have)."""

    def __init__(self, module, batch: int):
        self.module, self.batch = module, batch

    def __call__(self, *inputs) -> dict:
        import torch

        from compress.torch.outputs import named_tensors

        arrays = [t.detach().cpu().numpy() for t in inputs]
        parts = [
            {
                name: tensor[:real] if tensor.dim() else tensor
                for name, tensor in named_tensors(self.module(*map(torch.from_numpy, part)))
            }
            for part, real in chunks(arrays, self.batch, self.batch)
        ]
        return {
            name: torch.cat([p[name] for p in parts]) if tensor.dim() else tensor
            for name, tensor in parts[0].items()
        }

    def eval(self):
        self.module.eval()
        return self
