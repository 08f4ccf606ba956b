"""Tests, one module per behaviour a user relies on (test_prune: pruning, test_interference: busy
machines, test_layers: the library's structure), named for it rather than for a source file.
Shared helpers live in helper modules (conftest, onnx_builders, attention_models, quant_models,
hostile_files, ...): a test module never imports another."""
