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
MAX_TEXT_DATA_BYTES = 1 << 30  # a .txt / .jsonl / .csv of text examples, read whole
MAX_REPORT_BYTES = 64 << 20  # a report.json read back by `compress report`
MAX_TABLE_BYTES = 4 << 30  # a .csv data file, counted as it is read
MAX_IMAGE_FILE_BYTES = 1 << 30  # one image file, before it is decoded

# --- model and data archives (zip files, ONNX tensors) -----------------------------------------
# A zip declares each member's uncompressed size; a bomb declares gigabytes in a small file.
# torch stores its members uncompressed (torch.export.save, torch.jit.save, torch.save), so a
# real archive declares about its own size: 10x plus a little slack is generous.
MAX_ARCHIVE_ENTRIES = 20_000  # members of one zip; a large model has one per tensor (~1,000s)
MAX_MODEL_ARCHIVE_RATIO = 10  # declared uncompressed bytes per byte of file ...
MAX_MODEL_ARCHIVE_SLACK = 1 << 20  # ... plus 1 MiB (small archives: headers, JSON)
MAX_MODEL_ARCHIVE_BYTES = 32 << 30  # and never more than 32 GiB declared in all
# .npz data may be deflated (numpy.savez_compressed): a real data set compresses 2-100x (an
# attention mask of ones did 119x here); numpy.savez (stored) always passes.
MAX_DATA_ARCHIVE_RATIO = 200
MAX_DATA_ARCHIVE_SLACK = 16 << 20
MAX_DATA_ARCHIVE_BYTES = 8 << 30
# ONNX: a tensor's size is declared by its dims; external data is read by that declaration and
# a sparse initializer is made dense at load, so both are checked before anything is allocated.
MAX_ONNX_TENSOR_BYTES = 8 << 30  # one tensor (dense); a 70B LLM's largest, fp32, is ~4 GiB
MAX_ONNX_MODEL_BYTES = 64 << 30  # all tensors of one model together
