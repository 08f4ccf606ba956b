"""Built-in passes. Each module is imported here explicitly so that an import error surfaces."""

from compress.passes import (  # noqa: F401
    auto,
    cluster,
    distill,
    equalize,
    precision,
    prune,
    quantize,
    smooth,
)
