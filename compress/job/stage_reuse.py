"""Which stages of a run come from the stage cache (compress.cache), and storing the others.

A stage is reused only where the run can go on from it: the baseline (the loaded model is the
torch passes' input anyway), or a stage at or after the last torch pass (only ONNX passes, which
read the stage's file, follow). A torch stage before another torch pass is recomputed, since
the next one needs the module in memory and the cache holds ONNX files, never pickles. The
longest prefix of stages all found in the cache, ending at a stage that can be reused, is
skipped; from there each stage is computed under its key's lock, so a second process waiting on
the same stage reuses it instead of computing it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from compress.cache.store import StageCache
from compress.config import LoadedConfig
from compress.job.preflight import ModelFacts
from compress.measure.environment import machine_fingerprint
from compress.measure.generation import CarriedGeneration, Generation
from compress.measure.latency import Carried, Latency
from compress.measure.size import Footprint
from compress.passes.base import Pass, PassDetails
from compress.passes.registry import details_type
from compress.records import Record
from compress.report.model import Metric


@dataclass
class StageFile:
    """The ONNX file of one stage; `reverted` when the speed guard kept the pass's input;
    `details` what the pass says it did (candidates tried, nodes kept in float)."""

    name: str
    path: Path
    reverted: bool = False
    details: PassDetails | None = None
    fix_if_slower: str = ""  # what the report's slower-stage warning suggests
    from_cache: bool = False  # reused from the stage cache, not computed in this run
    figures: CachedFigures | None = None  # reused: its footprint and metric, measured before
    model: ModelFacts | None = None  # the baseline's: what the checks learned of the model

    def meta(self) -> dict[str, Any]:
        """What the stage cache keeps of it besides the file."""
        details = self.details.written() if self.details is not None else None
        meta = {
            "name": self.name,
            "reverted": self.reverted,
            "details": details,
            "fix_if_slower": self.fix_if_slower,
        }
        return meta | ({"model": self.model.written()} if self.model is not None else {})


Timed = TypeVar("Timed")  # a stage's timing at one batch size, as carried


class CacheMiss(Exception):
    """A stage planned from the cache went missing (evicted by another process meanwhile)."""


@dataclass
class StageReuse:
    """The run's stages in order (`order`: None for the baseline, else the pass's index: torch
    passes first), their keys, and the last stage taken from the cache (`skip_to`; -1: none)."""

    order: list[int | None]
    torch_stages: int = 0
    cache: StageCache | None = None
    keys: list[str] = field(default_factory=list)
    skip_to: int = -1
    log: Callable[[str], None] = lambda message: None
    fetched: dict[int, StageFile] = field(default_factory=dict)  # taken out before the run
    model_sha256: str | None = None  # the model file's, hashed for the keys
    measure_key: str = ""  # what figures are measured under (compress.cache.keys.measure_key)

    @classmethod
    def plan(
        cls,
        config: LoadedConfig,
        passes: list[Pass[Any]],
        model_path: Path,
        model_sha256: str | None,
        cache: StageCache | None,
        log: Callable[[str], None] = lambda message: None,
    ) -> StageReuse:
        torch_first = [i for i, p in enumerate(passes) if p.stage == "torch"]
        onnx_after = [i for i, p in enumerate(passes) if p.stage == "onnx"]
        reuse = cls([None, *torch_first, *onnx_after], len(torch_first))
        if cache is None:
            return reuse
        from compress.cache.keys import measure_key, stage_keys

        reuse.cache, reuse.log, reuse.model_sha256 = cache, log, model_sha256
        order = torch_first + onnx_after
        reuse.keys = stage_keys(model_path, config, passes, order, model_sha256)
        reuse.measure_key = measure_key(config)
        present = 0
        while present < len(reuse.keys) and cache.has(reuse.keys[present]):
            present += 1
        reuse.skip_to = max((s for s in range(present) if reuse.resumable(s)), default=-1)
        return reuse

    def resumable(self, step: int) -> bool:
        """Whether the run can go on from stage `step` without the module in memory."""
        return step == 0 or step >= self.torch_stages

    def model_facts(self, work: Path) -> ModelFacts | None:
        """What the checks learned of the model, where every torch stage comes from the cache
        (so the run needs no model in memory) and the baseline's entry keeps them; else None."""
        if self.skip_to < self.torch_stages:
            return None
        try:
            baseline = self.fetched[0] = self.reused(0, work)
        except CacheMiss:
            return None
        facts = baseline.model
        return facts if facts is not None and facts.fit(baseline.path) else None

    def reused(self, step: int, work: Path) -> StageFile:
        """Stage `step` from the cache (planned: it was there)."""
        if step in self.fetched:
            return self.fetched.pop(step)
        found = self._get(step, work)
        if found is None:
            raise CacheMiss(step)
        return found

    @contextlib.contextmanager
    def computing(self, step: int, work: Path) -> Iterator[StageFile | None]:
        """Around computing stage `step`: yields it from the cache when another process stored
        it meanwhile (only where the run can go on from it), else None."""
        if self.cache is None or not self.resumable(step):
            yield None
            return
        with self.cache.computing(self.keys[step]):
            yield self._get(step, work)

    def store(self, step: int, stage: StageFile) -> None:
        if self.cache is not None:
            self.cache.put(self.keys[step], stage.path, stage.meta())

    def annotate(self, step: int, figures: CachedFigures) -> None:
        """Keep the figures measured for stage `step` with its entry, for a later run."""
        if self.cache is not None:
            figures = figures.model_copy(update={"measured_under": self.measure_key})
            self.cache.annotate(self.keys[step], {"figures": figures.written()})

    def _get(self, step: int, work: Path) -> StageFile | None:
        """Stage `step` from the cache, or None: none there, or an entry.json this version cannot
        read (another version wrote it, or someone edited it): then the stage is computed."""
        if self.cache is None:
            return None
        hit = self.cache.get(self.keys[step], work / f"cached{step}.onnx")
        if hit is None:
            return None
        try:
            entry = CachedStage.read(hit.meta)
            record = (
                details_type(entry.name).read(entry.details) if entry.details is not None else None
            )
        except ValueError:  # pydantic's ValidationError is one: drop it, so it is written anew
            hit.path.unlink(missing_ok=True)
            self.cache.discard(self.keys[step])
            return None
        self.log(f"stage {step} ({entry.name}): reused from the stage cache")
        figures = entry.figures
        if figures is not None and figures.measured_under != self.measure_key:
            figures = CachedFigures(footprint=figures.footprint)  # other report settings or data
        return StageFile(
            entry.name, hit.path, entry.reverted, record, entry.fix_if_slower or "",
            from_cache=True, figures=figures, model=entry.model,
        )  # fmt: skip


