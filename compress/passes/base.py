"""Base classes for passes: a pass works on a torch module or on an ONNX file.

Every pass has one lifecycle, in this order, once per run:

1. `check(config)`: its params against the config, before any other file is read (`compress
   validate` stops here).
2. `check_model(model, ctx)`: against the model it will see and the data, before any pass does
   any work. It returns what `apply` needs from that check (a loaded teacher), or None: state
   is handed on, never kept on the pass.
3. `apply(given, ctx) -> PassResult`: the work, on `given` (`PassInput`: the torch module, or
   the ONNX file to read and the one to write, and what check_model returned). The result is
   the new module (torch passes; an ONNX pass's output is the file it wrote) and the details
   the report's stage shows: a record of the pass's own `Details` type, declared next to its
   `Params` (report.json serializes it, and reads it back into the same type by stage name).

A pass whose params are `SpeedGuardParams` has `on_slower`: the pipeline times the stage the pass
wrote against its input, then warns (with the pass's `fix_if_slower`) or keeps the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import ConfigDict, Field

from compress.config import PassParams  # the base of every Params: the config checks them
from compress.errors import PassError
from compress.records import Record

if TYPE_CHECKING:
    from compress.config import LoadedConfig
    from compress.passes.context import PassContext


class SpeedGuardParams(PassParams):
    """`on_slower`, which the pipeline applies to the stage a pass writes: the stage is timed
    against its input; warn names the slowdown (and the pass's fix), revert keeps the input."""

    on_slower: Literal["warn", "revert"] = Field(
        default="warn",
        description="when the pass makes the model slower: warn, or keep its input instead",
    )


class OnnxPassParams(SpeedGuardParams):
    """Parameters every ONNX-stage pass takes."""


class PassDetails(Record):
    """What a pass reports doing, for its stage in report.json. A pass declares a subclass with
    its own fields next to its Params (`Pass.Details`); every field has a default, since a
    stage's details may hold only what the speed guard found."""

    reason: str | None = Field(default=None, description="what the pass did, in one line")
    notes: list[str] = Field(default_factory=list, description="more lines for people")
    speed_guard: str | None = Field(
        default=None, description="on_slower: revert: what timing the stage against its input found"
    )

    def lines(self) -> list[str]:
        """What the report shows people of these details, a line each."""
        return [*self.notes, *([self.reason] if self.reason else [])]

    def table(self, metric: str) -> DetailsTable | None:
        """A table the report shows for the stage (quantize.auto's candidates), if any; `metric`
        names the report's metric."""
        return None

    def budget_miss(self, stage: str, metric: str) -> BudgetMiss | None:
        """How the stage ended over its accuracy budget, if it did (the report warns)."""
        return None


@dataclass(frozen=True)
class DetailsTable:
    """Rows a report draws for a stage, as formatted cells."""

    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class BudgetMiss:
    """A stage over its accuracy budget: `text` says how; `carries_drop` when the model written
    carries the drop (the gate then decides the exit code), not when the pass kept its input."""

    text: str
    carries_drop: bool


class OtherDetails(PassDetails):
    """The details of a pass that declares no type for them (a plugin), or of a pass this
    version does not know (a report read back): any keys."""

    model_config = ConfigDict(extra="allow")


@dataclass
class PassInput:
    """What a pass works on: the torch `module` (torch stage), or the ONNX file `source` it reads
    and `target` it writes (ONNX stage); and what its `check_model` returned (`prepared`)."""

    module: Any = None
    source: Path | None = None
    target: Path | None = None
    prepared: Any = None

    def files(self) -> tuple[Path, Path]:
        """An ONNX pass's `source` and `target` (the pipeline always gives both)."""
        if self.source is None or self.target is None:
            raise PassError("an ONNX pass was given no source or target file")
        return self.source, self.target


@dataclass
class PassResult:
    """What a pass made: the new torch `module` (torch stage; None for an ONNX pass, whose output
    is the file it wrote), and `details` for the report's stage (what was removed, chosen)."""

    module: Any = None
    details: PassDetails | None = None


ParamsT = TypeVar("ParamsT", bound=PassParams)


class Pass(Generic[ParamsT]):
    """A step of the pipeline (see the module's docstring for its lifecycle). Subclasses set
    `stage`, `Params` and `Details` and implement `apply`; a pass is typed by its Params
    (`class Prune(TorchPass[PruneParams])`), so `self.params` is."""

    name: ClassVar[str]
    stage: ClassVar[Literal["torch", "onnx"]]
    Params: ClassVar[type[PassParams]] = PassParams
    Details: ClassVar[type[PassDetails]] = OtherDetails
    fix_if_slower: ClassVar[str] = ""  # what the slower-stage warning suggests, if anything
    # The config keys the pass reads besides its params (dotted: `report.metric`, `gates`): the
    # stage cache key covers their values, and a change to any other key reuses the stage. A
    # pass that does not say (a plugin) is taken to read the report settings and the gates.
    reads: ClassVar[tuple[str, ...]] = ("report", "gates")

    def __init__(self, params: ParamsT, key: str = "passes[0]"):
        self.params: ParamsT = params
        self.key = key  # where the pass sits in the config, for messages: "passes[1]"

    @property
    def on_slower(self) -> Literal["warn", "revert"]:
        """What the pipeline does when this pass's stage is slower than its input."""
        return self.params.on_slower if isinstance(self.params, SpeedGuardParams) else "warn"

    def config_read(self) -> tuple[str, ...]:
        """`reads`, and the report's timing settings when the speed guard may revert the stage."""
        timed = ("report",) if self.on_slower == "revert" else ()
        return tuple(dict.fromkeys((*self.reads, *timed)))

    def check(self, config: LoadedConfig) -> None:
        """Raise ConfigError if the config lacks something this pass needs (before any work)."""

    def check_model(self, model: Any, ctx: PassContext) -> Any:
        """Raise ConfigError if the params do not fit the model this pass will see (a module
        name it lacks) or the data; runs before any pass works. Returns what `apply` needs from
        this check (given to it as `PassInput.prepared`), or None."""
        return None

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        raise NotImplementedError

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


class TorchPass(Pass[ParamsT]):
    """Works on the torch module, before export: `apply` may change `given.module` in place or
    make a new one, and returns it in its PassResult."""

    stage = "torch"

    @property
    def changes_input_model(self) -> bool:
        """Whether `apply` changes the module it is given (so it must be an editable one)."""
        return True

    def model_after(self, module: Any, prepared: Any = None) -> Any:
        """The module the next pass will see, as far as it is known before any work (`prepared`:
        what check_model returned): a pass that replaces the model (distill into a declared
        student) returns the new one."""
        return module


class OnnxPass(Pass[ParamsT]):
    """Works on an ONNX file after export: reads `given.source`, writes `given.target`."""

    stage = "onnx"
