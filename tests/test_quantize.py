"""Quantization passes on exported graphs: pre-processing and its fallbacks."""

import onnx

from compress.passes import quantize
from tests.conftest import small_onnx


class _Log(list):
    def __call__(self, message):
        self.append(message)


class _Ctx:
    def __init__(self):
        self.log = _Log()


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
