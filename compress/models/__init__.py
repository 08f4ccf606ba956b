"""Load saved models; the format is detected from the file's content, never from its name.

Formats: TorchScript archives, torch.export programs (.pt2), state_dicts (+ `model.arch`) saved
by torch.save or as .safetensors, whole pickled modules (only with trust_pickle), ONNX files, and
model folders written by `save_pretrained` (built with transformers). A model is untrusted
input: every zip passes the archive limits (archives.py) when its format is detected, a .pt2 is
inspected so that torch runs no code from it (program_archive.py), a safetensors header is
checked before a tensor is read (safetensors_file.py), a model folder's files before
transformers reads them (hf_folder.py), and an ONNX file's tensors are sized from their
declarations before anything is allocated (onnx_tensors.py).
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from compress.config import ModelSection
from compress.data.archives import MODEL_ARCHIVE, UnsafeArchive, checked_members
from compress.errors import ModelLoadError, first_line
from compress.files import file_sha256, path_problem
from compress.models.decoder_graph import recorded_positions
from compress.models.hf_folder import is_model_folder, read_layout
from compress.models.hf_provenance import ModelFolder
from compress.models.safetensors_file import load_state_dict, looks_like_safetensors
from compress.models.state_dicts import build_from_state_dict, load_pickle

Format = Literal[
    "torchscript", "exported_program", "state_dict", "safetensors", "pickled_module", "onnx",
    "hf_folder",
]  # fmt: skip


@dataclass
class LoadedModel:
    path: Path
    format: Format
    sha256: str  # a folder's: one digest of the sha256 of every file its load read
    model: Any  # nn.Module, ScriptModule, ExportedProgram (ProgramDecoder), or onnx.ModelProto
    folder: ModelFolder | None = None  # a model folder: its files, architecture and task

    @property
    def is_onnx(self) -> bool:
        return self.format == "onnx"

    @property
    def positions(self) -> int | None:
        """A decoder's longest sequence, where its config says (a text-generation folder's
        module), its program bounds it (a decoder .pt2) or an ONNX file compress wrote from one
        records it (POSITIONS_KEY); None for any other model."""
        if self.is_onnx:
            return recorded_positions(self.model)
        return getattr(getattr(self.model, "layout", None), "max_positions", None)

    @property
    def fixed_batch(self) -> int | None:
        """The batch a torch.export program was saved with when it is fixed (no dynamic_shapes);
        a decoder program's is never (compress.models.program_decoder refuses it)."""
        if self.format != "exported_program" or hasattr(self.model, "layout"):
            return None  # an ExportedProgram has no `layout`: a ProgramDecoder has
        from compress.models.model_inputs import program_fixed_batch

        return program_fixed_batch(self.model)


def model_sha256(path: Path) -> str:
    """A model file's sha256; a model folder's digest of the files its load reads."""
    if Path(path).is_dir():
        from compress.models.hf_folder import folder_hashes

        return folder_hashes(read_layout(Path(path), trust_remote_code=True))[0]
    return file_sha256(path)


def detect_format(path: Path) -> Format:
    """Look inside the file: torch archives are zips with telltale members, safetensors starts
    with its header's length and `{`; else try ONNX. A model folder is one by its config.json."""
    if is_model_folder(path):
        return "hf_folder"
    with open(path, "rb") as f:
        head = f.read(9)
    if looks_like_safetensors(head):
        return "safetensors"
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
        "a torch.export .pt2, a torch.save or .safetensors state_dict, or ONNX); it may be "
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
    trust_remote_code: bool = False,
    inputs: list[str] | None = None,
) -> LoadedModel:
    """Load `path`; `base_dir` is the config's folder, against which `model.arch` resolves.
    `key` is where `section` sits in the config, for messages (a teacher's is its pass's);
    `sha256` the file's, when the caller hashed it already. A model folder's module takes
    `inputs` (the data's arrays, in order) and runs code from the folder only with
    `trust_remote_code`."""
    path = Path(path)
    check_model_path(path)
    if path.is_dir():
        return _load_folder(path, section, trust_remote_code, inputs)
    fmt = detect_format(path)
    if fmt == "torchscript":
        model = _load_torchscript(path)
    elif fmt == "exported_program":
        from compress.models.program_archive import load_program
        from compress.models.program_decoder import decoder_program

        program = load_program(path, trust_pickle)
        model = decoder_program(program, path.name) or program  # a causal LM with its cache
    elif fmt == "onnx":
        model = _load_onnx(path)
    elif fmt == "safetensors":
        state = load_state_dict(path)
        model = build_from_state_dict(path, state, section, base_dir, key)
    else:
        fmt, model = load_pickle(path, section, base_dir, trust_pickle, key)
    return LoadedModel(path, fmt, sha256 or file_sha256(path), model)


def check_model_path(path: Path) -> None:
    """A model is a regular file or a model folder; anything else is named for what it is."""
    if path.is_dir():
        if not is_model_folder(path):
            read_layout(path, trust_remote_code=False)  # says what the folder lacks
        return
    problem = path_problem(path, "a model file or a model folder")
    if problem:
        raise ModelLoadError(f"model {path}: {problem}")


def _load_folder(path: Path, section: ModelSection, trust: bool, inputs: list[str] | None):
    from compress.models.hf_load import load_folder

    layout = read_layout(path, trust)
    module, record, digest = load_folder(layout, section, inputs, trust)
    return LoadedModel(path, "hf_folder", digest, module, record)


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

    from compress.models import ort_schemas
    from compress.models.onnx_tensors import onnx_tensor_problem

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(e)})") from None
    problem = onnx_tensor_problem(proto, path.parent)
    if problem:
        raise ModelLoadError(f"{path}: {problem}; the file is corrupt or crafted")
    try:
        # checked from the file, before the weights are read: checking the loaded ModelProto
        # serializes a second copy of them (and fails past protobuf's 2 GB); ONNX Runtime's
        # RMSNorm (a decoder compress exports has it) counts as an operator
        ort_schemas.register_for(proto)
        onnx.checker.check_model(str(path))
        onnx.load_external_data_for_model(proto, str(path.parent))
    except Exception as e:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(e)})") from None
    return proto
