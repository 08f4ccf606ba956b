"""Tests, laid out as the code is: tests/<folder>/ holds the tests of compress/<folder>/
(tests/passes/test_prune.py: compress/passes/prune.py and the pruning it does; tests/measure/:
latency, interference, sizes, metrics), tests/cli/ the end-to-end tests of the commands as a user
runs them, and test_layers.py the library's structure. Fixtures live in conftest.py, every other
shared helper in tests/helpers/ (paths, cli, configs, onnx_builders, report_builders...): a test
module never imports another."""
