"""Load saved models; the format is detected from the file's content, never from its name.

Formats: TorchScript archives, torch.export programs (.pt2), state_dicts (+ `model.arch`),
whole pickled modules (only with trust_pickle), and ONNX files. A model file is untrusted input:
every zip passes the archive limits (archives.py) when its format is detected, a .pt2 is
inspected so that torch runs no code from it (program_archive.py), and an ONNX file's tensors
are sized from their declarations before anything is allocated (onnx_tensors.py).
"""

from __future__ import annotations

import re
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from compress.config import ModelSection
from compress.errors import ConfigError, ModelLoadError, first_line
from compress.files import file_sha256, path_problem
from compress.models.arch import build_arch
from compress.models.archives import MODEL_ARCHIVE, UnsafeArchive, checked_members

Format = Literal["torchscript", "exported_program", "state_dict", "pickled_module", "onnx"]


@dataclass
class LoadedModel:
    path: Path
    format: Format
    sha256: str
    model: Any  # nn.Module, ScriptModule, ExportedProgram, or onnx.ModelProto

    @property
    def is_onnx(self) -> bool:
        return self.format == "onnx"

    @property
    def fixed_batch(self) -> int | None:
        """The batch a torch.export program was saved with when it is fixed (no dynamic_shapes)."""
        if self.format != "exported_program":
            return None
        from compress.torch.export import program_fixed_batch

        return program_fixed_batch(self.model)

    def callable(self):
        """A torch callable for inference (an ExportedProgram runs through `.module()`, in chunks
        of its batch when that is fixed)."""
        if self.format != "exported_program":
            return self.model
        if fixed := self.fixed_batch:
            from compress.measure.fixed_batch import FixedBatchModule

            return FixedBatchModule(self.model.module(), fixed)
        return self.model.module()


def detect_format(path: Path) -> Format:
    """Look inside the file: torch archives are zips with telltale members; else try ONNX."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        names = _archive_names(path)
        if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
            return "exported_program"
        if "serialized_exported_program.json" in names:  # the pre-2.8 .pt2 layout
            return "exported_program"
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "state_dict"  # or a pickled module: told apart by the safe unpickler
    elif head[:1] == b"\x80":  # the legacy (non-zip) torch.save pickle stream
        return "state_dict"
    elif _looks_like_onnx(path):
        return "onnx"
    raise ModelLoadError(
        f"{path}: not a recognised model file (expected a TorchScript archive, "
        "a torch.export .pt2, a torch.save state_dict, or ONNX); it may be "
        "truncated or corrupt"
    )


def _archive_names(path: Path) -> list[str]:
    """The members of a zip, once they are within the archive limits (before any is read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = checked_members(archive, path.stat().st_size, MODEL_ARCHIVE)
    except UnsafeArchive as e:
        raise ModelLoadError(f"{path}: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError):
        raise ModelLoadError(
            f"{path}: the model archive is truncated or corrupt; save it "
            "again or copy the complete file"
        ) from None
    return [m.orig_filename for m in members]


def _looks_like_onnx(path: Path) -> bool:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return proto.ir_version > 0 and len(proto.graph.node) > 0


def load_model(
    path: Path,
    section: ModelSection,
    base_dir: Path,
    trust_pickle: bool = False,
    key: str = "model",
    sha256: str | None = None,
) -> LoadedModel:
    """Load `path`; `base_dir` is the config's folder, against which `model.arch` resolves.
    `key` is where `section` sits in the config, for messages (a teacher's is its pass's);
    `sha256` the file's, when the caller hashed it already."""
    path = Path(path)
    problem = path_problem(path, "a model file")
    if problem:
        raise ModelLoadError(f"model {path}: {problem}")
    fmt = detect_format(path)
    if fmt == "torchscript":
        model = _load_torchscript(path)
    elif fmt == "exported_program":
        from compress.models.program_archive import load_program

        model = load_program(path, trust_pickle)
    elif fmt == "onnx":
        model = _load_onnx(path)
    else:
        fmt, model = _load_pickle(path, section, base_dir, trust_pickle, key)
    return LoadedModel(path, fmt, sha256 or file_sha256(path), model)


def _load_torchscript(path: Path):
    import torch

    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated, but still the loader
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as e:
        raise ModelLoadError(
            f"{path}: cannot load the TorchScript archive ({first_line(e)}); "
            "it may be corrupt or saved by a newer torch"
        ) from None
    if not hasattr(module, "forward"):  # a scripted module may export other methods only
        raise ModelLoadError(
            f"{path}: the TorchScript module has no forward method, which compress runs; "
            "save a module that defines forward"
        )
    return module


def _load_onnx(path: Path):
    """Size every tensor from its declaration first, then read the external data."""
    import onnx

    from compress.models.onnx_tensors import onnx_tensor_problem

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(e)})") from None
    problem = onnx_tensor_problem(proto, path.parent)
    if problem:
        raise ModelLoadError(f"{path}: {problem}; the file is corrupt or crafted")
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(e)})") from None
    return proto


def _load_pickle(path: Path, section: ModelSection, base_dir: Path, trust_pickle: bool, key: str):
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
    return "state_dict", _build_from_state_dict(
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


def _build_from_state_dict(
    path: Path, state: dict, section: ModelSection, base_dir: Path, key: str
):
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
