"""How much memory a batch takes in ONNX Runtime, estimated from one real sample, so that a
latency batch the machine cannot hold is refused by name instead of the kernel's OOM killer
ending the run without a word."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ConfigError


def bytes_per_sample(path: Path, sample: list[np.ndarray]) -> int:
    """Inputs plus twice the largest tensor the graph makes for one sample (an op's input and
    output are alive together); ONNX Runtime reuses the rest of its buffers."""
    from compress.measure.macs import run_file_for_outputs

    def produced(graph: Any) -> set[str]:
        return {name for node in graph.node for name in node.output if name}

    outputs, rows = run_file_for_outputs(Path(path), produced, sample)
    largest = max((a.nbytes for a in outputs.values()), default=0) // rows
    return sum(a.nbytes for a in sample) + 2 * largest


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: nothing to compare against
        return None


def check_batch_memory(path: Path, one_sample: list[np.ndarray], batch_sizes: list[int]) -> None:
    """ConfigError when the largest of `batch_sizes` needs more than half the machine's memory.
    A batch of one needs no estimate: it is what every later step runs anyway (the export's
    parity check already has), and the estimate itself holds every tensor of a sample at once
    beside the weights (on a 0.5B decoder it set the export's peak memory)."""
    memory = physical_memory()
    largest = max(batch_sizes)
    if memory is None or largest <= 1:
        return
    need = largest * bytes_per_sample(path, one_sample)
    if need > memory // 2:
        fits = max(1, (memory // 2) // max(1, need // largest))
        raise ConfigError(
            f"report.batch_sizes: a batch of {largest} needs about {need / 1e9:.1f} GB in ONNX "
            f"Runtime, more than half of this machine's {memory / 1e9:.1f} GB; measure batches "
            f"of at most {fits}"
        )
