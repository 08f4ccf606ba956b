"""The accuracy-aware fallback's search: it finds what an exhaustive search over the ranking
finds, in O(log n) rounds, on synthetic scores and on a real small graph."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compress.passes.base import PassInput
from compress.quant import fallback
from compress.quant import ranking as ranking_module
from compress.quant.budget import Verdict
from compress.quant.search import guess_from_noise, smallest_passing
from compress.quant.sensitivity import Sensitivity
from compress.quant.sensitivity.cache import AnalysisCache
from compress.quant.sensitivity.nodes import NodeScore
from tests.helpers.quant_models import outlier_mlp, static_config


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 33, 100])
def test_the_search_finds_the_smallest_passing_prefix_in_log_probes(count):
    for threshold in range(1, count + 2):  # count + 1: no prefix passes
        for guess in (1, threshold, count // 2, count):
            probes = []

            def passes(k, threshold=threshold, probes=probes):
                probes.append(k)
                return k >= threshold

            result = smallest_passing(count, passes, max_probes=100, guess=guess)
            exhaustive = next((k for k in range(1, count + 1) if k >= threshold), None)
            assert result.smallest == exhaustive
            assert result.exhausted == (exhaustive is None)
            assert len(probes) == len(set(probes)) <= 2 * math.ceil(math.log2(count)) + 2


def test_the_search_stops_at_max_probes_with_a_prefix_that_passed():
    result = smallest_passing(100, lambda k: k >= 37, max_probes=3, guess=1)
    assert result.probed == [1, 2, 4] and result.out_of_probes and result.smallest is None
    result = smallest_passing(100, lambda k: k >= 37, max_probes=5, guess=60)
    assert len(result.probed) == 5 and result.out_of_probes and 37 <= result.smallest <= 60
    assert smallest_passing(5, lambda k: True, max_probes=0).out_of_probes


def test_the_guess_removes_the_noise_share_the_budget_asks_for():
    # drop 0.04, budget 0.01: three quarters of the noise must go
    assert guess_from_noise([5.0, 2.0, 1.0, 1.0, 1.0], drop=0.04, budget=0.01) == 3
    assert guess_from_noise([1.0] * 10, drop=0.04, budget=0.01) == 8
    assert guess_from_noise([], drop=0.04, budget=0.01) == 1


def _node(name: str, score: float, group: list[str]) -> NodeScore:
    return NodeScore(name, "Conv", name, score, 20.0, None, output_error=score, group=group)


def _synthetic_ranking() -> Sensitivity:
    """Twelve nodes, worst first; some groups overlap (a node's producer is another's)."""
    nodes = [_node(f"n{i}", 1.0 / (i + 1), [f"n{i}", f"p{i // 3}"]) for i in range(12)]
    return Sensitivity(nodes, samples=8, quantized={n for s in nodes for n in s.group})


class _Judge:
    """A drop that falls as nodes go back to float (each node worth its weight)."""

    def __init__(self, budget: float, weights: dict[str, float], base: float):
        self.budget, self.metric, self.weights, self.base = budget, "cosine", weights, base

    def drop_of(self, path: Path) -> float:
        kept = json.loads(path.read_text())
        return self.base - sum(self.weights.get(n, 0.0) for n in set(kept))

    def full(self, path: Path) -> Verdict:
        drop = self.drop_of(path)
        return Verdict(drop, 1 - drop, full=True, met=drop <= self.budget)

    judge_model = full


def _stand_in_context():
    """What the fallback reads of a run's PassContext, for a judge that is monkeypatched."""
    return SimpleNamespace(
        eval=object(),
        log=lambda message: None,
        metric="cosine",
        shared=lambda kind: SimpleNamespace(reference_outputs=lambda *args: np.zeros(1)),
        judged_output=0,
    )


@pytest.mark.parametrize("budget", [0.95, 0.6, 0.3, 0.1, 0.02])
def test_the_fallback_keeps_what_an_exhaustive_search_over_the_ranking_keeps(
    tmp_path, monkeypatch, budget
):
    ranking = _synthetic_ranking()
    weights = {n.node: n.score**2 for n in ranking.nodes} | {f"p{i}": 0.01 for i in range(4)}
    judge = _Judge(budget, weights, base=1.0)
    monkeypatch.setattr(ranking_module, "shared_sensitivity", lambda job, path, ctx: ranking)
    monkeypatch.setattr(fallback, "BudgetJudge", lambda *args: judge)
    rounds = []

    def quantize(float_nodes, path):
        rounds.append(list(float_nodes))
        path.write_text(json.dumps(float_nodes))

    job = fallback.QuantizeJob(quantize, tmp_path / "in.onnx", tmp_path / "in.onnx", [], "s")
    ctx = _stand_in_context()
    target = tmp_path / "out.onnx"
    details = fallback.quantize_within_budget(job, target, budget, 8, ctx)

    sets, _ = fallback.float_sets(ranking, set())
    exhaustive = next(s for s in [[], *sets] if judge.base - sum(weights[n] for n in s) <= budget)
    assert details.float_nodes == exhaustive and details.budget_met
    assert json.loads(target.read_text()) == exhaustive  # the kept model is the one judged
    assert len(rounds) - 1 == details.search.rounds <= 2 * math.ceil(math.log2(12)) + 1
    assert len(details.attempts) == len(rounds)
    assert all(a.seconds >= 0 for a in details.attempts)
    assert not list(tmp_path.glob("*.fallback*"))  # the other rounds' files are gone


