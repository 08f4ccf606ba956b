"""A decoder's exported graph in ONNX Runtime's fused operators, by onnxscript's fusions
(onnxscript.rewriter.ort_fusions), as ONNX Runtime GenAI's model builder writes them: RMSNorm ->
SimplifiedLayerNormalization, the residual add and the norm after it ->
SkipSimplifiedLayerNormalization (SkipLayerNormalization for LayerNorm models), rotary
embeddings -> RotaryEmbedding over a cos/sin table of the model's positions, attention ->
MultiHeadAttention, and that with the cache around it -> GroupQueryAttention
(compress.torch.gqa_fusion). A decode step of a 4-bit model is mostly per-node cost, and these
take a layer from dozens of small nodes to a few.

The graph keeps its inputs and outputs and what they mean. So four of the library's steps are
taken with care (`fuse_decoder` runs the library's sequence, `optimize_for_ort`, with these):

- GroupQueryAttention is not the library's: its rule reads each row's length off the position
  ids and drops the attention mask, which gives other logits where a row is padded (on the
  left: every token). compress's own rewrite keeps the mask (compress.torch.gqa_fusion).
- MultiHeadAttention is fused only where the attention is reshaped back to [batch, sequence,
  hidden]; the library's rule also takes GPT-2's reshape to [batch x sequence, hidden] (its
  Gemm then fails to load in ONNX Runtime). SDPA's own rewrite covers that case.
- The library's last step (ONNX Runtime's own rewrites, FusedMatMul among them) is left out:
  a tied head's MatMul must stay one for the 4-bit quantizer.
- The cos/sin table is computed once for the model's positions (a constant), not in the graph
  from the position ids at every step: that MatMul, over a constant, is one the 4-bit
  quantizer would take as a weight.

transformers 5 computes the rotary angles as a product and the library's pattern reads the
MatMul transformers 4 used: `rotary_as_matmul` exports it in that form (the same numbers), and
`angles_as_matmul` rewrites a graph already exported with the product (a .pt2's) into it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch

_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
FUSED_OPS = (  # what the fusions write, counted in the export's log
    "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
    "SkipLayerNormalization", "RotaryEmbedding", "MultiHeadAttention", "GroupQueryAttention",
)  # fmt: skip


def _matmul_angles(self: Any, x: torch.Tensor, position_ids: torch.Tensor):
    """transformers 4's rotary forward: the angles as inv_freq [B, E, 1] @ positions [B, 1, S]."""
    inv_freq = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
    freqs = (inv_freq @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


@contextlib.contextmanager
def rotary_as_matmul(module: torch.nn.Module) -> Iterator[int]:
    """Within the block, the model's plain rotary embeddings (fixed frequencies, no scaling)
    compute their angles as a MatMul; yields how many modules were changed."""
    changed = []
    for child in module.modules():
        if (
            type(child).__name__.endswith("RotaryEmbedding")
            and isinstance(getattr(child, "inv_freq", None), torch.Tensor)
            and getattr(child, "rope_type", None) == "default"
            and getattr(child, "attention_scaling", None) == 1.0
        ):
            child.forward = _matmul_angles.__get__(child)
            changed.append(child)
    try:
        yield len(changed)
    finally:
        for child in changed:
            del child.forward


def fuse_decoder(model: Any, max_positions: int | None) -> dict[str, int]:
    """Rewrite the onnx_ir model in place into ONNX Runtime's fused operators; the count of
    each fused operator in the result. `max_positions` sizes the rotary table (None: no
    RotaryEmbedding)."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter import rewrite
    from onnxscript.rewriter.ort_fusions import _core as ort
    from onnxscript.rewriter.ort_fusions import shape_optimization

    from compress.torch.gqa_fusion import fuse_group_query_attention

    rename_dims(model, {})
    rewrite(model, [ort._gemm_to_matmul_add.gemm_to_matmul_add_rule])
    common.ShapeInferencePass()(model)  # the library's _pre_optimize, but for its first
    shape_optimization.rules.apply_to_model(model)  # optimize(): the exporter's ran just before
    optimize(model)
    for fuse in (
        ort.fuse_erfgelu, ort.fuse_rms_normalization, ort.fuse_skip_layer_normalization,
        ort.fuse_skip_rms_normalization, ort.fuse_rotary_embedding,
    ):  # fmt: skip
        fuse(model)
    if max_positions:
        _cos_sin_table(max_positions).apply_to_model(model)
    common.CommonSubexpressionEliminationPass()(model)
    ort.fuse_partial_rotary_embedding(model)
    ort.fuse_sdpa(model, apply_shape_inference=True)
    attention = _attention_rules(past=True).apply_to_model(model)
    attention += _attention_rules(past=False).apply_to_model(model)
    ort.fuse_mha_scale(model)
    if attention:
        ort.fuse_mha_bias(model)
        ort.fuse_attention(model)
    for fuse in (ort.fuse_gelu, ort.fuse_bias_gelu, ort.replace_sdpa_by_mha):
        fuse(model)
    fuse_group_query_attention(model)
    optimize(model)  # inlines what no fusion took (a rotary without its table, say)
    # Not the library's last rewrites (ORT_PATTERN_REWRITE_RULES): they make a tied head's
    # MatMul(x, Transpose(table)) a FusedMatMul, which the 4-bit quantizer does not read (the
    # 0.5B model's head stayed float), and ONNX Runtime fuses it so itself when it loads.
    ir.passes.Sequential(
        common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        common.RemoveInitializersFromInputsPass(),
        common.ShapeInferencePass(),
    )(model)
    counts: dict[str, int] = {}
    for node in model.graph:
        if node.op_type in FUSED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def fuse_described(model: Any, max_positions: int | None) -> str:
    """fuse_decoder, and a line for the log that says what it made of the graph."""
    before = len(model.graph)
    counts = fuse_decoder(model, max_positions)
    made = ", ".join(f"{counts[op]} {op}" for op in FUSED_OPS if counts.get(op))
    made = made or "no fused operator"
    return f"fused for ONNX Runtime: {made} ({before} -> {len(model.graph)} nodes)"


def rename_dims(model: Any, names: dict[str, str]) -> None:
    """Rename the symbols of every symbolic dimension in the onnx_ir model by `names`, a sum of
    them written in one order (_renamed_dim). With no names it still gives one name to one
    length: torch.export writes the cache's total length as `past_sequence + sequence` on some
    values and `sequence + past_sequence` on others, and the fusions compare shapes by name (one
    layer in two was left unfused)."""
    import onnx_ir as ir

    def named(dim: Any) -> Any:
        if isinstance(dim, ir.SymbolicDim) and dim.value:
            return ir.SymbolicDim(_renamed_dim(dim.value, names))
        return dim

    values = [*model.graph.inputs, *model.graph.outputs]
    values += [v for node in ir.traversal.RecursiveGraphIterator(model.graph) for v in node.outputs]
    for value in values:
        if value.shape is not None:
            dims = [named(d) for d in value.shape]
            if dims != list(value.shape):
                value.shape = ir.Shape(dims)


def _renamed_dim(expression: str, names: dict[str, str]) -> str:
    """A symbolic dimension with its symbols renamed by `names`: a sum of symbols sorted
    (`s69 + s70` -> `past_sequence + sequence`), anything else renamed in place."""
    terms = expression.split(" + ")
    if all(_SYMBOL.fullmatch(term) for term in terms):
        return " + ".join(sorted(names.get(term, term) for term in terms))
    return _SYMBOL.sub(lambda m: names.get(m.group(), m.group()), expression)


def _cos_sin_table(max_positions: int):
    """The library's cos/sin cache rules, with the table computed for `max_positions`."""
    from onnxscript.rewriter import pattern
    from onnxscript.rewriter.ort_fusions.cos_sin_cache import CosSinCacheFusion

    def made(name: str, **options: bool):
        rule = CosSinCacheFusion(name, **options)
        rule.max_pos_id = max_positions - 1  # the table's rows: positions 0 .. max_pos_id
        return pattern.RewriteRule(
            rule.pattern, rule.rewrite, rule.check, name=name, remove_nodes=rule.remove_nodes,
            graph_pre_visitor=rule.setup, graph_post_visitor=rule.cleanup,
        )  # fmt: skip

    return pattern.RewriteRuleSet([
        made("CosSinCache_cast", cast=True, const_freqs=False),
        made("CosSinCache_cast_const_freqs", cast=True, const_freqs=True),
        made("CosSinCache_const_freqs", cast=False, const_freqs=True),
        made("CosSinCache", cast=False),
    ])  # fmt: skip


def _attention_rules(past: bool):
    """The library's MultiHeadAttention rules (mha.py's `_make_rule_set`), each taken only where
    the attention comes back as [batch, sequence, hidden]."""
    from onnxscript.rewriter import pattern
    from onnxscript.rewriter.ort_fusions.mha import MultiHeadAttention

    class BackTo3D(MultiHeadAttention):
        def check(self, op, attention_reshaped=None, **bindings):
            shape = getattr(attention_reshaped, "shape", None)
            if shape is None or shape.rank() != 3:
                return pattern.MatchResult().fail("attention not reshaped to [B, S, D]")
            return super().check(op, **bindings)

    return pattern.RewriteRuleSet([
        BackTo3D.rule(
            f"MHA{'_Rotary' * rotary}{'_Past' * past}{'_CrossAttention' * cross}",
            is_rotary=rotary, has_past_present=past, is_cross_attention=cross,
        )
        for rotary in (False, True)
        for cross in ([False] if past else [False, True])
    ])  # fmt: skip


def angles_as_matmul(model: Any) -> int:
    """rotary_as_matmul for a graph already exported (a .pt2's): the rotary angles transformers
    5 computes as a product, positions [B, S, 1] x inv_freq [E], rewritten in place into the
    MatMul inv_freq [1, E, 1] @ positions [B, 1, S], transposed, that the cos/sin table's rules
    read (K = 1: the same numbers). Returns how many products were rewritten."""
    import onnx_ir as ir
    from onnxscript.rewriter import _ir_utils, pattern

    class ProductAngles(pattern.RewriteRuleClassBase):
        def pattern(self, op, position_ids, axes, inv_freq):
            positions = op.Cast(op.Unsqueeze(position_ids, axes), to=ir.DataType.FLOAT)
            return op.Mul(positions, inv_freq)

        def check(self, context, position_ids, axes, inv_freq, **_):
            result = pattern.MatchResult()
            if not _ir_utils.has_rank(position_ids, 2):
                return result.fail("position ids not [batch, sequence]", position_ids)
            if not (_ir_utils.is_1d_value(axes, [-1]) or _ir_utils.is_1d_value(axes, [2])):
                return result.fail("positions not unsqueezed on their last axis", axes)
            if inv_freq.const_value is None or not _ir_utils.has_rank(inv_freq, 1):
                return result.fail("frequencies not a constant [E]", inv_freq)
            return result

        def rewrite(self, op, position_ids, inv_freq, **_):
            frequencies = inv_freq.const_value.numpy().reshape(1, -1, 1)
            table = op.Constant(value=ir.tensor(frequencies))
            positions = op.Unsqueeze(position_ids, op.Constant(value_ints=[1]))
            positions = op.Cast(positions, to=ir.DataType.FLOAT)
            return op.Transpose(op.MatMul(table, positions), perm=[0, 2, 1])

    return pattern.RewriteRuleSet([ProductAngles.rule()], commute=True).apply_to_model(model)
