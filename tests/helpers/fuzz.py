"""Hypothesis strategies and settings shared by the fuzz tests: odd values of every type and
size, config keys, `--set` texts, and the settings every fuzz test runs under."""

from __future__ import annotations

import os
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.helpers.paths import ROOT

KEYS = [
    *("version", "seed", "model", "data", "passes", "export", "report", "gates", "type"),
    *("amount", "per_channel", "calibration", "eval", "train", "path", "inputs", "labels"),
    *("limit", "batch_sizes", "threads", "metric", "opset", "epochs", "max_accuracy_drop"),
    *("teacher", "student", "image", "size", "classes", "augment", "round_to", "exclude"),
]
ODD_TEXT = [
    *("", "../../etc/passwd", "/dev/zero", "/", ".", "nope.npz", "*a", "&a", "[", "{"),
    *("1e26", "-1", "0x7fffffffffffffffffff", ".nan", "top1", "quantize.static", "prune.channels"),
    *("x", "input_ids", "NaN", "\x00", "é" * 3),
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ODD_TEXT),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    ),
    max_leaves=12,
)


PLAUSIBLE_TEXT = [
    *("top1", "agreement", "cosine", "l1", "l2", "global", "minmax", "entropy", "percentile"),
    *("float32", "int64", "bool", "x", "y", "input_ids", "attention_mask", "auto", "revert"),
    *("quantize.static", "quantize.dynamic", "quantize.auto", "prune.channels", "distill"),
    *(str(ROOT / "sample_models" / name) for name in ("digits_train.npz", "text_eval.npz")),
    "features.0",
]


@st.composite
def override_texts(draw) -> str:
    key = draw(
        st.one_of(
            st.sampled_from(KEYS),
            st.sampled_from(["passes[0].amount", "report.batch_sizes", "data.eval.limit"]),
            st.text(max_size=10),
        )
    )
    value = draw(st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=12), VALUES.map(_flow)))
    return f"{key}={value}"


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...")


# `make test` runs each fuzz test's own examples, the same ones every run (derandomized: a failure
# reproduces). `make fuzz` runs COMPRESS_FUZZ_SCALE times as many, new ones each run: the
# inputs the fixed examples never reach.
FUZZ_SCALE = max(1, int(os.environ.get("COMPRESS_FUZZ_SCALE") or 1))
FUZZ = settings(
    deadline=None,
    derandomize=FUZZ_SCALE == 1,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def examples(count: int) -> int:
    """A fuzz test's number of examples: `count` in make test, scaled by `make fuzz`."""
    return count * FUZZ_SCALE