def test_the_fallback_says_how_close_it_came_when_the_budget_cannot_be_met(tmp_path, monkeypatch):
    ranking = _synthetic_ranking()
    judge = _Judge(0.001, {n.node: 0.01 for n in ranking.nodes}, base=0.5)
    monkeypatch.setattr(ranking_module, "shared_sensitivity", lambda job, path, ctx: ranking)
    monkeypatch.setattr(fallback, "BudgetJudge", lambda *args: judge)
    job = fallback.QuantizeJob(
        lambda nodes, path: path.write_text(json.dumps(nodes)), tmp_path, tmp_path, [], "s"
    )
    ctx = _stand_in_context()
    details = fallback.quantize_within_budget(job, tmp_path / "out.onnx", 0.001, 8, ctx)
    assert not details.budget_met
    assert details.verdict.startswith("budget not met: the closest was a cosine drop of 0.3800")
    assert "keeping all 16 nodes that add error in float did not meet it" in details.verdict
    assert len(details.float_nodes) == 16


def test_on_a_real_graph_the_search_matches_the_exhaustive_one(tmp_path):
    """Two outlier tensors, each ruining the layer after it: both must go back to float."""
    from compress.job.context import Context, input_names_for
    from compress.job.preflight import check_config
    from compress.quant.budget import BudgetJudge
    from compress.quant.int8 import StaticParams, StaticQuantization

    source = outlier_mlp(tmp_path / "m.onnx", [(1, 300.0), (3, 40.0)])
    config, _, datasets = check_config(static_config(tmp_path))
    ctx = Context(config, datasets, input_names_for(config, datasets), tmp_path)
    int8 = StaticQuantization(StaticParams(per_channel=True, max_accuracy_drop=0.002))
    details = int8.apply(PassInput(source=source, target=tmp_path / "q.onnx"), ctx).details
    assert details.budget_met and details.search.rounds <= 4

    prepared = tmp_path / "q.pre.onnx"
    job = int8.job(source, int8.settle(prepared, [], ctx), [])
    plain = tmp_path / "plain.onnx"
    job.quantize([], plain)
    sets, _ = fallback.float_sets(ranking_module.shared_sensitivity(job, plain, ctx), set())
    reference = ctx.shared(AnalysisCache).reference_outputs(source, ctx.eval, 0)
    judge = BudgetJudge(reference, ctx.eval, "cosine", 0.002, 0)
    exhaustive = None
    for index, nodes in enumerate([[], *sets]):
        path = tmp_path / f"exhaustive{index}.onnx"
        job.quantize(nodes, path)
        if judge.full(path).met:
            exhaustive = nodes
            break
    assert exhaustive and details.float_nodes == exhaustive
    assert details.attempts[0].drop > 0.01  # it did need the fallback


def test_a_float_weight_limit_keeps_the_search_to_the_sets_within_it(tmp_path):
    """max_float_weight_mb: a set is tried only if its weights, kept in float (4 bytes a value
    instead of 1), add at most that much; with no room, the verdict says so."""
    import onnx

    from compress.job.context import Context, input_names_for
    from compress.job.preflight import check_config
    from compress.quant.int8 import StaticParams, StaticQuantization

    source = outlier_mlp(tmp_path / "m.onnx", [(1, 300.0), (3, 40.0)])
    config, _, datasets = check_config(static_config(tmp_path))
    ctx = Context(config, datasets, input_names_for(config, datasets), tmp_path)
    params = {"per_channel": True, "max_accuracy_drop": 0.002}
    unlimited = (
        StaticQuantization(StaticParams(**params))
        .apply(PassInput(source=source, target=tmp_path / "a.onnx"), ctx)
        .details
    )
    needed = unlimited.float_nodes
    prepared = onnx.load(str(tmp_path / "a.pre.onnx")).graph
    weights = {t.name: int(np.prod(t.dims)) for t in prepared.initializer if len(t.dims) >= 2}
    reads = [i for n in prepared.node if n.name in needed for i in n.input]
    kept = sum(weights[i] for i in reads if i in weights)
    assert kept > 0

    exact = StaticParams(**params, max_float_weight_mb=3 * kept / 1e6)
    details = (
        StaticQuantization(exact)
        .apply(PassInput(source=source, target=tmp_path / "b.onnx"), ctx)
        .details
    )
    assert details.budget_met and details.float_nodes == needed

    short = StaticParams(**params, max_float_weight_mb=(3 * kept - 1) / 1e6)
    details = (
        StaticQuantization(short)
        .apply(PassInput(source=source, target=tmp_path / "c.onnx"), ctx)
        .details
    )
    assert not details.budget_met
    assert all(a.kept_in_float < len(needed) for a in details.attempts)
    assert "of weights" in details.verdict


def test_with_costs_the_sets_grow_by_noise_removed_per_unit_of_cost():
    """quantize.int4's mix: a node 4x larger must remove 4x the noise to be moved first."""
    nodes = [_node("big", 0.2, ["big"]), _node("small", 0.15, ["small"]), _node("tiny", 0.01, [])]
    ranking = Sensitivity(nodes, samples=8, quantized={"big", "small", "tiny"})
    assert fallback.float_sets(ranking, set())[0] == [
        ["big"],
        ["big", "small"],
        ["big", "small", "tiny"],
    ]
    sets, noise = fallback.float_sets(ranking, set(), {"big": 4.0, "small": 1.0, "tiny": 1.0})
    assert sets == [["small"], ["small", "big"], ["small", "big", "tiny"]]
    assert noise == pytest.approx([0.15**2, 0.2**2, 0.01**2])
