"""A decoder's generation, timed in ONNX Runtime: what a user of a language model waits for.

A greedy loop over the key/value cache (`generate`): a prefill over the prompt, which gives the
first new token, then one token at a time, each step fed the cache the previous one wrote. The
prefill and every decode step are timed apart; tokens per second is the decode rate at the
median step (batch x 1000 / decode p50 ms).

Stages are timed as latency is (compress.measure.latency): interleaved rounds - one whole
generation per stage per round - with the machine watched, until every stage's decode median
settles within `report.stable_within` or `report.max_seconds` (per batch size) have passed.
Speedups are paired over the rounds' medians, with their intervals.

Peak memory is a process's: each stage generates once more in a process of its own
(compress.measure.peak_memory), whose peak resident set is the stage's.

A stage timed in an earlier run on this machine (reused from the stage cache) is carried, as
latency is: its figures and its decode speed against the anchor (the baseline, always timed
again) in the rounds it was timed in; a speedup with it goes through the anchor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from compress.config import GenerationSection, ReportSection
from compress.measure.decoder_feeds import Declared, completed_feeds, session_inputs
from compress.measure.interference import CpuWatch, MachineLoad
from compress.measure.latency import (
    Anchored,
    RoundSpread,
    Speedup,
    anchored_speedup,
    median_is_stable,
    paired_speedup,
    pinned,
    timed_against,
)
from compress.measure.runtime import open_session
from compress.models.decoder_graph import PAST_PREFIX, PRESENT_PREFIX, is_decoder_graph
from compress.records import Amount, Count, Record


class GenerationFigures(Record):
    """One stage's generation at one batch size (report.json's `generation` of a stage)."""

    prefill_ms: Amount = Field(description="median prefill over the prompt, ms")
    decode_ms_p50: Amount = Field(description="median decode step (one token per row), ms")
    decode_ms_p90: Amount
    tokens_per_second: Amount = Field(description="batch x 1000 / decode_ms_p50")
    rounds: Count
    stable: bool = Field(description="its decode median settled, on a machine not found busy")
    peak_rss_mb: Amount | None = Field(
        default=None, description="peak resident memory of a process that loads it and generates"
    )


@dataclass(frozen=True)
class Generated:
    """One greedy generation: its timings and the tokens it chose [batch, new_tokens]."""

    prefill_ms: float
    decode_ms: list[float]
    tokens: np.ndarray


def check_decoder(session, name: str) -> list[Declared]:
    """The graph's inputs; ValueError naming the stage when it is no decoder with a cache."""
    declared = session_inputs(session)
    if not is_decoder_graph([n for n, _, _ in declared]):
        raise ValueError(
            f"stage {name} takes no key/value cache (input_ids, attention_mask, position_ids, "
            "past_key_values.*): report.generation times a decoder"
        )
    return declared


def generate(session, declared: list[Declared], prompt: np.ndarray, new_tokens: int) -> Generated:
    """Greedy generation of `new_tokens` after `prompt` [batch, tokens], timed step by step."""
    batch, length = prompt.shape
    outputs = [o.name for o in session.get_outputs()]
    feed = completed_feeds(declared, [prompt, np.ones_like(prompt)])
    began = time.perf_counter()
    values = session.run(outputs, feed)
    prefill_ms = (time.perf_counter() - began) * 1000
    chosen = [values[0][:, -1].argmax(-1)]
    decode_ms = []
    for step in range(1, new_tokens):
        total = length + step
        feed = {
            "input_ids": chosen[-1][:, None].astype(np.int64),
            "attention_mask": np.ones((batch, total), np.int64),
            "position_ids": np.full((batch, 1), total - 1, np.int64),
        }
        for name, value in zip(outputs[1:], values[1:], strict=True):
            feed[PAST_PREFIX + name.removeprefix(PRESENT_PREFIX)] = value
        began = time.perf_counter()
        values = session.run(outputs, feed)
        decode_ms.append((time.perf_counter() - began) * 1000)
        chosen.append(values[0][:, -1].argmax(-1))
    return Generated(prefill_ms, decode_ms, np.stack(chosen, axis=1))


def prompt_ids(ids: np.ndarray | None, batch: int, tokens: int, vocab: int) -> np.ndarray:
    """`batch` prompts of `tokens` ids: the data's token ids, cycled, where there are any;
    else fixed pseudo-random ids within the vocabulary (a step's cost does not depend on them)."""
    if ids is not None and ids.size:
        flat = np.resize(ids.reshape(-1).astype(np.int64), batch * tokens)
        return flat.reshape(batch, tokens)
    rng = np.random.default_rng(0)
    return rng.integers(0, max(vocab, 1), (batch, tokens)).astype(np.int64)


def vocabulary(session) -> int:
    """The logits' last axis, when the graph fixes it (0: unknown)."""
    last = session.get_outputs()[0].shape[-1]
    return last if isinstance(last, int) else 0


class CarriedGeneration(Record):
    """A stage's generation at one batch size, as a later run carries it (and the stage cache
    keeps it): its figures, and its decode speed against the anchor timed in the same rounds
    (anchor decode p50 / its decode p50)."""

    figures: GenerationFigures
    decode_vs_anchor: float
    spread: RoundSpread


