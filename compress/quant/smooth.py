"""SmoothQuant: move activation outliers into the weights of the MatMul that reads them.

Transformer activations have a few channels whose values are 10-100x the others; one int8 scale
per tensor then leaves the other channels a handful of levels. SmoothQuant (Xiao et al. 2023)
divides channel j of the activation X by s_j and multiplies row j of the next MatMul's weight
by it, so X W is unchanged: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (alpha 0.5 splits the
difficulty evenly; larger moves more of it into the weights). max|X_j| comes from calibration.

Where X is a LayerNormalization's output read only by such MatMuls (pre-LN blocks: GPT-2), the
division is folded into the LayerNorm's scale and bias: no new node. Where X is also read by
something else (post-LN blocks: BERT's residual Add), a Mul by 1/s is put in front of the
MatMuls alone; it is named SMOOTH_PREFIX... and the int8 passes keep it in float, so the
MatMuls' input is quantized after the smoothing, not before. A reader may sit behind a Reshape
that keeps the channels last (GPT-2's Conv1D: Reshape -> Gemm); Shape readers are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx
from pydantic import Field

from compress.passes.base import OnnxPass, OnnxPassParams, PassDetails, PassInput, PassResult
from compress.passes.context import required
from compress.passes.registry import register
from compress.quant.activations import ChannelAbsMax, collect
from compress.quant.equalize import Spread
from compress.quant.graph_edit import Graph, attribute, load, save
from compress.records import Record

if TYPE_CHECKING:
    from compress.config import LoadedConfig
    from compress.passes.context import PassContext

SMOOTH_PREFIX = "smooth/"
SHAPE_ONLY = {"Shape", "Size"}  # read a tensor's shape, not its values
SCALE_LIMITS = (1e-5, 1e5)
STATS_SAMPLES = 64


@dataclass
class Site:
    """A LayerNorm output and the MatMul / Gemm nodes that read it (possibly via a Reshape)."""

    norm: onnx.NodeProto
    matmuls: list[onnx.NodeProto] = field(default_factory=list)
    entries: list[onnx.NodeProto] = field(default_factory=list)  # reader of X for each path
    others: list[onnx.NodeProto] = field(default_factory=list)  # readers that are not MatMuls

    @property
    def tensor(self) -> str:
        return self.norm.output[0]


def smoothing_sites(graph: Graph) -> list[Site]:
    """Every LayerNormalization (with its own scale) whose output feeds at least one MatMul /
    Gemm with a constant weight of matching width."""
    sites = []
    for norm in (n for n in graph.graph.node if n.op_type == "LayerNormalization"):
        gamma = graph.own_weight(norm, 1)
        if gamma is None or gamma.ndim != 1 or norm.output[0] in graph.outputs:
            continue
        site = Site(norm)
        for reader in graph.readers.get(norm.output[0], []):
            if reader.op_type in SHAPE_ONLY:
                continue
            matmul = _matmul_behind(graph, reader, norm.output[0], gamma.size)
            if matmul is None:
                site.others.append(reader)
            else:
                site.matmuls.append(matmul)
                site.entries.append(reader)
        if site.matmuls:
            sites.append(site)
    return sites


def _matmul_behind(graph: Graph, reader, tensor: str, channels: int):
    """`reader` itself, or the one reader of a Reshape `reader`, when it is a MatMul / Gemm that
    takes `tensor` as its first input and a width-`channels` constant weight it owns."""
    if reader.op_type == "Reshape" and reader.input[0] == tensor:
        behind = graph.only_reader(reader.output[0])
        if behind is None or behind.input[0] != reader.output[0]:
            return None
        reader, tensor = behind, reader.output[0]
    if reader.op_type not in ("MatMul", "Gemm") or reader.input[0] != tensor:
        return None
    if reader.op_type == "Gemm" and attribute(reader, "transA", 0):
        return None
    weight = graph.own_weight(reader, 1)
    if weight is None or weight.ndim != 2 or _rows(reader, weight).shape[0] != channels:
        return None
    return reader


def _rows(node, weight: np.ndarray) -> np.ndarray:
    """The weight as [input channels, outputs]."""
    return weight.T if node.op_type == "Gemm" and attribute(node, "transB", 0) else weight


def activation_absmax(model: onnx.ModelProto, sites: list[Site], samples) -> dict[str, np.ndarray]:
    reducers = {site.tensor: [ChannelAbsMax()] for site in sites}
    collect(model, reducers, samples)
    return {name: reducer[0].largest for name, reducer in reducers.items()}


def smoothing_scales(x_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); 1 where either side is all zeros."""
    x, w = x_absmax.astype(np.float64), w_absmax.astype(np.float64)
    scales = np.ones_like(x)
    alive = (x > 0) & (w > 0)
    scales[alive] = x[alive] ** alpha / w[alive] ** (1 - alpha)
    return np.clip(scales, *SCALE_LIMITS)


class SmoothedSite(Record):
    tensor: str
    matmuls: int
    folded_into: Literal["layernorm", "mul"]
    channel_range_spread: Spread


class Smoothed(Record):
    """What SmoothQuant changed (the smooth pass, quantize.static's smooth_alpha)."""

    alpha: float | None = None
    sites: list[SmoothedSite] = []


