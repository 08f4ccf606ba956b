"""Module names for `ignore` lists: glob patterns matched against a model's modules, and the
modules to name when a pruned model fails or torch-pruning cannot follow one (those that
compute attention: call a softmax), so a message can say exactly what to ignore."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from fnmatch import fnmatchcase

from compress.errors import ConfigError

ATTENTION_CALLS = ("softmax", "scaled_dot_product_attention")


def matching_names(module, patterns: list[str], key: str) -> list[str]:
    """The names of `module`'s submodules that the fnmatch-style `patterns` match (an exact name
    matches itself); a pattern that matches nothing is refused with the closest names."""
    names = [name for name, _ in module.named_modules() if name]
    found: list[str] = []
    for pattern in patterns:
        matched = [name for name in names if fnmatchcase(name, pattern)]
        if not matched:
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.4)
            hint = f"close names: {', '.join(close)}" if close else "no module has a close name"
            raise ConfigError(f"{key}: no module of the model matches {pattern!r}; {hint}")
        found += [name for name in matched if name not in found]
    return found


@contextlib.contextmanager
def running_modules(model) -> Iterator[list]:
    """While inside, the returned list holds the modules whose forward is running, outermost
    first (hooks on every module, removed on exit)."""
    running: list = []

    def enter(module, inputs) -> None:
        running.append(module)

    def leave(module, inputs, output) -> None:
        running.pop()

    hooks = [m.register_forward_pre_hook(enter) for m in model.modules()]
    hooks += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        yield running
    finally:
        for hook in hooks:
            hook.remove()


def failing_modules(model, inputs: tuple) -> list[str] | None:
    """If `model(*inputs)` raises, the module it raised in and every module of the same type (the
    same code fails the same way); None when it runs."""
    import torch

    with running_modules(model) as running:
        try:
            with torch.no_grad():
                model(*inputs)
            return None
        except Exception:  # noqa: BLE001 - any failure: the modules still running are the culprits
            return same_type_names(model, running[-1]) if running[1:] else []


def same_type_names(model, culprit) -> list[str]:
    """The module whose own code holds `culprit` (`culprit` itself, or the nearest module above it
    whose class is not torch's: a Linear fails because its attention's code fixes a shape), first,
    then every other module of that exact type."""
    named = dict(model.named_modules())
    name = next(name for name, m in named.items() if m is culprit)
    while is_torch_layer(named[name]) and "." in name:
        name = name.rsplit(".", 1)[0]
    owner = named[name]
    return [name] + [n for n, m in named.items() if type(m) is type(owner) and n not in ("", name)]


def is_torch_layer(module) -> bool:
    return type(module).__module__.startswith("torch.")


def traceback_modules(model, error: BaseException) -> list[str]:
    """The model's modules that the innermost frame of `error`'s traceback holding one was
    working on (torch-pruning's pruners take the layer as an argument), with their same-type
    kin; [] when no frame held one."""
    by_id = {id(m): m for m in model.modules()}
    culprit, tb = None, error.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if id(value) in by_id and value is not model:
                culprit = value
        tb = tb.tb_next
    return same_type_names(model, culprit) if culprit is not None else []


def ignore_advice(names: list[str]) -> str:
    """'add X, Y to ignore' with the exact names."""
    return f"add {', '.join(names)} to ignore"


def attention_modules(model, inputs: tuple) -> list[str]:
    """The model's own modules (not torch layers) that call a softmax or
    scaled_dot_product_attention, in call order; a model that stops: those seen until then."""
    import torch
    from torch.overrides import TorchFunctionMode

    names = {id(m): n for n, m in model.named_modules()}
    found: list[str] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            own = [m for m in running if not is_torch_layer(m)]
            name = names[id(own[-1])] if own else ""
            if name and name not in found and getattr(func, "__name__", "") in ATTENTION_CALLS:
                found.append(name)
            return func(*args, **(kwargs or {}))

    with (
        running_modules(model) as running,
        Watch(),
        torch.no_grad(),
        contextlib.suppress(Exception),
    ):
        model(*inputs)
    return found
