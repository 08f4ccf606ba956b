"""Which shape models are timed against each other in (compress.measure.speed): one rule for
compress bench, the speed guard, quantize.auto and quantize.int4's accuracy_level: auto. A
decoder graph is timed on its decode steps, with report.generation or its defaults within the
model's positions; any other model at the first batch size. Timings are fixed by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.config import GenerationSection, ReportSection
from compress.measure import speed
from compress.measure.speed import BatchCheck, DecodeCheck, generation_timing, model_timer
from tests.helpers.latency import fixed_generation, fixed_latency

SET = GenerationSection(prompt_tokens=8, new_tokens=4, min_rounds=2)
PATHS = {"input": Path("input.onnx"), "output": Path("output.onnx")}


def test_a_model_without_a_cache_is_timed_by_the_batch_even_with_report_generation():
    assert generation_timing(ReportSection(generation=SET), decoder=False) is None
    assert generation_timing(ReportSection(), decoder=False, positions=64) is None


def test_a_decoder_is_timed_with_report_generation_where_the_config_has_it():
    settings = ReportSection(generation=SET)
    assert generation_timing(settings, decoder=True, positions=16) is settings


@pytest.mark.parametrize(
    ("positions", "prompt", "new"), [(None, 128, 64), (64, 48, 16), (1000, 128, 64), (8, 6, 2)]
)
def test_a_decoder_without_report_generation_gets_its_defaults_within_its_positions(
    positions, prompt, new
):
    settings = ReportSection(batch_sizes=[4], threads=2)
    timed = generation_timing(settings, decoder=True, positions=positions)
    assert timed is not None and timed.generation is not None
    assert (timed.generation.prompt_tokens, timed.generation.new_tokens) == (prompt, new)
    assert timed.batch_sizes == [4] and timed.threads == 2  # the rest of the report's settings
    assert settings.generation is None  # the config's settings are left as they were


def test_the_defaults_never_read_past_a_models_positions():
    for positions in range(3, 300):
        fitted = GenerationSection.within(positions)
        assert fitted.prompt_tokens + fitted.new_tokens <= positions, positions


@pytest.fixture
def timed(monkeypatch):
    """Both timings fixed by the test (the output twice as slow); which ran, with what settings."""
    calls: list[tuple[str, ReportSection]] = []

    def latency(paths, samples, settings):
        calls.append(("batch", settings))
        return fixed_latency({"input": 1.0, "output": 2.0}, settings.batch_sizes)

    def generation(paths, settings, ids=None, peak_memory=None):
        calls.append(("decode", settings))
        return fixed_generation(lambda name, path: 1.0 if name == "input" else 2.0, paths, settings)

    monkeypatch.setattr(speed, "measure_latency", latency)
    monkeypatch.setattr(speed, "measure_generation", generation)
    return calls


def test_a_decoder_without_report_generation_is_timed_on_decode_steps(timed):
    settings = ReportSection(batch_sizes=[8], min_runs=5)
    check = model_timer(settings, True, lambda n: [], print, positions=64)(PATHS, False)
    assert isinstance(check, DecodeCheck)
    assert [kind for kind, _ in timed] == ["decode"]
    assert check.shape == "per decode step at batch 1 after a prompt of 48 tokens"
    assert check.verdict("output", "input") == "slower"


def test_any_other_model_is_timed_at_the_first_batch_size(timed):
    settings = ReportSection(batch_sizes=[8, 1], min_runs=5, generation=SET)
    check = model_timer(settings, False, lambda n: [], print)(PATHS, False)
    assert isinstance(check, BatchCheck)
    assert [kind for kind, _ in timed] == ["batch"] and timed[0][1].batch_sizes == [8]
    assert check.shape == "at batch 8"
    assert check.verdict("output", "input") == "slower"
