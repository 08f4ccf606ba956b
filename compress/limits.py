"""Ceilings on what compress reads from untrusted input, in one place so that the README's
Security section and the checks agree. Each is far above what a real model, config or data set
needs, and far below what would exhaust a machine before a check could say no."""

from __future__ import annotations

# --- configs (YAML files and --set values) ---------------------------------------------------
MAX_CONFIG_BYTES = 1 << 20  # a config file; real recipes are a few KB
MAX_YAML_DEPTH = 32  # nested mappings / lists
MAX_YAML_NODES = 20_000  # values after every alias is expanded (an alias bomb expands to 10^9)
MAX_CONFIG_INT = 2**63 - 1  # any integer in a config; larger ones are refused at load
MAX_THREADS = 256  # report.threads: ONNX Runtime starts one OS thread each
MAX_BATCH_SIZE = 1 << 20  # report.batch_sizes; the batch's bytes are checked against the data too
MAX_BATCH_BYTES = 4 << 30  # the inputs of the largest latency batch, held in memory per stage

# --- data files ------------------------------------------------------------------------------
MAX_IMAGE_SIDE = 8192  # image.size: what every image is resized to
MAX_IMAGE_PIXELS = 100_000_000  # a source image's width x height, checked before decoding it
MAX_REPORT_BYTES = 64 << 20  # a report.json read back by `compress report`
