"""Quantization: every pass that lowers precision, and what they share.

The passes (each registers under the name the YAML uses):

- int8           quantize.dynamic and quantize.static: ONNX Runtime's quantizers, with the
                 recovery methods around them and the accuracy-aware fallback
- auto           quantize.auto: tries the quantizations that fit the model (auto_candidates: the
                 int8 variants, or a decoder's weight-only ones and dynamic), measures each, keeps
                 the one a user would (auto_choice: the rules; auto_trials: trying candidates
                 without paying for every fallback; auto_records: its candidates as records,
                 from the first trial to the report)
- precision      quantize.fp16
- int4           quantize.int4: weight-only MatMulNBits at 4 (or 8) bits, the head and embeddings
                 at 8 (nbits: what ORT's MatMulNBitsQuantizer is asked, node by node;
                 int4_speed: accuracy_level chosen by timing; int4_mix: with a budget, the fewest
                 MatMuls at 8 bits, found by the fallback's search; weight_rewrites: Gemm as
                 MatMul, int8 embedding tables; int4_tables: whether those tables stay int8;
                 nbits_pack: MatMuls that read the same input packed into one)
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
- module_names   the torch module each node came from (rankings and reports name it), and
                 `exclude` lists of node names, op types, module names and globs
- analysis       what `compress analyze` computes: the int8 sensitivity ranking of a model
- ort_tools      ONNX Runtime's `onnxruntime.tools` imported without torch (its pre-processing
                 would load torch into every int8 run on an ONNX model)
"""