class CachedLatency(Record):
    """A stage's timing at every batch size (its speed against the baseline timed with it, see
    compress.measure.latency's docstring), and the machine it is valid on."""

    machine: dict[str, Any]
    batches: dict[str, Carried]

    @classmethod
    def of(cls, latency: Latency, key: str) -> CachedLatency | None:
        """`key`'s timing in `latency`, where it is worth carrying: settled, on a quiet machine,
        at every batch size; else None."""
        batches = _worth_carrying(latency.batches, key, lambda carried: carried.stats.stable)
        return None if batches is None else cls(machine=machine_fingerprint(), batches=batches)

    def carried(self, batch_sizes: list[int]) -> dict[int, Carried] | None:
        """The timing to carry into this run at these batch sizes; None where it was taken on
        another machine or lacks one of them."""
        return _valid_here(self.machine, self.batches, batch_sizes)


class CachedGeneration(Record):
    """A stage's generation at every batch size of report.generation (its decode speed against
    the baseline timed with it, see compress.measure.generation), and the machine it is valid
    on."""

    machine: dict[str, Any]
    batches: dict[str, CarriedGeneration]

    @classmethod
    def of(cls, generation: Generation, key: str) -> CachedGeneration | None:
        """`key`'s generation, where it is worth carrying: settled, on a quiet machine, at every
        batch size; else None."""
        batches = _worth_carrying(generation.batches, key, lambda carried: carried.figures.stable)
        return None if batches is None else cls(machine=machine_fingerprint(), batches=batches)

    def carried(self, batch_sizes: list[int]) -> dict[int, CarriedGeneration] | None:
        """The generation to carry into this run at these batch sizes; None where it was timed
        on another machine or lacks one of them."""
        return _valid_here(self.machine, self.batches, batch_sizes)


def _worth_carrying(
    by_batch: dict[int, Any], key: str, stable: Callable[[Any], bool]
) -> dict[str, Any] | None:
    """`key`'s timing at each batch size (`carry` of each batch's timings), where every one is
    `stable`; else None."""
    carried = {str(batch): timings.carry(key) for batch, timings in by_batch.items()}
    return carried if all(stable(timing) for timing in carried.values()) else None


def _valid_here(
    machine: dict[str, Any], batches: dict[str, Timed], batch_sizes: list[int]
) -> dict[int, Timed] | None:
    """`batches` by batch size where they were timed on this machine at every one of
    `batch_sizes`, else None."""
    if machine != machine_fingerprint() or any(str(b) not in batches for b in batch_sizes):
        return None
    return {b: batches[str(b)] for b in batch_sizes}


class CachedFigures(Record):
    """What was measured of a stage: its footprint, which depends on the stage's file alone; its
    metric, valid under the report settings and eval data it was measured with
    (`measured_under`, compress.cache.keys.measure_key); and its latency and generation, valid
    under those and on the machine that timed them."""

    footprint: Footprint | None = None
    metric: Metric | None = None
    latency: CachedLatency | None = None
    generation: CachedGeneration | None = None
    measured_under: str | None = None


class CachedStage(Record):
    """A cache entry's entry.json, as this version reads it."""

    name: str
    reverted: bool = False
    fix_if_slower: str | None = None
    details: dict[str, Any] | None = None
    figures: CachedFigures | None = None
    model: ModelFacts | None = None  # the baseline's
