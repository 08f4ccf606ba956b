"""Latency measurements with timings fixed by the test, for the checks that read them."""

from __future__ import annotations


def fixed_latency(p50: dict[str, float], batch_sizes: list[int], state: str = "quiet"):
    """A latency measurement with each model's timings fixed by the test (every run and round
    at its p50), on a machine in `state`."""
    from compress.measure.interference import MachineLoad
    from compress.measure.latency import ROUNDS, BatchTimings, Latency

    others = 0.0 if state == "quiet" else 1.0
    machine = MachineLoad(
        state=state, other_cpu_cores=others, preemptions_per_s=0.0, load_1m=None, seconds=1.0
    )
    return Latency(
        {
            batch: BatchTimings(
                batch,
                {name: [ms] * ROUNDS for name, ms in p50.items()},
                {name: [ms] * ROUNDS for name, ms in p50.items()},
                True,
                machine,
            )
            for batch in batch_sizes
        }
    )


def slower_after_the_first_stage(paths, samples, settings, carried=None, anchor=None):
    """Latencies fixed by the test: every stage after the first (a pass's output) twice as slow
    (measure_latency's signature; nothing is carried with the cache off)."""
    p50 = {name: 1.0 if i == 0 else 2.0 for i, name in enumerate(paths)}
    return fixed_latency(p50, settings.batch_sizes)
