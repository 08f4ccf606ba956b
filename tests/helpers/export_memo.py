"""make test's torch -> ONNX exports, each made once per session.

The tests export the same models again and again: the digits CNN program in some 70 runs, the
tiny LLaMA decoder folder in seven (about 8 s each, most of its test time). `ExportMemo` keeps
the file the first export of a model wrote, under a key that holds everything the export reads:
the model's code (a program's or graph module's graph, else the source files of each module class),
its attributes and config, every weight, the format, the inputs' shapes and dtypes, the names
and the export section. A decoder is traced on a step of its own shape, with its cache's names,
so for it neither the example's shapes nor the names given are in the key. An export with the
same key is a copy of that file. The example's values are not in the key: torch.export traces
shapes, and a graph that depended on the values would be refused as data-dependent. Models it
cannot key (TorchScript, modules with hooks, classes without source) and exports with an
external data file are made as usual, every time; so is every export in a child process (the
CLI tests that run `compress` as a program).

The memo folder lives in the session's temporary folder, shared by make test's workers (a file
is published by rename, so a worker reads a whole one or none) and gone with the session."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

_MODULE_INTERNALS = {
    "_parameters",
    "_buffers",
    "_modules",
    "_non_persistent_buffers_set",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_is_full_backward_hook",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_compiled_call_impl",
}
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class Unkeyed(Exception):
    """The model holds something the key cannot describe: export it as usual."""


def model_key(model, fmt: str, example: list[np.ndarray], names: tuple, section) -> str:
    """The key of one export (raises Unkeyed)."""
    import torch

    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            digest.update(repr(part).encode())
            digest.update(b"\0")

    from compress.models.program_decoder import is_cached_decoder

    if is_cached_decoder(model):  # exported on a step of its own (or as saved), names its own
        add(fmt, example[0].dtype.str, section.model_dump())
    else:
        add(fmt, [(a.shape, a.dtype.str) for a in example], names, section.model_dump())
    if isinstance(model, torch.export.ExportedProgram):
        add(model.graph_module.code, str(model.graph_signature), str(model.range_constraints))
        constants = model.constants.items()
        add(sorted((k, repr(v)) for k, v in constants if not isinstance(v, torch.Tensor)))
        tensors = {**model.state_dict, **{k: v for k, v in constants if torch.is_tensor(v)}}
    elif isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        for name, module in model.named_modules():
            add(name, *_module_parts(module))
        tensors = model.state_dict(keep_vars=False)
    else:
        raise Unkeyed(type(model).__name__)
    for name, tensor in sorted(tensors.items()):
        values = tensor.detach().cpu().contiguous()
        add(name, str(values.dtype), tuple(values.shape))
        digest.update(
            values.reshape(-1).view(torch.uint8).numpy().tobytes() if values.numel() else b""
        )
    return digest.hexdigest()


def _module_parts(module) -> list[object]:
    """What one module's forward depends on besides its weights."""
    import torch

    if any(getattr(module, hooks, None) for hooks in _HOOKS):
        raise Unkeyed("hooks")
    kind = type(module)
    code = module.code if isinstance(module, torch.fx.GraphModule) else _class_files(kind)
    attributes = sorted((k, repr(v)) for k, v in vars(module).items() if k not in _MODULE_INTERNALS)
    config = getattr(module, "config", None)
    settings = config.to_json_string() if hasattr(config, "to_json_string") else None
    implementation = getattr(config, "_attn_implementation", None)
    return [kind.__module__, kind.__qualname__, code, attributes, settings, implementation]


@functools.cache
def _class_files(kind: type) -> str:
    """The digest of the source files of `kind` and of its bases below torch.nn.Module (whole
    files: inspect.getsource parses a module to find one class, 0.1 s in a transformers file)."""
    own = [c for c in kind.__mro__ if c.__module__ not in {"builtins", "torch.nn.modules.module"}]
    try:
        files = sorted({inspect.getsourcefile(c) or "" for c in own})
        if "" in files:
            raise TypeError("no source file")
        return "".join(_file_digest(f) for f in files)
    except (OSError, TypeError) as e:
        raise Unkeyed(f"{kind.__qualname__}: no source") from e


@functools.cache
def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ExportMemo:
    """`wrap(export_to_onnx)`: the same call, made once per key in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def wrap(self, export: Callable) -> Callable:
        from compress.models.onnx_files import data_file, needs_external_data

        def export_once(model, fmt, example, input_names, output_names, target, section):
            arguments = (model, fmt, example, input_names, output_names, target, section)
            if needs_external_data(model):
                return export(*arguments)
            try:
                names = (tuple(input_names), tuple(output_names))
                made = self.folder / f"{model_key(model, fmt, example, names, section)}.onnx"
            except Unkeyed:
                return export(*arguments)
            said = made.with_suffix(".note")  # what the export said for the log, if anything
            if made.exists():
                Path(target).write_bytes(made.read_bytes())
                return said.read_text() if said.exists() else None
            note = export(*arguments)
            if not data_file(Path(target)).exists():
                if note:  # written before the model: a reader that finds the model finds it
                    partial = said.with_suffix(f".{os.getpid()}.notepart")
                    partial.write_text(note)
                    partial.replace(said)
                partial = made.with_suffix(f".{os.getpid()}.part")
                partial.write_bytes(Path(target).read_bytes())
                partial.replace(made)
            return note

        return export_once
