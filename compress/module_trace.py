"""Which of the model's own modules did something, so an error can name the layers to `ignore`:
the one a failing forward pass was in, and the ones that compute attention (call a softmax)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

ATTENTION_CALLS = ("softmax", "scaled_dot_product_attention")


@contextlib.contextmanager
def _running_modules(model: nn.Module):
    """The stack of modules running now, innermost last, while the block runs."""
    running: list = []

    def leave(module, args, output) -> None:  # a hook that returned a value would replace output
        running.pop()

    hooks = []
    for module in model.modules():
        hooks.append(module.register_forward_pre_hook(lambda m, args: running.append(m)))
        hooks.append(module.register_forward_hook(leave))
    try:
        yield running
    finally:
        for hook in hooks:
            hook.remove()


def _innermost_own(model: nn.Module, running: list) -> str | None:
    """The name of the innermost running module of the model's own code (not a torch layer)."""
    own = [m for m in running if not type(m).__module__.startswith("torch.")]
    names = {id(m): n for n, m in model.named_modules()}
    return (names[id(own[-1])] or None) if own else None


def failing_module(model: nn.Module, inputs: tuple) -> tuple[str | None, Exception | None]:
    """Run `model`; on an error, the innermost own module that was running, and the error;
    (None, None) when it runs."""
    import torch

    with _running_modules(model) as running:
        try:
            with torch.no_grad():
                model(*inputs)
        except Exception as e:
            return _innermost_own(model, running), e
    return None, None


def attention_modules(model: nn.Module, inputs: tuple) -> list[str]:
    """The own modules that call a softmax or scaled_dot_product_attention, in call order."""
    import torch
    from torch.overrides import TorchFunctionMode

    found: list[str] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = _innermost_own(model, running)
            if name and name not in found and getattr(func, "__name__", "") in ATTENTION_CALLS:
                found.append(name)
            return func(*args, **(kwargs or {}))

    # a model that does not run: the modules seen until it stopped
    with (
        _running_modules(model) as running,
        Watch(),
        torch.no_grad(),
        contextlib.suppress(Exception),
    ):
        model(*inputs)
    return found


def named_attention(model: nn.Module, inputs: tuple, most: int = 6) -> str:
    """': layers.0.attn, layers.1.attn' for an error message, or '' when no module attends."""
    names = attention_modules(model, inputs)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f": {', '.join(names[:most])}{more}" if names else ""
