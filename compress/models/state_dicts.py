"""torch.save files: a state_dict (read with the safe unpickler, weights only) built into the
module `model.arch` names, or, only with trust, a whole pickled module (unpickling runs code
from the file). A .safetensors state_dict is built the same way (compress.models)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from compress.config import ModelSection
from compress.errors import ConfigError, ModelLoadError, first_line
from compress.models.arch import build_arch


def load_pickle(path: Path, section: ModelSection, base_dir: Path, trust_pickle: bool, key: str):
    """A torch.save file: a state_dict (safe unpickler) or, with trust, a whole module."""
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        if not trust_pickle:
            raise ModelLoadError(
                f"{path}: is a whole pickled object{what}; unpickling it would run code from the "
                "file, so it was not loaded. Save a state_dict (torch.save(model.state_dict())) "
                f"and set {key}.arch, or use torch.jit.save / torch.export.save, or pass "
                "--trust-pickle if you trust where the file came from"
            ) from None
        return "pickled_module", _load_trusted_module(path, base_dir)
    except Exception as e:
        raise ModelLoadError(
            f"{path}: cannot read the torch.save file ({first_line(e)}); it may "
            "be truncated or corrupt"
        ) from None
    return "state_dict", build_from_state_dict(
        path, _unwrap_state_dict(obj, path), section, base_dir, key
    )


def _load_trusted_module(path: Path, base_dir: Path):
    import torch

    sys.path[:0] = [str(path.parent), str(base_dir)]  # where the module's classes likely live
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise ModelLoadError(
            f"{path}: cannot unpickle the module ({first_line(e)}); its classes must be importable"
        ) from None
    finally:
        del sys.path[:2]
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"{path}: the pickle holds a {type(module).__name__}, not a module")
    return module.eval()


def _unwrap_state_dict(obj: Any, path: Path) -> dict:
    import torch

    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a state_dict of tensors")
    return obj


def build_from_state_dict(path: Path, state: dict, section: ModelSection, base_dir: Path, key: str):
    if not section.arch:
        raise ConfigError(
            f"{path.name} is a state_dict, which has no architecture: set "
            f"{key}.arch: 'path/to/file.py:Factory' (or 'package.module:Factory') "
            f"and {key}.arch_args in the config"
        )
    model = build_arch(section.arch, section.arch_args, base_dir, key)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(expected.keys() - got), sorted(got.keys() - expected)
    wrong = [
        f"{k} {got[k]} vs {expected[k]}"
        for k in expected.keys() & got.keys()
        if got[k] != expected[k]
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
            for label, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatch", wrong),
            )
            if items
        )
        raise ModelLoadError(
            f"{path.name} does not fit {key}.arch {section.arch} with "
            f"arch_args {section.arch_args}: {detail}"
        )
    try:  # the keys and shapes fit; a dtype or a tensor kind may still not
        model.load_state_dict(state)
    except Exception as e:
        raise ModelLoadError(
            f"{path.name}: cannot load its tensors into {key}.arch {section.arch}: "
            + " ".join(str(e).split())[:300]  # torch puts the reason on the second line
        ) from None
    return model.eval()
