"""A torch.export archive (.pt2): inspected with zipfile and json, then loaded by torch.

torch 2.13's torch.export.load runs code from the file in more ways than its JSON (for which see
program_code): it unpickles weights and constants marked `use_pickle` and opaque constants
(torch.load(weights_only=False), pickle.loads), torchbind custom objects, example inputs that its
safe unpickler refuses (it then retries with the unsafe one), and the pre-2.8 (legacy) members;
and it loads anything under data/aotinductor/ as a shared library. So, first:
  - every member must be one torch.export.save writes, all in one top-level folder as torch's
    reader expects (an allowlist: a member torch may read in a new way is refused, not missed);
  - pickle-based content is refused unless the user trusts the file (--trust-pickle);
  - native code is refused even then: compress uses the ExportedProgram only, never the
    AOTInductor runner, so loading it would run foreign code for nothing.
Then torch loads the program from the file handle that was inspected (not the path again).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from compress.data.archives import MODEL_ARCHIVE, UnsafeArchive, checked_members
from compress.errors import ModelLoadError, first_line
from compress.models.program_code import program_code_problem

WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
PROGRAM = "models/model.json"
_WRITTEN = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt|extra/[^/]+"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json"
    r"|data/constants/(tensor|custom_obj|opaque_obj)_\d+"  # what each one is: the config says
)
_LEGACY = ("data/weights/model.pt", "data/constants/model.pt")  # pre-2.8 pickles, still loaded
_NATIVE = re.compile(r"data/aotinductor/.*|.*\.(so|dll|dylib|pyd)", re.IGNORECASE)
_TRUST = "pass --trust-pickle if you trust where the file came from"


def load_program(path: Path, trust_pickle: bool):
    """The ExportedProgram in `path`, once inspected; ModelLoadError (one line) if it is unsafe
    or torch cannot load it or make a module of it."""
    import torch

    with open(path, "rb") as handle, _torch_export_errors() as logged:
        check_program_archive(handle, path, trust_pickle)
        handle.seek(0)
        try:
            program = torch.export.load(handle)
            program.module()  # fails here on a bad signature, not later as an internal error
        except Exception as e:
            cause = logged[-1] if logged else e  # torch logs the real error, raises a generic one
            raise ModelLoadError(
                f"{path}: cannot load the torch.export program ({first_line(cause)}); "
                "it may be corrupt or saved by a different torch version"
            ) from None
    return program


@contextlib.contextmanager
def _torch_export_errors() -> Iterator[list[BaseException]]:
    """The exceptions torch.export logs (with a traceback, on stderr) while it loads: kept for
    the one-line message instead."""
    logged: list[BaseException] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                logged.append(record.exc_info[1])

    logger = logging.getLogger("torch.export")  # torch gives it a stderr handler of its own
    handlers, propagate = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [Keep()], False
    disabled = logging.root.manager.disable  # the CLI disables logging while libraries work
    logging.disable(logging.NOTSET)
    try:
        yield logged
    finally:
        logging.disable(disabled)
        logger.handlers, logger.propagate = handlers, propagate


def check_program_archive(handle: BinaryIO, path: Path, trust_pickle: bool) -> None:
    """Raise ModelLoadError (one line) unless torch can load the archive in `handle` without
    running code from it; with `trust_pickle`, only native code and the archive's shape count."""
    try:
        with zipfile.ZipFile(handle) as archive:  # leaves `handle` open: torch reads it next
            members = checked_members(archive, os.fstat(handle.fileno()).st_size, MODEL_ARCHIVE)
            names = [m.orig_filename for m in members]
            _refuse_native_code(names)  # first: --trust-pickle does not cover it
            if _is_legacy(names):
                if not trust_pickle:
                    raise UnsafeArchive(
                        "is a torch.export archive in the pre-2.8 format, whose weights, "
                        "constants and example inputs torch loads by unpickling, which can run "
                        "code from the file; save the program again with torch.export.save "
                        f"(torch 2.8 or later), or {_TRUST}"
                    )
                return
            root = _check_members(names)
            if not trust_pickle:
                _check_contents(archive, root, names)
    except UnsafeArchive as e:
        raise ModelLoadError(f"{path}: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, RecursionError) as e:
        raise ModelLoadError(
            f"{path}: the torch.export archive is truncated or corrupt ({first_line(e)}); save "
            "it again or copy the complete file"
        ) from None


def _is_legacy(names: list[str]) -> bool:
    """torch.export.load falls back to the pre-2.8 zip: `version` and serialized_* at the top."""
    return "version" in names and "serialized_exported_program.json" in names


def _refuse_native_code(names: list[str]) -> None:
    for name in names:
        member = name.split("/", 1)[-1]
        if _NATIVE.fullmatch(member):
            raise UnsafeArchive(
                f"member {member} is compiled native code (AOTInductor), which torch would load "
                "as a shared library; compress never loads native code from a model file, not "
                "even with --trust-pickle: save the program with torch.export.save instead"
            )


def _check_members(names: list[str]) -> str:
    """The one root folder, once every member under it is one torch.export.save writes."""
    roots = sorted({name.split("/", 1)[0] for name in names})
    if len(roots) != 1 or any("/" not in name for name in names):
        raise UnsafeArchive(
            "the members of a torch.export archive sit in one top-level folder, as "
            f"torch.export.save writes them; this one has {', '.join(roots[:3])!s}"
        )
    for name in names:
        member = name.split("/", 1)[1]
        if member in _LEGACY:
            raise UnsafeArchive(
                f"member {member} holds weights in the pre-2.8 (legacy) format, which torch "
                f"loads by unpickling, which can run code from the file; save the program again "
                f"with torch.export.save, or {_TRUST}"
            )
        if not _WRITTEN.fullmatch(member):
            raise UnsafeArchive(
                f"member {member} is not one torch.export.save writes, so what torch would do "
                "with it is unknown; save the program again with torch.export.save"
            )
    return roots[0]


def _check_contents(archive: zipfile.ZipFile, root: str, names: list[str]) -> None:
    """Pickles that torch would load, sample inputs only the unsafe unpickler reads, and code in
    the program's JSON."""
    read = lambda member: archive.read(f"{root}/{member}")  # noqa: E731
    present = set(names)
    pickled = []
    if f"{root}/{WEIGHTS_CONFIG}" in present:
        for fqn, meta in _payload_config(read(WEIGHTS_CONFIG), WEIGHTS_CONFIG):
            if meta.get("use_pickle"):
                pickled.append(f"weight {fqn!r} (use_pickle, data/weights/{meta['path_name']})")
    if f"{root}/{CONSTANTS_CONFIG}" in present:
        for fqn, meta in _payload_config(read(CONSTANTS_CONFIG), CONSTANTS_CONFIG):
            kind = _pickled_constant(meta)
            if kind:
                pickled.append(f"constant {fqn!r} ({kind}, data/constants/{meta['path_name']})")
    if pickled:
        more = f" and {len(pickled) - 1} more" if len(pickled) > 1 else ""
        raise UnsafeArchive(
            f"{pickled[0]}{more} would be unpickled by torch.export.load, which can run code "
            f"from the file, so it was not loaded; save the program from plain tensors, or {_TRUST}"
        )
    if f"{root}/{SAMPLE_INPUTS}" in present:
        _check_sample_inputs(read(SAMPLE_INPUTS))
    if f"{root}/{PROGRAM}" in present:
        problem = program_code_problem(json.loads(read(PROGRAM)))
        if problem:
            raise UnsafeArchive(
                f"{PROGRAM}: {problem}; torch runs such strings as Python code, and "
                f"torch.export.save does not write them, so it was not loaded; {_TRUST}"
            )


def _payload_config(data: bytes, member: str) -> list[tuple[str, dict]]:
    """(name, entry) of a weights or constants config: {"config": {name: {path_name, ...}}}."""
    config = json.loads(data)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict) or not all(
        isinstance(m, dict) and isinstance(m.get("path_name"), str) for m in entries.values()
    ):
        raise ValueError(f"{member} is not a payload config")
    return list(entries.items())


def _pickled_constant(meta: dict) -> str | None:
    """How torch would load a constant, when that is by unpickling (see its _load_constants)."""
    path_name = meta["path_name"]
    if path_name.startswith("custom_obj_"):
        return "a torchbind custom object"
    if path_name.startswith("opaque_obj_"):
        return "an opaque object"
    return "use_pickle" if meta.get("use_pickle") else None


def _check_sample_inputs(data: bytes) -> None:
    """torch loads them with weights_only=True and, if that fails, with weights_only=False: the
    safe unpickler must succeed here, or the unsafe one would run."""
    import torch

    if not data:
        return  # torch reads no sample inputs from an empty member
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            checked_members(inner, len(data), MODEL_ARCHIVE)
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))  # what the safe unpickler refused
        why = f"it names {found.group(1)}" if found else first_line(e, 100)
        raise UnsafeArchive(
            f"its example inputs ({SAMPLE_INPUTS}) do not load with torch's safe unpickler "
            f"({why}), and torch.export.load would then unpickle them without "
            f"restriction, which can run code from the file, so it was not loaded; {_TRUST}"
        ) from None
