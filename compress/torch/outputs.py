"""A model's outputs as users have them: one tensor, a tuple or list, a dict, a transformers-style
`ModelOutput` (an OrderedDict subclass) or a dataclass, nested at will. Every tensor in them is
exported, in order, under a name that says where it sits (`output`, `output_1`, `logits`,
`hidden_states_0`); `report.output` picks the one the metric judges (the first by default)."""

from __future__ import annotations

import dataclasses
from typing import Any

from compress.errors import ConfigError

SINGLE = "output"  # the name of a model's only output


def named_tensors(output: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every tensor in `output`, depth first, with its name; other values (None, numbers) are
    left out, as the exporters leave them out of the graph."""
    import torch

    if isinstance(output, torch.Tensor):
        return [(prefix or SINGLE, output)]
    if isinstance(output, dict):
        items = [(str(key), value) for key, value in output.items()]
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [(f.name, getattr(output, f.name)) for f in dataclasses.fields(output)]
    elif isinstance(output, list | tuple):
        items = [(str(index), value) for index, value in enumerate(output)]
        prefix = prefix or SINGLE
    else:
        return []
    return [
        named
        for key, value in items
        for named in named_tensors(value, f"{prefix}_{key}" if prefix else key)
    ]


def is_plain(output: Any) -> bool:
    """A tensor or a flat tuple of tensors: what every exporter takes as it is."""
    import torch

    if isinstance(output, torch.Tensor):
        return True
    return type(output) is tuple and all(isinstance(o, torch.Tensor) for o in output)


def with_tensor_outputs(model, example: tuple):
    """`model` itself when its outputs on `example` are plain, else a module around it that
    returns them as one flat tuple (so the exporter need not know a dict subclass or a
    dataclass)."""
    import torch

    with torch.no_grad():
        if is_plain(model(*example)):
            return model

    class TensorOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return tuple(tensor for _, tensor in named_tensors(self.model(*inputs)))

    return TensorOutputs()


def judged_output(names: list[str], wanted: int | str | None) -> int:
    """The index of the output that `report.output` names (by name or index; the first when
    unset); ConfigError listing the outputs when there is no such one."""
    if wanted is None:
        return 0
    if isinstance(wanted, int) and wanted < len(names):
        return wanted
    if isinstance(wanted, str) and wanted in names:
        return names.index(wanted)
    listed = ", ".join(f"{index}: {name}" for index, name in enumerate(names))
    raise ConfigError(
        f"report.output: the model has no output {wanted!r}; its outputs are {listed}; "
        "give one of these names or indexes"
    )
