"""Where a batch's jobs run: worker threads on this machine, or Ray tasks on a cluster.

Both run the same `run_job` (a worker process per model) and hand each row back as it
finishes; `--jobs` is how many run at once either way. Locally the workers are forked from this
process's warm server where there is one (Linux: compress.batch.warm). A Ray task starts a fresh
worker: a warm server lives as long as the process that started it, and a Ray worker process is
Ray's, reused by other tasks and kept after the batch on a cluster, so a server there would hold
torch's memory on every node long after the batch. Ray is an optional extra (`pip install
.[ray]`), imported only when asked for.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from compress.batch import warm
from compress.batch.job import ModelJob, kill_running, run_job
from compress.errors import InputError, first_line

Done = Callable[[ModelJob, dict[str, Any]], None]
RAY_OBJECT_STORE_BYTES = 128 * 1024**2  # rows are small; a local runtime needs little


def local_cpus() -> int:
    """The cores this process may use (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(cores: int, largest: int, jobs: int) -> int:
    """Each job's share of the cores (an executor's `cores()`): the cores over the jobs that run
    at once, and no more than the largest node has."""
    return max(1, min(cores // jobs, largest))


class LocalExecutor:
    """Jobs as worker processes on this machine, `jobs` at a time (a thread waits on each),
    forked from the warm server where there is one."""

    name = "local"

    def __init__(self, jobs: int):
        self.jobs = jobs

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def cores(self) -> tuple[int, int]:
        """(cores the jobs share, the largest number one job can have)."""
        cpus = local_cpus()
        return cpus, cpus

    def run(self, jobs: list[ModelJob], done: Done) -> None:
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="compress-job")
        forked = warm.available()
        futures = {pool.submit(run_job, job, forked): job for job in jobs}
        try:
            for future in as_completed(futures):
                done(futures[future], future.result())
        except BaseException:  # interrupted: stop the workers, not just stop waiting for them
            pool.shutdown(wait=False, cancel_futures=True)
            while not all(f.done() for f in futures):
                kill_running()
                time.sleep(0.05)
            raise
        finally:
            pool.shutdown()


class RayExecutor:
    """Jobs as Ray tasks, on the cluster at `address` or on a local runtime started here. Every
    node must have compress installed and see the batch's directory and output folder at the same
    paths (a shared file system): the workers read the models and write their outputs there."""

    name = "ray"

    def __init__(self, jobs: int, address: str | None):
        self.jobs = jobs
        self.address = address
        self.ray: Any = None

    def __enter__(self) -> RayExecutor:
        try:
            import ray
        except ImportError:
            raise InputError(
                "--executor ray needs Ray: pip install 'compress[ray]' (or pip install .[ray] "
                "in a checkout)"
            ) from None
        settings: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if self.address is None:  # a local runtime, sized to this machine, no dashboard
            settings |= {
                "num_cpus": local_cpus(),
                "include_dashboard": False,
                "object_store_memory": RAY_OBJECT_STORE_BYTES,
            }
        try:
            ray.init(address=self.address or "local", **settings)
        except Exception as e:
            raise InputError(
                f"cannot start or reach Ray at {self.address or 'a local runtime'} "
                f"({first_line(e)}); check --ray-address (host:port of the head, or ray://host:port)"
            ) from None
        self.ray = ray
        return self

    def __exit__(self, *exc) -> None:
        self.ray.shutdown()  # leaves a cluster running; stops a local runtime

    def cores(self) -> tuple[int, int]:
        nodes = [n["Resources"].get("CPU", 0) for n in self.ray.nodes() if n.get("Alive")]
        return int(sum(nodes)) or 1, int(max(nodes, default=1)) or 1

    def run(self, jobs: list[ModelJob], done: Done) -> None:
        ray, waiting = self.ray, list(jobs)
        running: dict[Any, ModelJob] = {}  # ray's task reference: its job
        task = ray.remote(run_job)
        try:
            while waiting or running:
                while waiting and len(running) < self.jobs:
                    job = waiting.pop(0)  # a task reserves its threads: no node is oversubscribed
                    running[task.options(num_cpus=job.threads).remote(job)] = job
                finished, _ = ray.wait(list(running), num_returns=1)
                for ref in finished:
                    job = running.pop(ref)
                    done(job, self._row(ref))
        except BaseException:  # interrupted: force-cancel kills the task's worker and its job
            for ref in running:
                ray.cancel(ref, force=True)
            raise

    def _row(self, ref) -> dict[str, Any]:
        try:
            return self.ray.get(ref)
        except Exception as e:  # the task itself was lost (a node died, the task was cancelled)
            return {"status": "failed", "reason": f"Ray task failed: {first_line(e)}"}
