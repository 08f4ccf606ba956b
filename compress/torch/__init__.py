"""Torch models that passes change: editable modules, export, training loops, pruning glue."""
