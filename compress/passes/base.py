"""Base classes for passes: a pass works on a torch module or on an ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from compress.config import LoadedConfig
    from compress.context import Context


class PassParams(BaseModel):
    """Parameters of a pass; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # as the config's sections


class SpeedGuardParams(PassParams):
    """`on_slower`, which the pipeline applies to the stage a pass writes: the stage is timed
    against its input; warn names the slowdown (and the pass's fix), revert keeps the input."""

    on_slower: Literal["warn", "revert"] = Field(
        default="warn",
        description="when the pass makes the model slower: warn, or keep its input instead",
    )


class OnnxPassParams(SpeedGuardParams):
    """Parameters every ONNX-stage pass takes."""


class Pass:
    """A step of the pipeline. Subclasses set `stage`, `Params` and implement `apply`."""

    name: ClassVar[str]
    stage: ClassVar[Literal["torch", "onnx"]]
    Params: ClassVar[type[PassParams]] = PassParams

    def __init__(self, params: PassParams, key: str = "passes[0]"):
        self.params = params
        self.key = key  # where the pass sits in the config, for messages: "passes[1]"

    def check(self, config: LoadedConfig) -> None:
        """Raise ConfigError if the config lacks something this pass needs (before any work)."""

    def require_data(
        self, config: LoadedConfig, source: Literal["calibration", "eval"], why: str
    ) -> None:
        """Refuse the config without data.`source`; `why` begins the message ("... needs it")."""
        from compress.errors import ConfigError

        if getattr(config.config.data, source) is None:
            raise ConfigError(
                f"{why}; add data: {{{source}: {{path: ..., inputs: [...]}}}} to the config"
            )

    def require_eval_for_budget(self, config: LoadedConfig) -> None:
        """Refuse a pass's own max_accuracy_drop without data.eval to measure the drop on."""
        if getattr(self.params, "max_accuracy_drop", None) is not None:
            why = f"{self.key}.max_accuracy_drop needs data.eval to measure the drop"
            self.require_data(config, "eval", why)

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class TorchPass(Pass):
    """Works on the torch module, before export: `apply` may change it in place or return a new
    one, and returns it with details for the report's stage (what was removed, fine-tuned)."""

    stage = "torch"
    fix_if_slower: ClassVar[str] = ""  # what the slower-stage warning suggests, if anything

    @property
    def changes_input_model(self) -> bool:
        """Whether `apply` changes the module it is given (so it must be an editable one)."""
        return True

    def check_module(self, module, ctx: Context) -> None:
        """Raise ConfigError if the params do not fit this model (e.g. a module name it lacks);
        runs before any work, with the datasets loaded."""

    def model_after(self, module):
        """The module the next pass will see, as far as it is known before any work: a pass that
        replaces the model (distill into a declared student) returns the new one."""
        return module

    def apply(self, model, ctx: Context) -> tuple[Any, dict[str, Any] | None]:
        raise NotImplementedError


class OnnxPass(Pass):
    """Works on an ONNX file after export: reads `source`, writes `target`.

    `apply` may return details for the report's stage (what was tried, kept in float, chosen).
    """

    stage = "onnx"

    def apply(self, source: Path, target: Path, ctx: Context) -> dict[str, Any] | None:
        raise NotImplementedError
