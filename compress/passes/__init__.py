"""The pass contract (base), the registry, and the passes that are not quantization: pruning
(prune), distillation (distill), weight sharing (cluster). Quantization is compress.quant.

Importing this package loads no pass (so that the config and the measurements do not pull in
torch-pruning and the quantizers): the registry imports `BUILTIN` explicitly, the first time a
pass is looked up, so an import error surfaces."""

# The modules that register the built-in passes, in the order `compress passes` lists them.
BUILTIN = (
    "compress.passes.cluster",
    "compress.passes.distill",
    "compress.passes.prune",
    "compress.quant.auto",
    "compress.quant.equalize",
    "compress.quant.int4",
    "compress.quant.int8",
    "compress.quant.precision",
    "compress.quant.smooth",
)
