"""Built-in passes. Each module is imported here explicitly so that an import error surfaces."""

from compress.passes import auto, cluster, distill, precision, prune, quantize  # noqa: F401
