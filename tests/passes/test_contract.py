"""The contract every registered pass keeps: strict params, a sample YAML that validates, and a
compressed model that still exports, runs and agrees with the baseline."""

import pytest
import yaml
from pydantic import ValidationError

from compress.job.pipeline import run
from compress.passes.base import PassParams
from compress.passes.registry import all_passes, get_pass, register
from tests.helpers.config_reads import declared, watching
from tests.helpers.configs import write_config
from tests.helpers.paths import SAMPLES

PASSES = sorted(all_passes())


def sample_yaml(cls) -> list[dict]:
    text = cls.__doc__.split("Sample YAML:", 1)[1]
    return yaml.safe_load(text.replace("\n    ", "\n"))


@pytest.mark.parametrize("name", PASSES)
def test_params_reject_unknown_keys(name):
    with pytest.raises(ValidationError, match="extra"):
        get_pass(name).Params.model_validate({"no_such_option": 1})


@pytest.mark.parametrize("name", PASSES)
def test_docstring_has_a_summary_and_a_valid_sample(name):
    cls = get_pass(name)
    assert cls.summary()
    [entry] = sample_yaml(cls)
    assert entry.pop("type") == name
    cls.Params.model_validate(entry)


# The sample each pass is tried on: the CNN, or the transformer for passes that need MatMul.
CNN = ("digits_cnn.pt2", "digits", "[x]")
TRANSFORMER = ("text_transformer.ts", "text", "[input_ids, attention_mask]")
SAMPLE_FOR = {"quantize.int4": TRANSFORMER, "smooth": TRANSFORMER}


@pytest.mark.parametrize("name", PASSES)
def test_pass_runs_and_the_model_still_agrees(tmp_path, monkeypatch, name):
    """... and reads no config key besides its params that its `reads` does not declare (the
    stage cache would reuse its stage after that key changed)."""
    cls, seen = get_pass(name), set()
    for method in ("check_model", "apply"):
        monkeypatch.setattr(cls, method, watched(getattr(cls, method), seen))
    entry = sample_yaml(cls)
    model, data, inputs = SAMPLE_FOR.get(name, CNN)
    text = (
        "version: 1\n"
        "data:\n"
        f"  train: {{path: {data}_train.npz, inputs: {inputs}, labels: y, limit: 256}}\n"
        f"  calibration: {{path: {data}_calib.npz, inputs: {inputs}, limit: 64}}\n"
        f"  eval: {{path: {data}_eval.npz, inputs: {inputs}}}\n"
        f"passes: {yaml.safe_dump(entry, default_flow_style=True).strip()}\n"
        "report: {batch_sizes: [4], metric: agreement, min_runs: 5, min_seconds: 0, "
        "max_seconds: 0.2}\n"
    )
    report = run(SAMPLES / model, write_config(tmp_path, text), tmp_path / "out")
    assert [s.name for s in report.stages] == ["baseline", name]
    assert report.final.metric.value >= 0.95
    [params] = [{k: v for k, v in e.items() if k != "type"} for e in entry]
    assert not declared(cls(cls.Params.model_validate(params)).config_read(), seen), seen


def watched(method, seen: set[str]):
    def wrapper(self, given, ctx):
        with watching(ctx, seen):
            return method(self, given, ctx)

    return wrapper


def test_registry_refuses_a_duplicate_name():
    class Other:
        Params = PassParams

    with pytest.raises(ValueError, match="registered twice"):
        register("quantize.static")(Other)


def test_dynamic_quantization_leaves_convolutions_in_float_by_default(tmp_path):
    import collections

    import onnx

    text = (
        "version: 1\ndata: {eval: {path: digits_eval.npz, inputs: [x], labels: y}}\n"
        "passes: [{type: quantize.dynamic}]\n"
        "report: {batch_sizes: [4], min_runs: 5, min_seconds: 0, max_seconds: 0.2}\n"
    )
    out = tmp_path / "out"
    run(SAMPLES / "digits_cnn.pt2", write_config(tmp_path, text), out)
    ops = collections.Counter(n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node)
    assert ops["ConvInteger"] == 0 and ops["Conv"] == 3  # ConvInteger is the slow path
    assert ops["MatMulInteger"] == 2  # the fully connected layers are quantized


def test_kmeans_snaps_weights_to_n_values_close_to_the_original():
    import numpy as np

    from compress.passes.cluster import kmeans_1d

    weights = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    shared = kmeans_1d(weights, clusters=16, iterations=20)
    assert shared.shape == weights.shape and shared.dtype == weights.dtype
    assert len(np.unique(shared)) <= 16
    # 16 levels of a unit normal: mean error far below the spread of the weights
    assert np.abs(shared - weights).mean() < 0.1
