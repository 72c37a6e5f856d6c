"""Background sampling of the client's and the server's resident memory and CPU.

The client is this process. The server is the mock's own process (read with psutil by pid)
or, for a server the library did not start, whatever its ``server_stats`` reports
(``rss_bytes``, ``cpu_seconds``). The two are always kept apart: the original suites measured
one process hosting both client and mock, and so measured the test harness.

Samples are kept in bounded memory: past :data:`MAX_SAMPLES` every other one is dropped and
the sampling interval doubles, so a monitor left running for hours stays small.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

MB = 1024 * 1024
MAX_SAMPLES = 2000
#: Growth below this is allocator noise, not something to recover from.
RECOVERY_NOISE_FLOOR_BYTES = 20 * MB
CLIENT = "client"
SERVER = "server"
#: The unit of each figure of :meth:`ResourceMonitor.figures` (the keywords' figure names, with underscores).
UNITS = {
    "baseline_mb": "MB",
    "final_mb": "MB",
    "memory_growth": "MB",
    "peak_memory_growth": "MB",
    "peak_memory": "MB",
    "memory_slope": "MB/min",
    "bytes_per_message": "B/msg",
    "bytes_per_connection": "B/conn",
    "mean_cpu": "%",
    "peak_cpu": "%",
    "memory_recovery": "ratio",
    "recovery_noise_floor_mb": "MB",
}


@dataclass(slots=True)
class Sample:
    ts_ns: int
    rss: int
    cpu_s: float | None


#: Reads one process's (rss bytes, cpu seconds or None); None when it cannot be read now.
Reader = Callable[[], Awaitable[tuple[int, float | None] | None]]


def psutil_reader(pid: int) -> Reader:
    process = psutil.Process(pid)

    async def read() -> tuple[int, float | None] | None:
        try:
            with process.oneshot():
                times = process.cpu_times()
                return process.memory_info().rss, times.user + times.system
        except psutil.Error:
            return None

    return read


@dataclass
class Series:
    """The samples of one process, with named marks (load phases) pointing into them."""

    role: str
    source: str
    samples: list[Sample] = field(default_factory=list)
    marks: dict[str, Sample] = field(default_factory=dict)
    peak: Sample | None = None
    latest: Sample | None = None
    #: Sampling-interval multiplier: doubles each time the samples are thinned out.
    stride: int = 1
    unreadable: str = ""

    def add(self, sample: Sample) -> None:
        if self.peak is None or sample.rss > self.peak.rss:
            self.peak = sample
        self.latest = sample
        self.samples.append(sample)
        if len(self.samples) > MAX_SAMPLES:
            self.samples = self.samples[::2]
            self.stride *= 2

    @property
    def first(self) -> Sample | None:
        return self.samples[0] if self.samples else None


class ResourceMonitor:
    """Samples the client and (when it can) the server every ``interval_s`` on the library's loop."""

    def __init__(self, server: Reader | None, server_source: str, interval_s: float = 0.1) -> None:
        if interval_s <= 0:
            raise ValueError(f"The sampling interval must be > 0, got {interval_s} s.")
        self.interval_s = interval_s
        self._readers: dict[str, Reader] = {CLIENT: psutil_reader(psutil.Process().pid)}
        self.series = {CLIENT: Series(CLIENT, "this test process (psutil)")}
        if server is not None:
            self._readers[SERVER] = server
            self.series[SERVER] = Series(SERVER, server_source)
        self._task: asyncio.Task[None] | None = None
        self.started_ns = 0
        self.stopped_ns = 0
        #: Messages answered and connections opened by the load runs seen, per mark pair.
        self.messages = 0
        self.connections = 0

    async def start(self) -> None:
        self.started_ns = time.perf_counter_ns()
        await self.sample()
        self._task = asyncio.create_task(self._run(), name="resource-monitor")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * self.series[CLIENT].stride)
            await self.sample()

    async def sample(self, mark: str | None = None) -> None:
        for role, read in self._readers.items():
            series = self.series[role]
            try:
                reading = await read()
            except Exception as error:  # noqa: BLE001 - a failed read must not kill the monitor
                series.unreadable = f"{type(error).__name__}: {error}"
                reading = None
            if reading is None:
                series.unreadable = series.unreadable or "the process could not be read"
                continue
            sample = Sample(time.perf_counter_ns(), reading[0], reading[1])
            series.add(sample)
            if mark is not None:
                series.marks[mark] = sample

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.sample("stopped")
        self.stopped_ns = time.perf_counter_ns()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- figures -----------------------------------------------------------------------------

    def figures(self, role: str) -> dict[str, Any] | None:
        """Growth, slope, peak, per-message and per-connection cost, CPU, recovery for ``role`` (units: :data:`UNITS`)."""
        series = self.series.get(role)
        if series is None or series.first is None:
            return None
        first, last, peak = series.first, series.latest, series.peak
        assert last is not None and peak is not None
        marks = series.marks
        before = marks.get("load before", first)
        connected = marks.get("load connected", before)
        end = marks.get("load end", last)
        load_samples = [s for s in series.samples if connected.ts_ns <= s.ts_ns <= end.ts_ns]
        growth = end.rss - first.rss
        peak_growth = peak.rss - first.rss
        recovered = peak.rss - last.rss
        return {
            "source": series.source,
            "samples": len(series.samples),
            "baseline_mb": _mb(first.rss),
            "final_mb": _mb(last.rss),
            "memory_growth": _mb(growth),
            "peak_memory_growth": _mb(peak_growth),
            "peak_memory": _mb(peak.rss),
            "memory_slope": round(_slope(load_samples) * 60 / MB, 3),
            "bytes_per_message": round((end.rss - connected.rss) / self.messages, 1) if self.messages else None,
            "bytes_per_connection": round((connected.rss - before.rss) / self.connections, 1)
            if self.connections
            else None,
            "mean_cpu": _cpu_percent(first, last),
            "peak_cpu": self._cpu_peak(series),
            "memory_recovery": round(recovered / peak_growth, 4) if peak_growth >= RECOVERY_NOISE_FLOOR_BYTES else 1.0,
            "recovery_noise_floor_mb": _mb(RECOVERY_NOISE_FLOOR_BYTES),
            "unreadable": series.unreadable,
        }

    def _cpu_peak(self, series: Series) -> float | None:
        """The highest CPU share between consecutive samples at least half an interval apart."""
        min_gap_ns = int(self.interval_s * 1e9 / 2)
        peaks = [
            _cpu_percent(a, b)
            for a, b in zip(series.samples, series.samples[1:])
            if b.ts_ns - a.ts_ns >= min_gap_ns
        ]
        return max((p for p in peaks if p is not None), default=None)


def _mb(value: int) -> float:
    return round(value / MB, 3)


def _cpu_percent(a: Sample, b: Sample) -> float | None:
    if a.cpu_s is None or b.cpu_s is None or b.ts_ns <= a.ts_ns:
        return None
    return round((b.cpu_s - a.cpu_s) / ((b.ts_ns - a.ts_ns) / 1e9) * 100, 1)


def _slope(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time, bytes per second (0 with fewer than 3 samples)."""
    if len(samples) < 3:
        return 0.0
    xs = [(s.ts_ns - samples[0].ts_ns) / 1e9 for s in samples]
    ys = [float(s.rss) for s in samples]
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
