"""quantize.auto's candidates: what is worth trying on a graph. A decoder exported with its
key/value cache gets weight-only candidates and dynamic (`decoder_candidates`); any other model
the int8 variants that fit it, static ones where there is calibration data, with the recovery
candidates where the graph has what each needs (`candidates_for`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.measure.decoder_feeds import is_decoder_file
from compress.quant.auto_records import Candidate


def decoder_candidates(model_path: Path) -> list[Candidate]:
    """What a decoder with its key/value cache is offered: weight-only 4 bits (quantize.int4's
    defaults: asymmetric round to nearest, the head and embedding tables at 8 bits, its 4/8-bit
    mix within the budget), weight-only 8 bits, and dynamic int8. A decode step reads every
    weight once per token, so fewer bits per weight is what makes it faster. No static
    candidate: it quantizes activations, calibrated over a graph with cache inputs (ORT's
    calibration failed on them for three of the four static candidates on a tiny LLaMA and all
    four on a 55M one, after 10 s each), and SmoothQuant finds no LayerNormalization in an
    RMSNorm model."""
    import onnx

    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    if not {n.op_type for n in nodes} & {"MatMul", "Gemm"}:
        return []
    return [
        Candidate("int4-weights", "quantize.int4", {}, weight_only=True),
        # accuracy_level 4 (int8 activations), not timed against 0: 8-bit MatMulNBits at level
        # 0 ran 10x slower than float on a Xeon and 20-30x slower than level 4 here
        Candidate(
            "int8-weights", "quantize.int4", {"bits": 8, "accuracy_level": 4}, weight_only=True
        ),
        Candidate("dynamic", "quantize.dynamic", {"per_channel": "auto"}),
    ]


def candidates_for(model_path: Path, has_calibration: bool) -> list[Candidate]:
    """The variants worth trying on this graph: a decoder's (`decoder_candidates`), else the
    int8 ones."""
    import onnx

    if is_decoder_file(model_path):
        return decoder_candidates(model_path)
    nodes = onnx.load(str(model_path), load_external_data=False).graph.node
    op_types = {n.op_type for n in nodes}
    depthwise = [n.name for n in nodes if n.op_type == "Conv" and _groups(n) > 1]
    candidates = []
    if has_calibration and op_types & {"Conv", "MatMul", "Gemm"}:
        candidates.append(Candidate("static-per-channel", "quantize.static", {"per_channel": True}))
        candidates.append(Candidate("static-per-tensor", "quantize.static", {"per_channel": False}))
        # Signed activations (S8S8) fuse and run fast on some graphs (the plain digits CNN) and
        # very slowly on others (ORT leaves convolutions on residual branches unfused).
        candidates.append(
            Candidate(
                "static-int8-activations",
                "quantize.static",
                {"per_channel": True, "activation_type": "int8"},
            )
        )
        candidates.append(
            Candidate(
                "static-compute-ops",
                "quantize.static",
                {"per_channel": True, "op_types": ["Conv", "MatMul", "Gemm"]},
            )
        )
        if depthwise:
            candidates.append(
                Candidate(
                    "static-depthwise-float", "quantize.static", {"per_channel": True}, depthwise
                )
            )
        candidates += recovery_candidates(model_path, op_types)
    if op_types & {"MatMul", "Gather", "LSTM", "Attention"}:
        candidates.append(Candidate("dynamic", "quantize.dynamic", {"per_channel": "auto"}))
    return candidates


def recovery_candidates(model_path: Path, op_types: set[str]) -> list[Candidate]:
    """AIMET's order of recovering int8 accuracy, where the graph has what each needs: CLE and
    bias correction with per-tensor weights where Conv -> ReLU -> Conv pairs hold at least a
    quarter of the convolutions, bias correction with per-channel weights on convolutions,
    SmoothQuant on LayerNorm -> MatMul (with float MatMul outputs). The first and the last
    pick their calibration method on held-out calibration samples."""
    from compress.quant.equalize import conv_pairs
    from compress.quant.graph_edit import Graph, load
    from compress.quant.smooth import smoothing_sites

    graph = Graph(load(model_path))
    candidates = []
    recovered = {"bias_correction": True, "calibration": "auto"}
    pairs = [p for p in conv_pairs(graph) if p.activation is None or p.activation.op_type != "Clip"]
    paired = {n.name for p in pairs for n in (p.first, p.second)}
    convs = sum(n.op_type == "Conv" for n in graph.graph.node)
    # Where ReLU6 leaves few pairs (EfficientNet-Lite1: 4 of 64 convolutions), CLE changes
    # little and the candidate would only cost time.
    if pairs and 4 * len(paired) >= convs:
        settings = {"per_channel": False, "equalize": True} | recovered
        candidates.append(Candidate("static-equalized", "quantize.static", settings))
    if "Conv" in op_types:
        # No calibration: auto here: on EfficientNet-Lite1 the three methods' errors were within
        # 0.1% of each other, and the trials cost 30-50 s of the time auto has.
        settings = {"per_channel": True, "bias_correction": True}
        candidates.append(Candidate("static-bias-corrected", "quantize.static", settings))
    if smoothing_sites(graph):
        # int8 MatMul inputs and weights, float outputs: quantizing the residual stream (the
        # MatMul outputs and the Adds after them) took all-MiniLM-L6-v2 from cosine 0.990 to 0.94.
        # Embedding tables (Gather) in int8: all-MiniLM-L6-v2 1.57x -> 4.0x smaller, cosine drop
        # 0.0043 -> 0.0045.
        compute = ["MatMul", "Gemm"]
        settings = {"per_channel": True, "smooth_alpha": 0.5, "op_types": [*compute, "Gather"]}
        settings |= {"float_outputs": compute, "calibration": "auto"}
        candidates.append(Candidate("static-smoothed", "quantize.static", settings))
    return candidates


def _groups(node: Any) -> int:  # an onnx NodeProto
    return next((a.i for a in node.attribute if a.name == "group"), 1)
