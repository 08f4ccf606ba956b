"""`python -m compress.batch.server FD`: the warm server that a batch's jobs are forked from.

A fresh worker process spends seconds importing torch, torch.export and the ONNX exporter
before it does any work. This server imports them once (PRELOAD); each job is then a fork of
it, a child that starts with them loaded. compress.batch.warm starts it and talks to it.

FD is this end of a socket pair whose other end only the batch holds. A request is one message:
JSON naming the target ("module:function") and its arguments, the job's environment, working
folder and threads, with its stderr and, where the caller wants the result, a pipe for it, as
file descriptors. The server answers with the child's pid, then with its exit code when it
ends (negative: the signal that killed it). When the batch exits or dies, SIGKILL included,
its end closes and the server exits at once; its children die with it (PR_SET_PDEATHSIG).

The child is set up as a fresh worker was: a session and process group of its own, so that a
timeout kills everything it started; dying with the server; stdin and stdout on /dev/null and
stderr on the job's log (descriptors, so that C libraries write there too); the job's
environment, working folder, TMPDIR and threads; then it calls the target and exits. A fork
copies only the forking thread, so nothing imported here may start a thread that a child would
need: torch's pools start on first use, and OpenBLAS (numpy) stops its threads before a fork
and starts them again when next needed.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import json
import os
import pickle
import select
import signal
import socket
import sys
import tempfile
import traceback
import warnings

from compress.batch.launch import die_with_parent

# What `compress run` imports (`python -X importtime -m compress_cli run ... --debug`), most of
# it from inside functions, so that importing the pipeline alone would miss it.
# A module a newer version renamed is skipped; the job then imports it itself, as before. Left
# to the job: ONNX Runtime (35 ms), which starts a thread when imported, and a fork copies only
# the forking thread; and the CLI (typer, rich, compress_cli: 40 ms), whose console looks at
# the terminal when imported: the batch's terminal here, a log file in the job.
PRELOAD = (
    "torch",
    "torch.export",
    "torch.export._trace",
    "torch.export.pt2_archive._package",  # torch.export.load: a second of imports by itself
    "torch.onnx",
    "torch.onnx._internal.exporter._compat",
    "onnxscript.function_libs.torch_lib.ops",
    "onnx",
    "torch_pruning",
    "psutil",
    "compress.job.pipeline",
    "compress.job.preflight",
    "compress.quant.int8",
    "compress.quant.fallback",
    "compress.cache.store",
    "compress.report",
)
MAX_REQUEST = 1 << 20  # bytes: the JSON of one request, most of it the job's environment


def main(argv: list[str]) -> None:
    channel = socket.socket(fileno=int(argv[1]))
    preload()
    serve(channel)


def preload() -> None:
    """Import PRELOAD. A module that fails here fails (or not) in the job, as it would have in a
    fresh process; its warnings are the job's to show, not the batch's terminal's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PRELOAD:
            with contextlib.suppress(Exception):
                importlib.import_module(name)
        with contextlib.suppress(Exception):  # the exporter's table, read once for every job
            importlib.import_module("compress.torch.torchlib_once").read_once(now=True)


def serve(channel: socket.socket) -> None:
    """Fork a child per request and report its pid and exit code, until the batch goes."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # SIGCHLD wakes the select below
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, int] = {}  # pid: request id
    server = os.getpid()
    while True:
        watched: list[socket.socket | int] = [channel, wake_r]
        ready, _, _ = select.select(watched, [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            report_ended(channel, children)
        if channel in ready:
            message, fds, _, _ = socket.recv_fds(channel, MAX_REQUEST, 2)
            if not message:
                os._exit(0)  # the batch closed its end: it ended, or died
            for fd in fds:
                os.set_inheritable(fd, False)  # the job's, not what the job starts
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                channel.close()
                become_job(request, fds, server, (wake_r, wake_w))
            for fd in fds:
                os.close(fd)
            children[pid] = request["id"]
            answer(channel, {"id": request["id"], "pid": pid})


def report_ended(channel: socket.socket, children: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            answer(channel, {"id": children.pop(pid), "exit": os.waitstatus_to_exitcode(status)})


def answer(channel: socket.socket, message: dict) -> None:
    try:
        channel.send(json.dumps(message).encode())
    except OSError:  # the batch is gone
        os._exit(0)


def become_job(request: dict, fds: list[int], server: int, server_fds: tuple[int, ...]) -> None:
    """In the forked child of `server`: set up the job, run its target, exit with its code.
    Never returns into the server's loop."""
    code = 1
    try:
        os.setsid()  # its own process group: a timeout kills everything it started
        die_with_parent(server)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in server_fds:
            os.close(fd)
        code = run_request(request, *fds)
    except BaseException:
        traceback.print_exc()  # onto the job's stderr once it is redirected
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run_request(request: dict, stderr: int, result: int | None = None) -> int:
    """Call the request's target as the job; the exit code: 0 when it returns, a SystemExit's
    code, 1 for an exception. `result`, when given, gets the returned value or the exception,
    pickled."""
    redirect(stderr)
    faulthandler.enable(file=sys.stderr)  # a segfault leaves its Python stack in the log
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # tempfile reads TMPDIR again: the job's own folder
    use_threads(request["threads"])
    module, _, name = request["target"].partition(":")
    target = getattr(importlib.import_module(module), name)
    outcome, code = None, 0
    try:
        outcome = target(*request["args"])
    except SystemExit as e:
        code = exit_status(e.code)
    except Exception as e:
        if result is None:
            raise
        traceback.print_exc()  # the caller gets the exception; --debug shows where it came from
        outcome, code = e, 1
    if result is not None:
        send_result(result, outcome)
    return code


def redirect(stderr: int) -> None:
    """stdin and stdout on /dev/null, stderr on `stderr`: as descriptors, for C code too."""
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr, 2)
    for fd in {null, stderr} - {0, 1, 2}:
        os.close(fd)


def use_threads(threads: int) -> None:
    """torch's thread count for this job. The server was started with the job's thread
    variables, so OpenMP, MKL and OpenBLAS read them when it imported them; torch is told too."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def exit_status(code: object) -> int:
    """A SystemExit's code as Python turns it into the exit status: None is 0, an int itself,
    anything else printed to stderr and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def send_result(fd: int, outcome: object) -> None:
    try:
        data = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle: its type and message do
        data = pickle.dumps(RuntimeError(f"{type(outcome).__name__}: {outcome}"))
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(data)


if __name__ == "__main__":
    main(sys.argv)
