"""Tests, laid out as the code is: tests/<folder>/ holds the tests of compress/<folder>/
(tests/passes/test_prune.py: compress/passes/prune.py and the pruning it does; tests/measure/:
latency, interference, sizes, metrics), tests/cli/ the end-to-end tests of the commands as a user
runs them, and test_layers.py the library's structure. Shared helpers live in helper modules
here (conftest, report_builders, onnx_builders, attention_models, quant_models, hostile_files,
...): a test module never imports another."""
