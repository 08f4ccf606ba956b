"""The output folder of `compress run` (and its --junit file): checked before any work, written
only at the very end, all files together, by the renames of compress.job.staging.

A run that does not finish (exit 1, bad input found after the start, a signal) leaves no results
in OUT. With --force the previous results (OUTPUT_FILES) are moved into a hidden folder made in
OUT once the inputs are checked, and that folder is removed when the run ends, whatever the
outcome: the new results have replaced them, or OUT holds no results at all, never stale ones.
Nothing else in OUT is touched. An old --junit file is removed at that moment too, for the same
reason: a CI job must not read a previous run's gates as this run's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from compress.errors import OutputDirError
from compress.job.inputs import refuse_overwriting
from compress.job.interrupts import uninterrupted
from compress.job.staging import (
    STAGING_PREFIX,
    StagingArea,
    remove_leftovers,
    write_error,
)
from compress.models.run_files import InputFile

OUTPUT_FILES = ("model.onnx", "report.json", "report.md", "report.html")
# model.onnx's weights, beside it, when they are too large for one file (compress.models.onnx_files)
MODEL_DATA = "model.onnx.data"
ASIDE_PREFIX = f"{STAGING_PREFIX}previous-"


def check_out_dir(out_dir: Path, force: bool, files: tuple[str, ...] = OUTPUT_FILES) -> None:
    """Refuse, before any work, an output folder the run could not finish in (`files`: the
    results it will write)."""
    check_folder_path(out_dir, "-o")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputDirError(
            f"output folder {out_dir} is not empty; pass --force to replace its "
            "results or choose another -o"
        )
    for name in files:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            raise OutputDirError(f"{path} is a folder; remove it or choose another -o")


def check_folder_path(path: Path, option: str) -> None:
    """Refuse a dangling link, a file, or a folder that cannot be written (or, when it does not
    exist yet, the folder it would be made in)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise OutputDirError(
            f"{option} {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
            "create that folder or remove the link"
        )
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"output path {path} exists and is not a folder")
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"{option} {path}: {existing} is not a folder; choose another")
    if not os.access(existing, os.W_OK | os.X_OK):  # EROFS and immutable count, even for root
        where = "" if existing == path else f" (it would be made in {existing}, which is not)"
        raise OutputDirError(
            f"output folder {path} is not writable{where}: {_why_not_writable(existing)}; "
            f"make it writable or choose another {option}"
        )


def check_writable(path: Path, option: str) -> None:
    """Refuse, before a run spends any time, a single output file that cannot be written."""
    path = Path(path)
    folder = path.absolute().parent  # a link at `path` is replaced, so its own folder counts
    if path.is_dir():
        raise OutputDirError(f"{option} {path}: is a folder; give a file path")
    if not folder.is_dir():
        raise OutputDirError(f"{option} {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"{option} {path}: folder {folder} is not writable ({_why_not_writable(folder)}); "
            "choose another"
        )


def check_output_file(path: Path, force: bool, inputs: list[InputFile], option: str = "-o") -> None:
    """Refuse, before any work, a single output file (init's config, a rendered report) that
    cannot be written, is one of the command's `inputs`, or exists without --force."""
    check_writable(path, option)
    refuse_overwriting(path, inputs, option, "choose another file")
    if os.path.lexists(path) and not force:
        raise OutputDirError(f"{option} {path}: the file exists; pass --force to replace it")


def _why_not_writable(folder: Path) -> str:
    read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
    return "read-only file system" if read_only else "permission denied"


