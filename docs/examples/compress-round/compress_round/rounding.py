"""weights.round: the weights of the chosen layers rounded to fewer mantissa bits.

The file keeps float32 tensors, so its size is unchanged; rounded weights share their low
bytes, so it gzips smaller (the report's gzip_bytes), and the model computes almost as before.
"""

from __future__ import annotations

import fnmatch

import torch
from compress.errors import ConfigError
from compress.passes.base import PassDetails, PassInput, PassResult, SpeedGuardParams, TorchPass
from compress.passes.registry import register
from pydantic import Field

WEIGHTED = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


class RoundParams(SpeedGuardParams):
    bits: int = Field(
        default=7, ge=1, le=22, description="mantissa bits kept (float32 has 23, bfloat16 7)"
    )
    layers: list[str] = Field(
        default=["*"], min_length=1, description="module names or glob patterns to round"
    )


class RoundDetails(PassDetails):
    layers: list[str] = Field(default_factory=list, description="the modules rounded")
    weights: int = Field(default=0, description="weight values rounded")
    bits: int = Field(default=0, description="mantissa bits kept")

    def lines(self) -> list[str]:
        rounded = f"rounded {self.weights} weights in {len(self.layers)} layers to {self.bits} bits"
        return [rounded, *super().lines()]


def round_mantissa(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """`weight` with every value rounded to nearest with `bits` bits after the leading one."""
    mantissa, exponent = torch.frexp(weight)  # weight = mantissa * 2**exponent, |mantissa| < 1
    scale = 2.0 ** (bits + 1)
    return torch.ldexp(torch.round(mantissa * scale) / scale, exponent)


@register("weights.round")
class RoundWeights(TorchPass):
    """Round weights to fewer mantissa bits: the file gzips smaller, the outputs barely move.

    Sample YAML:
        - type: weights.round
          bits: 7
    """

    Params = RoundParams
    Details = RoundDetails
    reads = ()  # no config key besides its params: a changed gate or report setting reuses it

    def check_model(self, model, ctx) -> list[str]:
        """The modules to round, by name; refuses patterns that match none (before any work)."""
        weighted = [name for name, m in model.named_modules() if isinstance(m, WEIGHTED)]
        chosen = [n for n in weighted if any(fnmatch.fnmatchcase(n, p) for p in self.params.layers)]
        if not chosen:
            raise ConfigError(
                f"{self.key}.layers: {self.params.layers} matches no Linear or Conv layer; "
                f"the model has {', '.join(weighted) or 'none'}"
            )
        return chosen

    def apply(self, given: PassInput, ctx) -> PassResult:
        modules = dict(given.module.named_modules())
        count = 0
        with torch.no_grad():
            for name in given.prepared:
                weight = modules[name].weight
                weight.copy_(round_mantissa(weight, self.params.bits))
                count += weight.numel()
        ctx.log(f"rounded {count} weights in {len(given.prepared)} layers")
        details = RoundDetails(layers=given.prepared, weights=count, bits=self.params.bits)
        return PassResult(module=given.module, details=details)
