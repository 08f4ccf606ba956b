"""Quantization: every pass that lowers precision, and what they share.

The passes (each registers under the name the YAML uses):

- int8           quantize.dynamic and quantize.static: ONNX Runtime's quantizers, with the
                 recovery methods around them and the accuracy-aware fallback
- auto           quantize.auto: tries the int8 settings that fit the model, measures each, keeps
                 the one a user would (auto_choice: the rules; auto_trials: trying candidates
                 without paying for every fallback; auto_records: its candidates as records,
                 from the first trial to the report)
- precision      quantize.fp16 and quantize.int4 (4-bit weight-only MatMulNBits)
- smooth         SmoothQuant: activation outliers moved into the weights
- equalize       cross-layer equalization of Conv -> activation -> Conv chains

What the int8 passes share:

- recovery       what happens around ONNX Runtime's quantizer to hold accuracy (before, during
                 and after it)
- calibration    activation ranges, computed once per pass for one or several methods
- bias_correction, masks   two recovery methods: mean output error removed; attention masks kept
                 finite and in float
- fallback       the fewest nodes kept in float that meet the accuracy budget
- ranking, search   the nodes ranked by the error each adds; the smallest prefix that passes
- budget         judging a quantized model against the budget, cheaply where it is safe
- activations, graph_edit   intermediate tensors' statistics; editing a graph's weights in place
- sensitivity/   per-node sensitivity: quantize once, score every node by the error it adds
- analysis       what `compress analyze` computes: the int8 sensitivity ranking of a model
"""