def smooth_site(graph: Graph, site: Site, x_absmax: np.ndarray, alpha: float) -> SmoothedSite:
    """Apply SmoothQuant at one site; says how, and how much flatter X's channels became."""
    rows = [_rows(m, graph.weight(m, 1)) for m in site.matmuls]  # sites read their own weights
    w_absmax = np.max([np.abs(r).max(axis=1) for r in rows], axis=0)
    scales = smoothing_scales(x_absmax, w_absmax, alpha)
    for matmul in site.matmuls:
        weight = graph.own_weight(matmul, 1)
        transposed = matmul.op_type == "Gemm" and attribute(matmul, "transB", 0)
        graph.set_array(
            matmul.input[1], weight * (scales[None, :] if transposed else scales[:, None])
        )
    if site.others:
        _insert_mul(graph, site, (1 / scales).astype(np.float32))
        how = "mul"
    else:
        for index in (1, 2):  # the scale, and the bias when there is one
            value = graph.own_weight(site.norm, index)
            if value is not None:
                graph.set_array(site.norm.input[index], value / scales)
        how = "layernorm"
    smoothed = x_absmax / scales
    return SmoothedSite(
        tensor=site.tensor,
        matmuls=len(site.matmuls),
        folded_into=how,
        channel_range_spread=Spread(
            before=round(float(x_absmax.max() / max(np.median(x_absmax), 1e-12)), 2),
            after=round(float(smoothed.max() / max(np.median(smoothed), 1e-12)), 2),
        ),
    )


def _insert_mul(graph: Graph, site: Site, inverse: np.ndarray) -> None:
    name = f"{SMOOTH_PREFIX}{site.tensor}"
    scale = graph.add_initializer(f"{name}/inverse_scale", inverse)
    output = f"{name}/output"
    mul = onnx.helper.make_node("Mul", [site.tensor, scale], [output], name)
    nodes = graph.graph.node
    position = list(nodes).index(site.norm) + 1
    nodes.insert(position, mul)
    for entry in site.entries:
        entry.input[0] = output


def smooth(model: onnx.ModelProto, samples: list[np.ndarray], alpha: float) -> Smoothed:
    """SmoothQuant every site of `model` in place, with statistics from `samples`."""
    graph = Graph(model)
    sites = smoothing_sites(graph)
    absmax = activation_absmax(model, sites, samples) if sites else {}
    changed = [smooth_site(graph, site, absmax[site.tensor], alpha) for site in sites]
    return Smoothed(alpha=alpha, sites=changed)


def smoothed_nodes(model: onnx.ModelProto) -> list[str]:
    """What int8 passes keep in float where SmoothQuant inserted a Mul: the Mul, the LayerNorm
    before it and the other readers of the tensor it smooths (the residual Add). ONNX Runtime
    quantizes a tensor once for all its quantized neighbours, so a quantized LayerNorm or
    residual Add would make the Mul read the tensor after int8 rounding with the outlier
    channels' scale: the precision would be lost before the smoothing."""
    graph = Graph(model)
    muls = [n for n in model.graph.node if n.name.startswith(SMOOTH_PREFIX)]
    around = [graph.producer[m.input[0]] for m in muls if m.input[0] in graph.producer]
    around += [r for m in muls for r in graph.readers.get(m.input[0], [])]
    return list(dict.fromkeys(n.name for n in muls + around if n.name))


def stats_samples(ctx: PassContext) -> list[np.ndarray]:
    data = required(ctx.calibration, "calibration")
    return data.take(min(STATS_SAMPLES, len(data)))


class SmoothDetails(Smoothed, PassDetails):
    """The smooth pass's details: the sites it changed, and the line the report shows."""


class SmoothParams(OnnxPassParams):
    alpha: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="how much of the activations' outliers moves into the weights (0: none)",
    )


@register("smooth")
class SmoothQuant(OnnxPass[SmoothParams]):
    """SmoothQuant: moves activation outliers of LayerNorm -> MatMul into the weights, for int8.

    Per-channel scales from data.calibration are folded into the LayerNorm (or a Mul the int8
    passes keep in float) and the MatMul weights after it; the float model computes the same
    outputs. Put it before quantize.static on transformers.

    Sample YAML:
        - type: smooth
          alpha: 0.5
    """

    Params = SmoothParams
    Details = SmoothDetails
    reads = ()  # data.calibration, which every stage's key covers

    def check(self, config: LoadedConfig) -> None:
        why = f"{self.key}: {self.name} measures activations on data.calibration"
        self.require_data(config, "calibration", why)

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        source, target = given.files()
        model = load(source)
        done = smooth(model, stats_samples(ctx), self.params.alpha)
        save(model, target)
        folded = sum(site.folded_into == "layernorm" for site in done.sites)
        line = (
            f"SmoothQuant (alpha {self.params.alpha:g}) at {len(done.sites)} LayerNorm -> "
            f"MatMul site(s), {folded} folded into the LayerNorm"
        )
        ctx.log(f"  {line}")
        return PassResult(details=SmoothDetails(**dict(done), notes=[line]))
