"""The speed guard (`on_slower: revert`) on a decoder exported with its key/value cache times what
a user runs, its decode steps over the cache, even where the config has no report.generation
(its defaults, within the model's positions); the decision, with timings fixed by the test."""

from __future__ import annotations

import json

import pytest

from compress.measure import speed
from tests.helpers.cli import invoke
from tests.helpers.hf_folders import sentences
from tests.helpers.latency import fixed_generation

# the tiny llama has 64 positions: the defaults within them are a 48-token prompt, 16 new tokens
WITHIN_64 = "per decode step at batch 1 after a prompt of 48 tokens"


def write_config(folder, passes: str):
    (folder / "t.txt").write_text("\n".join(sentences(6)) + "\n")
    path = folder / "c.yaml"
    path.write_text(
        "version: 1\ndata:\n  calibration: {path: t.txt, max_length: 16}\n"
        f"passes: [{passes}]\n"
        "report: {batch_sizes: [2], min_runs: 5, min_seconds: 0, max_seconds: 0.2, "
        "warmup_runs: 1}\n"
    )
    return path


@pytest.fixture
def slower_decode_steps(monkeypatch):
    """The guard's timings fixed by the test: a pass's output decodes twice as slowly as its
    input. Kept: which timing ran, and the generation settings of each decode timing."""
    timed: list[tuple[str, object]] = []

    def generation(paths, settings, ids=None, peak_memory=None):
        timed.append(("decode", settings.generation))
        step_ms = {"input": 1.0, "output": 2.0}
        return fixed_generation(lambda name, path: step_ms[name], paths, settings)

    def latency(paths, samples, settings):
        timed.append(("batch", settings.batch_sizes))
        raise AssertionError("a decoder graph is timed on its decode steps, not by the batch")

    monkeypatch.setattr(speed, "measure_generation", generation)
    monkeypatch.setattr(speed, "measure_latency", latency)
    return timed


def guarded_run(hf_folders, folder, passes: str, out: str = "out") -> list[dict]:
    """The stages of a run of the tiny llama with `passes`."""
    config = write_config(folder, passes)
    result = invoke("run", hf_folders["llama"], "-c", config, "-o", folder / out, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["stages"]


def test_the_guard_times_a_decoders_decode_steps_without_report_generation(
    hf_folders, tmp_path, slower_decode_steps
):
    final = guarded_run(hf_folders, tmp_path, "{type: quantize.dynamic, on_slower: revert}")[-1]
    assert final["reverted"] is True
    note = final["details"]["speed_guard"]
    assert note.startswith("reverted: slower than its input") and WITHIN_64 in note
    assert [kind for kind, _ in slower_decode_steps] == ["decode"]
    generation = slower_decode_steps[0][1]
    assert (generation.prompt_tokens, generation.new_tokens) == (48, 16)


def test_with_torch_stages_from_the_cache_the_defaults_still_fit_the_models_positions(
    hf_folders, tmp_path, slower_decode_steps, stage_cache
):
    """The second run does not load the model (its baseline is cached): the positions come
    from what the first run's checks learned of it."""
    guarded_run(hf_folders, tmp_path, "{type: quantize.dynamic, on_slower: revert}", "first")
    slower_decode_steps.clear()
    passes = "{type: quantize.dynamic, per_channel: true, on_slower: revert}"  # a stage anew
    baseline, final = guarded_run(hf_folders, tmp_path, passes, "second")
    assert baseline["from_cache"] is True and final.get("from_cache") is None
    assert WITHIN_64 in final["details"]["speed_guard"]
    assert [kind for kind, _ in slower_decode_steps] == ["decode"]
