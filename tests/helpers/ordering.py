"""The order make test's workers take the test files in (a plugin: pyproject.toml's addopts).

make test's workers take whole files (--dist loadfile) in the order collected, and a long file
started last runs alone at the end while the other worker idles: the files that take longest
(as measured under make test) go first, the others after them as collected."""

from __future__ import annotations

import pytest

LONGEST_FIRST = (
    "tests/cli/test_configs.py",
    "tests/passes/test_distill.py",
    "tests/sweep/test_sweep.py",
    "tests/measure/test_generation.py",
    "tests/passes/test_contract.py",
    "tests/cli/test_cancel.py",
    "tests/passes/test_prune.py",
    "tests/torch/test_head_pruning.py",
    "tests/batch/test_warm.py",
    "tests/batch/test_batch.py",
    "tests/quant/test_tied_head.py",
    "tests/cache/test_cache.py",
    "tests/cli/test_folders.py",
    "tests/job/test_program_lm.py",
    "tests/torch/test_program_shapes.py",
    "tests/cli/test_run.py",
    "tests/quant/test_auto_decoders.py",
    "tests/models/test_untrusted_models.py",
    "tests/config/test_fuzz_config.py",
    "tests/measure/test_perplexity.py",
    "tests/models/test_onnx_files.py",
    "tests/torch/test_kv_export.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FIRST's files first, in that order; the others after, as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
