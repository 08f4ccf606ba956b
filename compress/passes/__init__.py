"""Built-in passes, one module each. Importing this package loads none of them (so that the
config and the measurements do not pull in torch-pruning and the quantizers): the registry
imports `BUILTIN` explicitly, the first time a pass is looked up, so an import error surfaces."""

BUILTIN = ("auto", "cluster", "distill", "equalize", "precision", "prune", "quantize", "smooth")
