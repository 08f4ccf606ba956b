"""ONNX Runtime's own operators in the ONNX domain, made known to onnx.checker.

ONNX Runtime defines a few operators in the ONNX domain itself that ONNX does not
(SimplifiedLayerNormalization: RMSNorm, which a decoder compress exports fuses into, as ONNX
Runtime GenAI's model builder and its transformer optimizer write it). onnx.checker refuses a
model with one ("No Op registered"), though ONNX Runtime runs it; `register` copies ONNX
Runtime's declarations of them into onnx's registry, once per process, so the checker reads
them as it reads ONNX's own. Copying them takes ~0.3 s: a loaded model that uses none
(`register_for`) does without.
"""

from __future__ import annotations

import functools


@functools.cache
def register() -> None:
    """Declare to onnx the ONNX-domain operators ONNX Runtime defines and onnx lacks."""
    import onnx.defs as defs
    from onnxruntime.capi import onnxruntime_pybind11_state as ort

    schemas = [s for s in ort.get_all_operator_schema() if s.domain in ("", "ai.onnx")]
    unknown = {s.name for s in schemas if not defs.has(s.name, domain="")}
    for schema in schemas:
        if schema.name not in unknown or schema.deprecated:
            continue
        try:
            defs.register_schema(_copied(schema, defs.OpSchema))
        except Exception:  # noqa: BLE001, S112 - one onnx cannot express stays unknown
            continue


def register_for(model) -> None:
    """`register` where the ModelProto uses an ONNX-domain operator onnx does not know (in its
    graph, a subgraph or a function)."""
    import onnx.defs as defs

    graphs, nodes = [model.graph], [n for f in model.functions for n in f.node]
    while graphs:
        graph = graphs.pop()
        nodes.extend(graph.node)
        for node in graph.node:
            for attribute in node.attribute:
                graphs.extend(attribute.graphs)
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
    if any(n.domain in ("", "ai.onnx") and not defs.has(n.op_type, domain="") for n in nodes):
        register()


def _copied(schema, OpSchema):  # noqa: N803 - onnx's class
    def parameter(p):
        option = OpSchema.FormalParameterOption.__members__[p.option.name]
        return OpSchema.FormalParameter(
            p.name, p.typeStr, p.description, param_option=option, is_homogeneous=p.isHomogeneous
        )

    attributes = [
        OpSchema.Attribute(
            a.name, OpSchema.AttrType.__members__[a.type.name], a.description, required=a.required
        )
        for a in schema.attributes.values()
    ]
    return OpSchema(
        schema.name, "", schema.since_version, schema.doc or "",
        inputs=[parameter(p) for p in schema.inputs],
        outputs=[parameter(p) for p in schema.outputs],
        type_constraints=[
            (t.type_param_str, list(t.allowed_type_strs), t.description)
            for t in schema.type_constraints
        ],
        attributes=attributes,
    )  # fmt: skip
