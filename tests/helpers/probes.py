"""A model that reports what its worker process sees, and looks at processes through /proc: for
the tests of the warm workers, whose command line is their server's, not `compress run ...`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.helpers.batch import pickled_model

# A whole pickled module (loaded with --trust-pickle) whose forward, which the run's first check
# calls, writes what its process sees to a JSON file, then fails the run, hangs or crashes.
PROBE = """\
import ctypes
import faulthandler
import json
import os
import subprocess
import tempfile
import time

import torch

VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TMPDIR",
             "PYTHONFAULTHANDLER")


class Probe(torch.nn.Module):
    def __init__(self, how, facts):
        super().__init__()
        self.how, self.facts = how, facts
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        if self.how == "segfault":
            ctypes.string_at(0)
        os.write(2, b"probe: written to descriptor 2\\n")
        facts = {
            "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
            "env": {name: os.environ.get(name) for name in VARIABLES},
            "torch_threads": torch.get_num_threads(),
            "tempdir": tempfile.gettempdir(),
            "fds": [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)],
            "cwd": os.getcwd(),
            "faulthandler": faulthandler.is_enabled(),
        }
        if self.how == "hang_with_child":
            facts["grandchild"] = subprocess.Popen(["sleep", "300"]).pid
        with open(self.facts + ".part", "w") as f:
            json.dump(facts, f)
        os.replace(self.facts + ".part", self.facts)
        if self.how.startswith("hang"):
            time.sleep(3600)
        raise RuntimeError("probed")
"""


def probe_model(folder: Path, name: str, how: str, facts: Path) -> Path:
    """`folder/name`, a pickled Probe(how) that writes to `facts`; its class file sits beside it,
    where the loader looks for it. how: record (then fail), hang, hang_with_child, segfault."""
    return pickled_model(folder / name, "warm_probe", PROBE, lambda m: m.Probe(how, str(facts)))


def wait_for_file(path: Path, process=None, timeout: float = 120) -> None:
    """Until `path` exists; fails when `process` (a Popen) ended first or the time is up."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process is None or process.poll() is None, f"ended before writing {path}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def alive(pid: int, grace: float = 0.0) -> bool:
    """Whether `pid` is a live process (not a zombie) after up to `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        try:
            state = _stat(pid)[0]
        except OSError:
            state = "gone"
        if state in ("gone", "Z", "X") or time.monotonic() >= deadline:
            return state not in ("gone", "Z", "X")
        time.sleep(0.05)


def parent_of(pid: int) -> int:
    return int(_stat(pid)[1])


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


def environment_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def processes_using(folder: Path, grace: float = 5.0) -> list[int]:
    """Live processes but this one whose command line names `folder` (a fresh worker) or that
    hold a file under it open (a warm worker: its stderr is its log.txt), after up to `grace`
    seconds."""
    deadline = time.monotonic() + grace
    while True:
        found = [
            pid
            for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if pid != os.getpid() and alive(pid) and _uses(pid, str(folder))
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _uses(pid: int, folder: str) -> bool:
    try:
        if folder in " ".join(command_line(pid)):
            return True
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to look at
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder):
                return True
        except OSError:
            continue
    return False


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command's name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
