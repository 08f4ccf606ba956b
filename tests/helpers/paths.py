"""Where the tree's files are: the repository root, the sample models and data, the recipes."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
CONFIGS = ROOT / "configs"
