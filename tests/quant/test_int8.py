"""Quantization passes on exported graphs: pre-processing and its fallbacks."""

import onnx
import pytest

from compress.quant import int8 as quantize
from tests.helpers.onnx_builders import small_onnx


class _Log(list):
    def __call__(self, message):
        self.append(message)


class _Ctx:
    def __init__(self):
        self.log = _Log()

    def derived(self, recipe, source, target, make):
        return make()  # no stage cache: pre-processing runs every time


def test_preprocess_skips_symbolic_shape_inference_when_it_crashes(tmp_path, monkeypatch):
    from onnxruntime.quantization import shape_inference

    real = shape_inference.quant_pre_process
    calls = []

    def crashes_on_symbolic(source, target, skip_symbolic_shape=False, **kw):
        calls.append(skip_symbolic_shape)
        if not skip_symbolic_shape:
            raise RuntimeError("symbolic shape inference crashed")
        return real(source, target, skip_symbolic_shape=True, **kw)

    monkeypatch.setattr(shape_inference, "quant_pre_process", crashes_on_symbolic)
    ctx = _Ctx()
    out = quantize.preprocess(small_onnx(tmp_path / "m.onnx"), tmp_path / "pre.onnx", ctx)
    assert calls == [False, True] and out == tmp_path / "pre.onnx"
    onnx.checker.check_model(str(out))
    assert "crashed" in ctx.log[0]


def test_preprocess_falls_back_to_the_graph_as_exported(tmp_path, monkeypatch):
    from onnxruntime.quantization import shape_inference

    def always_fails(*args, **kwargs):
        raise ValueError("cannot pre-process")

    monkeypatch.setattr(shape_inference, "quant_pre_process", always_fails)
    source = small_onnx(tmp_path / "m.onnx")
    ctx = _Ctx()
    assert quantize.preprocess(source, tmp_path / "pre.onnx", ctx) == source
    assert len(ctx.log) == 2


def _static_run(tmp_path, extra: str):
    from compress.job.pipeline import run
    from tests.helpers.configs import CNN_CONFIG, write_config
    from tests.helpers.paths import SAMPLES

    config = write_config(tmp_path, CNN_CONFIG.replace("    per_channel: true\n", extra))
    out = tmp_path / "out"
    run(SAMPLES / "digits_cnn.pt2", config, out)
    return onnx.load(str(out / "model.onnx")).graph


def test_static_exclude_keeps_an_op_type_in_float(tmp_path):
    graph = _static_run(tmp_path, "    exclude: [Conv]\n    calibration: percentile\n")
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and not any(i in dequantized for n in convs for i in n.input)
    gemms = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    assert any(i in dequantized for n in gemms for i in n.input)  # the rest is still int8


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_static_calibration_methods_quantize_the_cnn_without_losing_accuracy(tmp_path, method):
    from compress.job.pipeline import run
    from tests.helpers.configs import CNN_CONFIG, write_config
    from tests.helpers.paths import SAMPLES

    text = CNN_CONFIG.replace("    per_channel: true\n", f"    calibration: {method}\n")
    report = run(SAMPLES / "digits_cnn.pt2", write_config(tmp_path, text), tmp_path / "out")
    graph = onnx.load(str(tmp_path / "out" / "model.onnx")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 4
    assert report.summary.accuracy_drop <= 0.01


def test_fp16_exclude_keeps_named_op_types_computing_in_float32(tmp_path):
    from compress.job.pipeline import run
    from tests.helpers.configs import CNN_CONFIG, write_config
    from tests.helpers.paths import SAMPLES

    text = CNN_CONFIG.replace("quantize.static", "quantize.fp16").replace(
        "    per_channel: true\n", "    exclude: [Gemm]\n"
    )
    out = tmp_path / "out"
    run(SAMPLES / "digits_cnn.pt2", write_config(tmp_path, text), out)
    graph = onnx.load(str(out / "model.onnx")).graph
    types = {i.name: i.data_type for i in graph.initializer}
    # A kept node reads its weight as float32: a float32 initializer, or a Cast to float32.
    to_float32 = {n.output[0] for n in graph.node if n.op_type == "Cast" and n.attribute[0].i == 1}
    gemm_weights = [n.input[1] for n in graph.node if n.op_type == "Gemm"]
    conv_weights = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    assert gemm_weights and all(
        types.get(w) == onnx.TensorProto.FLOAT or w in to_float32 for w in gemm_weights
    )
    assert conv_weights and all(types[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)


def test_int8_output_keeps_the_inputs_lack_of_shape_annotations(tmp_path):
    """The quantizer's inferred shapes enable ORT fusions the float graph did not get."""
    source = small_onnx(tmp_path / "m.onnx")
    assert not onnx.load(str(source)).graph.value_info
    annotated = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    assert annotated.graph.value_info  # Flatten's output gets a shape
    target = tmp_path / "q.onnx"
    onnx.save(annotated, str(target))
    quantize.keep_shape_annotations(source, target)
    assert not onnx.load(str(target)).graph.value_info
    onnx.checker.check_model(str(target), full_check=True)

    onnx.save(annotated, str(source))  # an annotated input: the output keeps its annotations
    onnx.save(annotated, str(target))
    quantize.keep_shape_annotations(source, target)
    assert len(onnx.load(str(target)).graph.value_info) == len(annotated.graph.value_info)


def test_preprocess_leaves_no_file_in_the_current_directory(tmp_path, monkeypatch):
    """ONNX Runtime saves sym_shape_infer_temp.onnx in the current directory when symbolic shape
    inference gives up (it does on this attention graph's Where/Unsqueeze of a bool mask)."""
    import numpy as np

    from tests.helpers.onnx_builders import attention_graph, save

    work, user = tmp_path / "work", tmp_path / "user"
    work.mkdir()
    user.mkdir()
    monkeypatch.chdir(user)
    source = save(attention_graph(np.random.default_rng(0)), work / "att.onnx")
    quantize.preprocess(source, work / "pre.onnx", _Ctx())
    assert list(user.iterdir()) == []