@dataclass
class GenerationTimings:
    """Every stage's generations at one batch size, in interleaved rounds; `carried`: stages
    timed in an earlier run, compared through `anchor` (timed in these rounds)."""

    batch: int
    prefill: dict[str, list[float]]  # ms of each round's prefill, per stage
    decode: dict[str, list[float]]  # ms of every decode step, per stage
    decode_rounds: dict[str, list[float]]  # each round's median decode step, per stage
    settled: bool
    machine: MachineLoad
    peak_rss_mb: dict[str, float | None] = field(default_factory=dict)
    anchor: str | None = None
    carried: dict[str, CarriedGeneration] = field(default_factory=dict)

    def figures(self, name: str) -> GenerationFigures:
        if name in self.carried:
            return self.carried[name].figures
        decode_p50, decode_p90 = np.percentile(self.decode[name], [50, 90])
        return GenerationFigures(
            prefill_ms=round(float(np.median(self.prefill[name])), 4),
            decode_ms_p50=round(float(decode_p50), 4),
            decode_ms_p90=round(float(decode_p90), 4),
            tokens_per_second=round(self.batch * 1000 / float(decode_p50), 3),
            rounds=len(self.prefill[name]),
            stable=self.settled and not self.machine.busy,
            peak_rss_mb=self.peak_rss_mb.get(name),
        )

    def decode_speedup(self, reference: str, name: str) -> Speedup:
        """`name`'s decode speedup over `reference`, paired over their rounds; through the
        anchor where one of them was carried from an earlier run."""
        if reference in self.decode and name in self.decode:
            point = self._decode_p50(reference) / self._decode_p50(name)
            return paired_speedup(self.decode_rounds[reference], self.decode_rounds[name], point)
        return anchored_speedup(self._against_anchor(reference), self._against_anchor(name))

    def _against_anchor(self, name: str) -> Anchored:
        if name in self.carried:
            return self.carried[name].decode_vs_anchor, self.carried[name].spread
        return timed_against(self.anchor, name, self._decode_p50, self.decode_rounds)

    def _decode_p50(self, name: str) -> float:
        return float(np.median(self.decode[name]))

    def carry(self, name: str) -> CarriedGeneration:
        """What a later run needs to carry `name`'s generation at this batch size."""
        ratio, spread = self._against_anchor(name)
        return CarriedGeneration(
            figures=self.figures(name), decode_vs_anchor=ratio,
            spread=spread or RoundSpread(0.0, 0),
        )  # fmt: skip


@dataclass
class Generation:
    """What `measure_generation` measured: each batch size's timings."""

    settings: GenerationSection
    batches: dict[int, GenerationTimings] = field(default_factory=dict)

    def busy(self) -> list[GenerationTimings]:
        return [t for t in self.batches.values() if t.machine.busy]


def measure_generation(
    paths: dict[str, Path],
    settings: ReportSection,
    ids: np.ndarray | None = None,
    peak_memory: Callable[[Path, np.ndarray, int], float | None] | None = None,
    carried: dict[str, dict[int, CarriedGeneration]] | None = None,
    anchor: str | None = None,
) -> Generation:
    """Every stage's greedy generation at each of report.generation's batch sizes, in
    interleaved rounds with the machine watched; prompts from the data's token `ids` where
    given. `peak_memory(path, prompt, new_tokens)`: a stage's peak RSS, in MB. `carried`
    stages (by batch size) are not timed again; speedups with them go through `anchor`."""
    carried = carried or {}
    wanted = settings.generation
    assert wanted is not None
    sessions = {name: open_session(path, settings.threads) for name, path in paths.items()}
    declared = {name: check_decoder(s, name) for name, s in sessions.items()}
    vocab = vocabulary(next(iter(sessions.values())))
    measured = Generation(wanted)
    with pinned(settings):
        for batch in wanted.batch_sizes:
            prompt = prompt_ids(ids, batch, wanted.prompt_tokens, vocab)
            with CpuWatch() as watch:
                prefill, decode, rounds, settled = _interleaved(
                    sessions, declared, prompt, wanted, settings
                )
            here = {name: by_batch[batch] for name, by_batch in carried.items()}
            timings = GenerationTimings(
                batch, prefill, decode, rounds, settled, watch.load, anchor=anchor, carried=here
            )
            if peak_memory is not None and wanted.peak_memory:
                timings.peak_rss_mb = {
                    name: peak_memory(path, prompt, wanted.new_tokens)
                    for name, path in paths.items()
                }
            measured.batches[batch] = timings
    return measured


def _interleaved(sessions, declared, prompt, wanted: GenerationSection, settings: ReportSection):
    """Rounds of one generation per stage, until each stage's decode median settles (or time
    runs out, past the minimum rounds); after one generation each to warm up."""
    for name, session in sessions.items():
        generate(session, declared[name], prompt, min(wanted.new_tokens, 4))
    prefill: dict[str, list[float]] = {name: [] for name in sessions}
    decode: dict[str, list[float]] = {name: [] for name in sessions}
    rounds: dict[str, list[float]] = {name: [] for name in sessions}
    began = time.perf_counter()
    while True:
        for name, session in sessions.items():
            generated = generate(session, declared[name], prompt, wanted.new_tokens)
            prefill[name].append(generated.prefill_ms)
            decode[name] += generated.decode_ms
            rounds[name].append(float(np.median(generated.decode_ms)))
        if len(next(iter(rounds.values()))) < wanted.min_rounds:
            continue
        if all(median_is_stable(ms, settings.stable_within) for ms in decode.values()):
            return prefill, decode, rounds, True
        if time.perf_counter() - began >= settings.max_seconds:
            return prefill, decode, rounds, False
