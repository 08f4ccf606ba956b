"""Weight sharing: each layer's weights snapped to N shared values found by k-means.

The file keeps float32 tensors, so its size on disk is unchanged; what shrinks is how well it
compresses (the report's gzip_bytes), as in Deep Compression's weight-sharing stage.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from compress.errors import ConfigError
from compress.models.onnx_files import save_onnx
from compress.passes.base import OnnxPass, OnnxPassParams, PassDetails, PassInput, PassResult
from compress.passes.registry import register

if TYPE_CHECKING:
    from compress.passes.context import PassContext

WEIGHT_INPUTS = {"Conv": 1, "Gemm": 1, "MatMul": 1, "ConvTranspose": 1}


class ClusterParams(OnnxPassParams):
    clusters: int = Field(default=16, ge=2, le=256, description="shared values per layer")
    layers: list[str] | None = Field(
        default=None, description="initializer names or glob patterns (default: every weight)"
    )
    min_size: int = Field(default=256, ge=1, description="skip weights with fewer elements")
    iterations: int = Field(default=20, ge=1, le=200)


def kmeans_1d(values: np.ndarray, clusters: int, iterations: int) -> np.ndarray:
    """Values replaced by the nearest of `clusters` centroids (initialised on quantiles)."""
    flat = values.ravel().astype(np.float64)
    centroids = np.quantile(flat, np.linspace(0, 1, clusters))
    for _ in range(iterations):
        edges = (centroids[1:] + centroids[:-1]) / 2
        assignment = np.searchsorted(edges, flat)
        sums = np.bincount(assignment, weights=flat, minlength=clusters)
        counts = np.bincount(assignment, minlength=clusters)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids):
            break
        centroids = np.sort(updated)
    edges = (centroids[1:] + centroids[:-1]) / 2
    return centroids[np.searchsorted(edges, flat)].astype(values.dtype).reshape(values.shape)


@register("weights.cluster")
class WeightClustering(OnnxPass[ClusterParams]):
    """Share weights: k-means per layer to N values, so the model compresses far better.

    Sample YAML:
        - type: weights.cluster
          clusters: 32
    """

    Params = ClusterParams
    Details = PassDetails  # nothing to report beyond the stage's figures
    reads = ()

    def apply(self, given: PassInput, ctx: PassContext) -> PassResult:
        import onnx
        from onnx import numpy_helper

        source, target = given.files()
        proto = onnx.load(str(source))
        weights = {
            node.input[index]
            for node in proto.graph.node
            if (index := WEIGHT_INPUTS.get(node.op_type)) is not None and index < len(node.input)
        }
        chosen = [
            init
            for init in proto.graph.initializer
            if init.name in weights
            and self._selected(init.name)
            and init.data_type == onnx.TensorProto.FLOAT
            and np.prod(init.dims) >= self.params.min_size
        ]
        if not chosen:
            raise ConfigError(
                f"{self.key}: {self.name} found no float weights to cluster "
                f"(layers: {self.params.layers}, min_size: {self.params.min_size})"
            )
        for init in chosen:
            shared = kmeans_1d(
                numpy_helper.to_array(init), self.params.clusters, self.params.iterations
            )
            init.CopyFrom(numpy_helper.from_array(shared, init.name))
        ctx.log(f"clustered {len(chosen)} weight tensors to {self.params.clusters} values each")
        save_onnx(proto, target)
        return PassResult()

    def _selected(self, name: str) -> bool:
        patterns = self.params.layers
        return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)
