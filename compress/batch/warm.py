"""Warm workers: jobs forked from a server that imported torch and the ONNX exporter once.

A batch or sweep process starts one server (compress.batch.server) the first time a job needs
it, and keeps it until the process exits: its end of their socket pair then closes, whatever
ended the process, and the server exits, taking its children with it. `start` asks the server
for a child and returns it as a Child, which a caller waits for and kills as it would a
subprocess.Popen; `call` runs a function in a child and hands back its result or its exception.

One server per thread count: OpenMP, MKL and OpenBLAS read their thread variables once, when
they are loaded, so the server is started with the jobs' values. Only on Linux: a child dies
with the server through PR_SET_PDEATHSIG, and macOS's system libraries are not safe to use in
a child forked without exec (why Python's multiprocessing spawns there). Elsewhere, and in
Ray's worker processes, jobs start fresh processes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_servers: dict[int, Server] = {}
_servers_lock = threading.Lock()


def available() -> bool:
    return sys.platform.startswith("linux")


def thread_variables(threads: int) -> dict[str, str]:
    """The variables that give a process `threads` threads, which libraries read when loaded."""
    return dict.fromkeys(THREAD_VARIABLES, str(threads))


def server_for(threads: int) -> Server:
    """This process's server for jobs of `threads` threads: started now if there is none, or if
    the one there was has died (the OOM killer's pick, say)."""
    with _servers_lock:
        server = _servers.get(threads)
        if server is None or not server.alive():
            server = _servers[threads] = Server(threads)
        return server


class ServerLost(RuntimeError):
    """The server died before it forked the child."""


class ChildDied(RuntimeError):
    """A `call` ended without a result: its child was killed, or exited without one."""

    def __init__(self, code: int):
        super().__init__(f"the process running it {describe_exit(code)}")
        self.code = code


def describe_exit(code: int) -> str:
    return f"died from {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


class Child:
    """A job asked of the server, as job.py uses a subprocess.Popen: pid (None until the server
    has forked it), wait and kill."""

    def __init__(self, target: str):
        self.target = target
        self.pid: int | None = None
        self.returncode: int | None = None
        self.lost: str | None = None  # why the server never forked it
        self._cancelled = False
        self._ended = threading.Event()
        self._lock = threading.Lock()

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code (negative: the signal that killed it); TimeoutExpired after `timeout`,
        ServerLost when the server died before forking it."""
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.target, timeout or 0.0)  # not None here
        if self.lost is not None:
            raise ServerLost(self.lost)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL; one not forked yet never runs: killed the moment the server forks it."""
        with self._lock:
            if self._ended.is_set():
                return
            if self.pid is None:
                self._cancelled = True
                self._end(-signal.SIGKILL)
                return
            pid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _end(self, code: int) -> None:
        self.returncode = code
        self._ended.set()

    def _on_forked(self, pid: int) -> None:
        with self._lock:
            self.pid = pid
            cancelled = self._cancelled
        if cancelled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _on_exited(self, code: int) -> None:
        with self._lock:
            if not self._ended.is_set():
                self._end(code)

    def _on_server_lost(self, why: str) -> None:
        with self._lock:
            if self._ended.is_set():
                return
            if self.pid is None:
                self.lost = why
                self._ended.set()
            else:  # it died with the server: PR_SET_PDEATHSIG sends SIGKILL
                self._end(-signal.SIGKILL)


class Server:
    """One `python -m compress.batch.server`, and a thread that reads its answers."""

    def __init__(self, threads: int):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "compress.batch.server", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={**os.environ, **thread_variables(threads), "PYTHONFAULTHANDLER": "1"},
                start_new_session=True,  # a Ctrl-C at the terminal is for the batch to handle
            )
        self.threads = threads
        self._channel = ours  # only this process holds it: the server ends when it closes
        self._children: dict[int, Child] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._read, name="compress-warm-server", daemon=True).start()

    def alive(self) -> bool:
        return not self._closed and self._process.poll() is None

    def start(
        self, target: str, args: list, env: dict[str, str], stderr: int, result: int | None = None
    ) -> Child:
        """Fork a child that calls `target` ("module:function") with `args` (JSON), in this
        process's working folder, with `env` as its whole environment and `stderr` as its
        stderr; `result`, a pipe's write end, gets what it returns or raises. Returns at once:
        the server forks it when it gets to it (the first request, once its imports are done)."""
        child = Child(target)
        request = {
            "target": target,
            "args": args,
            "env": env,
            "cwd": os.getcwd(),
            "threads": self.threads,
        }
        fds = [stderr] + ([result] if result is not None else [])
        with self._lock:
            if self._closed:
                raise ServerLost(self._lost_reason())
            request["id"] = request_id = next(self._ids)
            self._children[request_id] = child
            try:
                socket.send_fds(self._channel, [json.dumps(request).encode()], fds)
            except OSError:
                del self._children[request_id]
                raise
        return child

    def _read(self) -> None:
        """Hand each answer to its child; when the server is gone, to all that are left."""
        while True:
            try:
                message = self._channel.recv(4096)
            except OSError:
                message = b""
            if not message:
                break
            answer = json.loads(message)
            with self._lock:
                child = self._children[answer["id"]]
                if "exit" in answer:
                    del self._children[answer["id"]]
            if "pid" in answer:
                child._on_forked(answer["pid"])
            else:
                child._on_exited(answer["exit"])
        with self._lock:
            self._closed = True
            left, self._children = list(self._children.values()), {}
        why = self._lost_reason()
        for child in left:
            child._on_server_lost(why)

    def _lost_reason(self) -> str:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the warm server stopped answering"
        return f"the warm server {describe_exit(code)}"


def kill_group(process: subprocess.Popen | Child) -> None:
    """Kill a worker's process group, then the worker itself (a warm child killed in its first
    instant has no group of its own yet), and wait for it to end."""
    if process.pid is not None:  # None: a warm child not forked yet
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
            os.killpg(process.pid, signal.SIGKILL)
    process.kill()
    with contextlib.suppress(ServerLost):  # never forked: nothing to wait for
        process.wait()


def call(target: str, args: list, threads: int) -> Any:
    """Run `target(*args)` in a warm child with this process's environment and stderr; what it
    returns, or the exception it raised, raised here (ChildDied when it ended without either).
    Its TMPDIR is a folder of its own, removed here: a child killed by an interrupt cleans up
    nothing itself."""
    with tempfile.TemporaryDirectory(prefix="compress-call-") as work:
        env = {**os.environ, **thread_variables(threads), "TMPDIR": work}
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb") as results:
            try:
                child = server_for(threads).start(target, args, env, 2, write_end)
            finally:
                os.close(write_end)  # the child holds the only one: EOF when it ends
            try:
                data = results.read()
                code = child.wait()
            finally:
                kill_group(child)  # anything it left running; all of it when interrupted
    if not data:
        raise ChildDied(code)
    outcome = pickle.loads(data)  # from our own child, not from a file
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
