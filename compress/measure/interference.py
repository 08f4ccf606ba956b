"""What else used the CPU while compress timed a model: a busy neighbour makes a timing lie.

While one batch size is timed, `CpuWatch` reads the machine's CPU time (psutil), this process's
own CPU time (ONNX Runtime's threads included) and how often this process was descheduled
against its will. The CPU time that is not this process's, per second of timing, is what other
processes (or a hypervisor's steal) took: `other_cpu_cores`. A machine is called busy when that
reaches `BUSY_CORES` - enough to stall a thread pool or share a core's caches - or when this
process lost the CPU more than `BUSY_PREEMPTIONS` times a second; a timing shorter than
`MIN_SECONDS` is too short to tell ("unknown").
"""

from __future__ import annotations

import os
import time
from typing import Literal

from pydantic import Field

from compress.records import Record

BUSY_CORES = 0.25  # other processes' CPU, in cores, from which timings are not trusted
BUSY_PREEMPTIONS = 200.0  # involuntary context switches of this process per second
MIN_SECONDS = 0.25  # a shorter timing cannot tell: the OS counts CPU time in 10 ms ticks
BUSY_ADVICE = (
    "re-run on a quiet machine (close other work), or time with fewer report.threads than "
    "the machine has cores"
)


class MachineLoad(Record):
    """The machine while one batch size was timed (report.json's `latency.machine`)."""

    state: Literal["quiet", "busy", "unknown"]
    other_cpu_cores: float | None = Field(
        description="CPU other processes used, in cores (1.0 = one core's worth)"
    )
    preemptions_per_s: float | None = Field(
        description="times this process was descheduled against its will, per second"
    )
    load_1m: float | None = Field(description="the OS's 1-minute load average, where it has one")
    seconds: float

    @property
    def busy(self) -> bool:
        return self.state == "busy"

    def rounded(self) -> MachineLoad:
        """As the report keeps it: three decimals."""
        figures = self.model_dump()
        return self.model_copy(
            update={k: round(v, 3) for k, v in figures.items() if isinstance(v, float)}
        )

    def describe(self) -> str:
        """'other processes used 0.93 cores, 120 preemptions/s'."""
        parts = []
        if self.other_cpu_cores is not None:
            parts.append(f"other processes used {self.other_cpu_cores:.2f} cores")
        if self.preemptions_per_s is not None:
            parts.append(f"{self.preemptions_per_s:.0f} preemptions/s")
        return ", ".join(parts) or "no CPU figures on this platform"


def _busy_seconds(times) -> float:
    """CPU time spent on anything but idling (steal included: another VM had the core)."""
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


class CpuWatch:
    """`with CpuWatch() as watch: ...` then `watch.load`: the machine during the block."""

    def __enter__(self) -> CpuWatch:
        import psutil

        self._process = psutil.Process()
        self._start = self._sample()
        return self

    def _sample(self) -> tuple[float, float, float, int]:
        import psutil

        own = self._process.cpu_times()
        switches = self._process.num_ctx_switches().involuntary
        return (
            time.perf_counter(),
            _busy_seconds(psutil.cpu_times()),
            own.user + own.system,
            switches,
        )

    def __exit__(self, *exc) -> None:
        began, machine, own, switches = self._start
        ended, machine_now, own_now, switches_now = self._sample()
        seconds = max(ended - began, 1e-9)
        others = max(0.0, (machine_now - machine) - (own_now - own)) / seconds
        preemptions = (switches_now - switches) / seconds
        busy = others >= BUSY_CORES or preemptions >= BUSY_PREEMPTIONS
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        if seconds < MIN_SECONDS:  # a few ticks: the figures would be noise
            self.load = MachineLoad(
                state="unknown", other_cpu_cores=None, preemptions_per_s=None, load_1m=load,
                seconds=seconds,
            )  # fmt: skip
        else:
            state = "busy" if busy else "quiet"
            self.load = MachineLoad(
                state=state, other_cpu_cores=others, preemptions_per_s=preemptions, load_1m=load,
                seconds=seconds,
            )  # fmt: skip
