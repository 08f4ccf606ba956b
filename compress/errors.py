"""The error domain: every failure a user can cause, each with the exit code the CLI returns."""

import re

EXIT_OK = 0
EXIT_FAILED = 1  # a pass, the export or the parity check failed
EXIT_BAD_INPUT = 2  # arguments, config, model file, data file, output folder
EXIT_GATE_FAILED = 3  # the run finished and wrote its outputs, but a gate failed


class CompressError(Exception):
    """Base class. The message is one line that names the problem and the fix."""

    exit_code = EXIT_FAILED


class InputError(CompressError):
    """Bad input: arguments, config, model file, data file (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """The YAML config is invalid or does not fit the model."""


class ModelLoadError(InputError):
    """The model file is missing, corrupt, unsafe, or does not fit its architecture."""


class DataError(InputError):
    """A data file is missing, malformed, or does not fit the model."""


class OutputDirError(InputError):
    """The output folder cannot be used."""


class ReportFileError(InputError):
    """A report.json given to `compress report` cannot be read or is not a report."""


class PassError(CompressError):
    """A pass failed while running (exit 1)."""


class ExportError(CompressError):
    """torch -> ONNX export, the ONNX checker or the parity check failed (exit 1)."""


def one_line(text: str) -> str:
    """`text` on one line: line breaks and other control characters a user's input may carry
    (a `--set` value, a file name) shown escaped, so an error stays one line on a terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (library errors can run to pages)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
