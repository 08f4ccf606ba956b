"""`python -m compress.batch.launch PARENT_PID COMMAND...`: exec COMMAND so that it dies with
its parent.

A killed batch (even SIGKILL, which runs no cleanup) must not leave workers writing into its
output folder, where a resumed batch would race them. Linux's PR_SET_PDEATHSIG asks the kernel
to send SIGKILL when the parent exits, and survives exec; elsewhere the batch's own cleanup on
SIGINT/SIGTERM is all there is. A fresh worker (no warm server: not Linux, or a Ray task) starts
through this module; a warm worker calls `die_with_parent` itself, with its server as the parent.
Only the standard library is imported: this runs once per model.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL for this process when its parent ends; exit now if `parent_pid` already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    parent_pid, command = int(argv[1]), argv[2:]
    die_with_parent(parent_pid)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
