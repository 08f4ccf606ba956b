"""quantize.auto screens every candidate fully quantized, then searches only where a search can
still produce the choice: checked with a stand-in for the int8 passes and for the timing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from compress.quant import auto_trials
from compress.quant.auto_records import Candidate
from compress.quant.fallback import Attempt
from compress.quant.int8 import QuantizeDetails


def fake_context():
    class Ctx:
        timing = None  # the timing settings: the fake timing reads none

        def log(self, message: str) -> None:
            pass

        def samples(self, count: int) -> list:
            return []

    return Ctx()


def _details(drop: float, met: bool, float_nodes: list[str] = ()) -> QuantizeDetails:
    """What an int8 pass reports: its first round's drop, whether the budget was met."""
    first = Attempt(
        round=0, kept_in_float=0, metric=1 - drop, drop=drop, judged_on="data.eval", met=met,
        seconds=0.0,
    )  # fmt: skip
    return QuantizeDetails(attempts=[first], budget_met=met, float_nodes=list(float_nodes))


class FakePasses:
    """Writes a file per call and reports the drops and the speed each candidate is given."""

    def __init__(self, plain: dict[str, tuple[float, float, int]], searched_drop: float = 0.001):
        self.plain = plain  # name -> (drop fully quantized, p50 ms, file size)
        self.searched_drop = searched_drop
        self.searched: list[str] = []
        self.rooms: dict[str, float | None] = {}  # the float weight (MB) each search could keep

    def run(
        self, candidate: Candidate, steps: int, path: Path, room: float | None
    ) -> QuantizeDetails:
        drop, _, size = self.plain[candidate.name]
        path.write_bytes(b"x" * size)
        if steps == 0:
            return _details(drop, met=drop <= 0.005)
        self.searched.append(candidate.name)
        self.rooms[candidate.name] = room
        return _details(drop, met=True, float_nodes=["n"])

    def timer(self, paths: dict[str, Path], brief: bool):
        """quantize.auto's timer: the p50s each model is given (every screening is brief)."""
        assert brief
        p50 = {"input": 100.0}
        for name, path in paths.items():
            if name == "candidate":  # a searched model: 5% slower than fully quantized
                plain = self.plain[path.name.removesuffix(".onnx")][1]
                p50[name] = plain * 1.05
            elif name != "input":
                p50[name] = self.plain[name][1]
        return SimpleNamespace(p50=p50)


@pytest.fixture
def passes():
    return FakePasses


def run_trials(
    fake: FakePasses, tmp_path: Path, budget: float = 0.005, weight_only: tuple[str, ...] = ()
):
    candidates = [
        Candidate(name, "quantize.int4", weight_only=True)
        if name in weight_only
        else Candidate(name, "quantize.static")
        for name in fake.plain
    ]
    trials = auto_trials.try_candidates(
        candidates,
        fake.run,
        tmp_path / "input.onnx",
        tmp_path,
        budget,
        4,
        fake_context(),
        fake.timer,
    )
    return {t.name: t for t in trials}


def test_a_candidate_within_the_budget_fully_quantized_is_not_searched(passes, tmp_path):
    fake = passes({"a": (0.001, 40.0, 1000), "b": (0.02, 42.0, 1000)})
    trials = run_trials(fake, tmp_path)
    assert fake.searched == [] and trials["a"].final == trials["a"].plain.path
    assert "not searched" in trials["b"].entry.verdict


def test_search_goes_to_the_smallest_drop_first_and_stops_where_nothing_can_win(passes, tmp_path):
    fake = passes(
        {
            "per-tensor": (0.10, 41.0, 995),  # as fast, less than 1% smaller: not worth it
            "bias-corrected": (0.007, 40.0, 1000),
            "slow": (0.01, 80.0, 800),  # slower than the searched one beyond noise
            "slower-than-input": (0.01, 120.0, 500),
        }
    )
    trials = run_trials(fake, tmp_path)
    assert fake.searched == ["bias-corrected"]
    assert trials["bias-corrected"].final_ms == pytest.approx(42.0)
    assert "not smaller" in trials["per-tensor"].entry.verdict
    assert "already slower (80.000 ms) than bias-corrected" in trials["slow"].entry.verdict
    assert "slower than the input" in trials["slower-than-input"].entry.verdict


@pytest.mark.parametrize(
    "other", [(0.05, 30.0, 1000), (0.05, 41.0, 500)], ids=["faster", "smaller"]
)
def test_a_clearly_faster_or_smaller_candidate_is_still_searched(passes, tmp_path, other):
    fake = passes({"first": (0.006, 40.0, 1000), "other": other})
    run_trials(fake, tmp_path)
    assert fake.searched == ["first", "other"]
    assert fake.rooms["first"] is None  # nothing within the budget yet: no limit


def test_a_candidate_that_can_win_only_by_size_keeps_no_more_in_float_than_its_lead(
    passes, tmp_path
):
    fake = passes({"first": (0.006, 40.0, 2_000_000), "as-fast": (0.05, 41.0, 1_000_000)})
    run_trials(fake, tmp_path)
    # 1% smaller than the 2 MB candidate within the budget: 1.98 MB, so 0.98 MB more at most
    assert fake.rooms["as-fast"] == pytest.approx(2.0 / 1.01 - 1.0)
    fake = passes({"first": (0.006, 40.0, 2_000_000), "faster": (0.05, 30.0, 1_000_000)})
    run_trials(fake, tmp_path)
    assert fake.rooms["faster"] is None  # it can win on speed: its search is not limited


def test_a_weight_only_candidate_is_searched_without_a_float_weight_limit(passes, tmp_path):
    """quantize.int4's search moves MatMuls to 8 bits, not to float: a float-weight limit would
    not mean what it says (and it has none to take)."""
    fake = passes({"first": (0.006, 40.0, 2_000_000), "as-fast": (0.05, 41.0, 1_000_000)})
    run_trials(fake, tmp_path, weight_only=("as-fast",))
    assert fake.searched == ["first", "as-fast"] and fake.rooms["as-fast"] is None


def test_finalists_leave_out_what_the_screening_found_slower(passes, tmp_path):
    plain = {"fast": (0.001, 40.0, 1000), "close": (0.001, 43.0, 1000)}
    fake = passes(plain | {"slow": (0.001, 90.0, 1000)})
    trials = run_trials(fake, tmp_path)
    # 7.5% apart on a brief timing is for the final paired timing to tell; 2.25x is not
    assert set(auto_trials.finalists(list(trials.values()))) == {"fast", "close"}
    assert "more than 10% slower" in trials["slow"].entry.verdict