class OutputFolder:
    """One run's results in OUT and its --junit file. In order: `check` (before any work),
    `refuse_overwriting` and `clear_previous` (once the inputs are loaded), `stage`, `commit`;
    `close` always, last: it undoes everything unless the commit happened. `files` are the
    results (`compress analyze` writes others than `compress run`)."""

    def __init__(
        self,
        path: Path,
        force: bool,
        junit: Path | None = None,
        files: tuple[str, ...] = OUTPUT_FILES,
    ):
        self.path, self.force, self.junit, self.files = Path(path), force, junit, files
        self.committed = False
        self._created: list[Path] = []  # folders this run made, outermost first
        self._aside: Path | None = None
        self._areas: list[StagingArea] = []

    def check(self) -> None:
        check_out_dir(self.path, self.force, self.files)
        if self.junit is not None:
            check_writable(self.junit, "--junit")
            if self.junit.name in self.files and (
                self.junit.absolute().parent.resolve() == self.path.resolve()
            ):
                raise OutputDirError(
                    f"--junit {self.junit} is one of the run's own results; choose another file"
                )

    def refuse_overwriting(self, inputs: list[InputFile]) -> None:
        """Refuse (exit 2) to replace or remove a file the run reads."""
        for name in self.files:
            fix = "choose another -o, or move that file out of it"
            refuse_overwriting(self.path / name, inputs, "--force", fix)
        if self.junit is not None:
            refuse_overwriting(self.junit, inputs, "--junit", "choose another file")

    def clear_previous(self) -> None:
        """Move the previous results aside and remove an old --junit file, all or none."""
        names = [*self.files, *([MODEL_DATA] if "model.onnx" in self.files else [])]
        present = [name for name in names if os.path.lexists(self.path / name)]
        if self.force and self.path.is_dir():
            remove_leftovers(self.path)  # of a run killed outright in this folder
        try:
            with uninterrupted():
                if present:
                    aside = Path(tempfile.mkdtemp(prefix=ASIDE_PREFIX, dir=self.path))
                    self._aside = aside
                    for name in present:
                        os.rename(self.path / name, aside / name)  # a link moves, unfollowed
                if self.junit is not None and os.path.lexists(self.junit):
                    os.unlink(self.junit)
        except OSError as e:
            raise write_error(Path(e.filename or self.path), e, "-o") from None

    def stage(self, model_file: Path | None, texts: dict[str, str], junit_text: str = "") -> None:
        """Write every result under a staging name: model.onnx (a copy of `model_file`, when
        there is one), the `texts` by name, and the --junit file."""
        self._make_folder()
        area = self._area(self.path, "-o")
        if model_file is not None:
            self._stage_model(area, model_file)
        for name, text in texts.items():
            area.add_text(name, text)
        if self.junit is not None:
            self._area(self.junit.absolute().parent, "--junit").add_text(
                self.junit.name, junit_text
            )

    @staticmethod
    def _stage_model(area: StagingArea, model_file: Path) -> None:
        """model.onnx, and its weights as MODEL_DATA where they are in a file of their own (the
        model file rewritten to name it; both renamed into place with the rest)."""
        from compress.models.onnx_files import external_locations, relocated

        locations = external_locations(model_file)
        if not locations:
            area.add_copy("model.onnx", model_file)
            return
        if len(locations) > 1:
            raise OutputDirError(
                f"{model_file.name} keeps its weights in {len(locations)} files; compress "
                "publishes one data file beside model.onnx"
            )
        area.add_copy(MODEL_DATA, model_file.parent / locations.pop())
        area.add_bytes("model.onnx", relocated(model_file, MODEL_DATA))

    def commit(self) -> None:
        """Rename every staged file into place. A signal that arrives meanwhile is raised once
        the renames are done, and `close` then removes them all: all results or none."""
        with uninterrupted(commit=True):
            for area in self._areas:
                area.place()
        self.committed = True

    def close(self) -> None:
        with uninterrupted():  # a Ctrl-C during the cleanup after a failure waits for its end
            for area in self._areas:
                if not self.committed:
                    area.undo()
                area.close()
            if self._aside is not None:
                shutil.rmtree(self._aside, ignore_errors=True)
            if not self.committed:
                for folder in reversed(self._created):
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)  # only when empty: a file put there meanwhile stays

    def _area(self, folder: Path, option: str) -> StagingArea:
        area = StagingArea(folder, option)
        self._areas.append(area)
        return area

    def _make_folder(self) -> None:
        missing = []
        folder = self.path
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            with uninterrupted():  # made and recorded for removal, or not made
                try:
                    os.mkdir(folder)
                except OSError as e:
                    raise write_error(folder, e, "-o") from None
                self._created.append(folder)
