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


def fixed_generation(step_ms, paths, settings):
    """A generation measurement (measure_generation's result for `paths` under the report
    `settings`) whose every decode step of a model takes `step_ms(name, path)` ms, on a quiet
    machine."""
    from compress.measure.generation import Generation, GenerationTimings
    from compress.measure.interference import MachineLoad

    wanted = settings.generation
    rounds, steps = wanted.min_rounds, wanted.new_tokens - 1
    machine = MachineLoad(
        state="quiet", other_cpu_cores=0.0, preemptions_per_s=0.0, load_1m=None, seconds=1.0
    )
    ms = {name: step_ms(name, path) for name, path in paths.items()}
    measured = Generation(wanted)
    for batch in wanted.batch_sizes:
        measured.batches[batch] = GenerationTimings(
            batch,
            {name: [10 * m] * rounds for name, m in ms.items()},
            {name: [m] * (rounds * steps) for name, m in ms.items()},
            {name: [m] * rounds for name, m in ms.items()},
            True,
            machine,
        )
    return measured
