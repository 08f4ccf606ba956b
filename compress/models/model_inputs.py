"""What a saved model tells about its inputs, as `model.inputs` entries: an ONNX graph and a
torch.export program give names, shapes and dtypes; a TorchScript archive gives names only (its
shapes are not recorded); a state_dict gives nothing. Used by `compress init` and `compress bench`.
"""

from __future__ import annotations

from typing import get_args

from compress.config import InputSpec

DTYPES = set(get_args(InputSpec.model_fields["dtype"].annotation))
BATCH = "batch"


def onnx_input_specs(proto) -> list[InputSpec] | None:
    """The graph's inputs; None when one has a dtype or shape `model.inputs` cannot declare. A
    decoder with its cache is fed its token ids and mask, of one length (compress.measure.
    decoder_feeds fills its position ids and an empty cache)."""
    from onnx import helper

    from compress.models.decoder_graph import TOKEN_INPUTS, is_decoder_graph

    values = graph_inputs(proto)
    decoder = is_decoder_graph([value.name for value in values])
    specs = []
    for value in values[:2] if decoder else values:
        tensor = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
        if dtype not in DTYPES or not dims:
            return None
        specs.append(_spec(value.name, dims, dtype))
    if decoder and [spec.name for spec in specs] == list(TOKEN_INPUTS[:2]):
        specs[1] = specs[1].model_copy(update={"shape": specs[0].shape})  # one length: a prefill
    return specs


def program_input_specs(program) -> list[InputSpec] | None:
    """A torch.export program's user inputs, from the example tensors it was traced with."""
    user_inputs = set(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
        if value is None or dtype not in DTYPES or value.dim() == 0:
            return None
        specs.append(
            _spec(node.name, [d if isinstance(d, int) else str(d) for d in value.shape], dtype)
        )
    return specs


def torchscript_input_names(module) -> list[str]:
    """The forward arguments after `self` (TorchScript names them `x.1`)."""
    return [value.debugName().split(".")[0] for value in list(module.graph.inputs())[1:]]


def _spec(name: str, dims: list, dtype: str) -> InputSpec:
    """A symbolic first dim is the batch; other symbolic dims keep their names."""
    dims = [dim or "dim" for dim in dims]  # an ONNX dim with neither value nor name
    if not isinstance(dims[0], int):
        dims[0] = BATCH
    return InputSpec(name=name, shape=dims, dtype=dtype)


def graph_inputs(proto) -> list:
    """The inputs a caller feeds (older exporters also list initializers as inputs)."""
    initializers = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def fixed_batch_sizes(proto) -> set[int]:
    """The batch sizes the graph's inputs insist on; empty when the batch axis is dynamic."""
    return {
        dims[0].dim_value
        for i in graph_inputs(proto)
        if (dims := i.type.tensor_type.shape.dim) and dims[0].HasField("dim_value")
    }


def program_fixed_batch(program) -> int | None:
    """The batch size a torch.export program was specialised to, or None if it is dynamic."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if value is None or node.name not in user_inputs or value.dim() == 0:
            continue  # not a user tensor
        if isinstance(value.shape[0], int):
            return value.shape[0]
    return None
