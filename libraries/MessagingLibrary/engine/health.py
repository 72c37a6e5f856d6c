"""The load generator judges itself: did *it* keep its schedule, or did the server hold it up?

An open-loop generator measures the server from each message's intended send time. That is
only a fair measurement of the server while the generator really sends on time. On a shared,
noisy machine the generator itself can fall behind (its process starved of CPU, its event loop
busy), and then a low rate or a high latency says nothing about the server. This module measures,
beside every open-loop run, what the generator did:

* **lateness** of every send against its intended time, and how many sends were more than the
  late threshold (10 ms) late (``late_sends``, wrk2's "missed" sends);
* **writes that waited on the server**: a send that found the connection's socket buffer full
  (the server not reading: TCP backpressure) waits until the server reads. That wait is the
  *server's* doing, so lateness it explains is excused and only the rest counts against the
  generator (``generator_late_sends``: more than the *behind threshold*, 50 ms, late for the
  generator's own reasons);
* **event-loop lag**: a probe task asks to wake every 10 ms and records how late it woke, so a
  busy or starved loop shows even when no send was due;
* **client CPU**: the process's CPU time over the run as a share of one core, and how busy the
  whole machine was (other processes included).

**The bound.** The generator *fell behind* when more than ``max_late_fraction`` (1% by default)
of its sends were more than the behind threshold (50 ms) late for reasons of its own (not
excused by writes waiting on the server), and at least :data:`MIN_LATE_SENDS` of them. Then
the run's rate and latency figures cannot judge the server: their assertions are
*inconclusive*, not passed and not failed (see ``docs/measuring.md``). Why 50 ms and 1%: at
most 1% of the latencies can be inflated by more than 50 ms, which moves no p50, p90 or p95,
and sends shifted by 50 ms change a rate over a 1 s window by at most 5%, inside the suites'
10% tolerance; sporadic 10-30 ms scheduling hiccups of a shared machine stay reported (as late
sends and event-loop lag) without voiding the run. Loss, order and duplicate checks still
judge the server: a late sender loses, reorders or duplicates nothing.

Attribution of lateness to the server: the sender is sequential, so once a send waits on a full
socket buffer, every later send is late by at least that wait until the sender catches up. The
wait is summed over a *late streak* (consecutive sends later than the threshold) and subtracted
from each send's lateness in the streak; an on-time send ends the streak.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection

from .metrics import LatencyHistogram

#: The probe's wake-up interval; its lateness is the event-loop lag.
LAG_PROBE_INTERVAL_S = 0.010
#: Sends later than this after their intended time count as late (the load engine's default).
DEFAULT_LATE_THRESHOLD_S = 0.010
#: Sends later than this for the generator's own reasons count against it (the bound below).
DEFAULT_BEHIND_THRESHOLD_S = 0.050
#: The generator fell behind when more than this share of its sends were late for its own reasons.
DEFAULT_MAX_LATE_FRACTION = 0.01
#: ... and at least this many: one hiccup in a run of 100 sends is not a generator that cannot keep up.
MIN_LATE_SENDS = 5


class FlowConnection(ClientConnection):
    """A websockets client connection that counts how often its writes were paused.

    The transport pauses writing when its buffer passes the high-water mark: the kernel's
    socket buffer is full because the peer is not reading (TCP backpressure). A send made
    while paused, or that pauses the connection, waits in ``drain()`` until the peer reads.
    ``connect(..., create_connection=FlowConnection)``.
    """

    pauses = 0

    def pause_writing(self) -> None:
        self.pauses += 1
        super().pause_writing()


def waits_on_peer(ws: Any) -> tuple[bool, int]:
    """``(paused now, pause count)`` of a connection, taken before a send (see :meth:`SendClock.after`)."""
    return bool(getattr(ws, "paused", False)), getattr(ws, "pauses", 0)


class SendClock:
    """Counts one generator's sends: lateness, late sends, and lateness excused by write waits.

    ``before(intended_ns, now_ns)`` is called just before a send, ``after(took_ns, waited)``
    right after it with how long the send took and whether it waited on the peer (the
    connection was paused, or paused during the send: see :class:`FlowConnection`). A send
    that did not wait is never excused, however long it took: a descheduled generator is the
    generator's problem. Bounded: counters and one histogram.
    """

    def __init__(
        self, late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S, behind_threshold_s: float = DEFAULT_BEHIND_THRESHOLD_S
    ) -> None:
        self.late_ns = int(late_threshold_s * 1e9)
        self.late_threshold_s = late_threshold_s
        self.behind_ns = int(max(behind_threshold_s, late_threshold_s) * 1e9)
        self.behind_threshold_s = max(behind_threshold_s, late_threshold_s)
        self.lateness = LatencyHistogram()
        self.sends = 0
        self.late_sends = 0
        self.generator_late_sends = 0
        self.write_waits = 0
        self.write_wait_ns = 0
        self.blocked_sends = 0
        self._streak_wait_ns = 0

    def before(self, intended_ns: int, now_ns: int) -> int:
        """Record the lateness of a send about to go out; returns it (ns, >= 0)."""
        late = now_ns - intended_ns
        if late < 0:
            late = 0
        self.lateness.record_ns(late)
        self.sends += 1
        if late > self.late_ns:
            self.late_sends += 1
            if late - self._streak_wait_ns > self.behind_ns:
                self.generator_late_sends += 1
        else:
            self._streak_wait_ns = 0
        return late

    def merge(self, other: SendClock) -> SendClock:
        """Add another worker's counts (engine.workers): counters summed, lateness histograms merged."""
        self.lateness.merge(other.lateness)
        for name in ("sends", "late_sends", "generator_late_sends", "write_waits", "write_wait_ns", "blocked_sends"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def blocked(self) -> None:
        """A send not made because the server stopped reading its connection (not judged: the server's doing)."""
        self.blocked_sends += 1

    def after(self, took_ns: int, waited: bool) -> None:
        """The send took ``took_ns``; ``waited``: it waited for the peer to read (a full socket buffer)."""
        if waited:
            self.write_waits += 1
            self.write_wait_ns += took_ns
            self._streak_wait_ns += took_ns


class LagProbe:
    """A task on the generator's loop that measures how late the loop wakes it (event-loop lag)."""

    def __init__(self, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.lag = LatencyHistogram()
        self._task: asyncio.Task[None] | None = None
        self._process = psutil.Process()
        self._cpu_start = 0.0
        self._wall_start_ns = 0
        self._cpu_s = 0.0
        self._wall_s = 0.0
        self._machine_start: Any = None
        self._machine_busy = None

    def start(self) -> None:
        self._wall_start_ns = time.perf_counter_ns()
        self._cpu_start = _cpu_seconds(self._process)
        self._machine_start = psutil.cpu_times()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="generator-lag-probe")

    async def _run(self) -> None:
        interval = self.interval_s
        interval_ns = int(interval * 1e9)
        clock = time.perf_counter_ns
        while True:
            due = clock() + interval_ns
            await asyncio.sleep(interval)
            self.lag.record_ns(max(0, clock() - due))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._wall_s = (time.perf_counter_ns() - self._wall_start_ns) / 1e9
        self._cpu_s = _cpu_seconds(self._process) - self._cpu_start
        self._machine_busy = _machine_busy(self._machine_start, psutil.cpu_times())

    def __getstate__(self) -> dict[str, Any]:
        """What crosses between processes (engine.workers): the figures, not the task or process."""
        state = dict(self.__dict__)
        state["_task"] = None
        state["_process"] = None
        state["_machine_start"] = None
        return state

    def merge(self, other: LagProbe) -> LagProbe:
        """Add another worker's probe: lag histograms merged, CPU summed over the longest wall
        time (so ``cpu_share`` is the workers' CPU together, in cores), the busiest machine kept."""
        self.lag.merge(other.lag)
        self._cpu_s += other._cpu_s  # noqa: SLF001 (the same class)
        self._wall_s = max(self._wall_s, other._wall_s)  # noqa: SLF001
        busy = [b for b in (self._machine_busy, other._machine_busy) if b is not None]  # noqa: SLF001
        self._machine_busy = max(busy) if busy else None
        return self

    @property
    def cpu_share(self) -> float:
        """The client process's CPU time over the run, as a share of one core (1.0 = a whole core)."""
        return self._cpu_s / self._wall_s if self._wall_s > 0 else 0.0


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _machine_busy(start: Any, end: Any) -> float | None:
    """The share of all cores that was busy (any process) between two ``psutil.cpu_times()``."""
    if start is None:
        return None
    idle = (end.idle + getattr(end, "iowait", 0.0)) - (start.idle + getattr(start, "iowait", 0.0))
    total = sum(end) - sum(start)
    return max(0.0, min(1.0, 1 - idle / total)) if total > 0 else None


@dataclass
class GeneratorHealth:
    """What the generator of one open-loop run did, and whether it kept its schedule."""

    run: str
    sends: int
    late_threshold_s: float
    behind_threshold_s: float
    max_late_fraction: float
    late_sends: int
    generator_late_sends: int
    write_waits: int
    write_wait_s: float
    blocked_sends: int
    lateness: dict[str, float]
    loop_lag: dict[str, float]
    cpu_share: float
    machine_busy: float | None
    cores: int
    #: Each worker's own health when the run was split over several (engine.workers); a worker
    #: that fell behind makes the whole run inconclusive, as one process would.
    workers: list[GeneratorHealth] = field(default_factory=list)

    @classmethod
    def of(cls, run: str, clock: SendClock, probe: LagProbe | None, max_late_fraction: float) -> GeneratorHealth:
        return cls(
            run=run,
            sends=clock.sends,
            late_threshold_s=clock.late_threshold_s,
            behind_threshold_s=clock.behind_threshold_s,
            max_late_fraction=max_late_fraction,
            late_sends=clock.late_sends,
            generator_late_sends=clock.generator_late_sends,
            write_waits=clock.write_waits,
            write_wait_s=round(clock.write_wait_ns / 1e9, 6),
            blocked_sends=clock.blocked_sends,
            lateness=clock.lateness.summary().as_dict(),
            loop_lag=probe.lag.summary().as_dict() if probe is not None else {},
            cpu_share=round(probe.cpu_share, 4) if probe is not None else 0.0,
            machine_busy=None if probe is None or probe._machine_busy is None else round(probe._machine_busy, 4),
            cores=psutil.cpu_count() or 1,
        )

    @property
    def allowed_late_sends(self) -> int:
        """The most late sends (for the generator's own reasons) the bound allows in this run."""
        return max(MIN_LATE_SENDS - 1, int(self.sends * self.max_late_fraction))

    @property
    def fell_behind(self) -> bool:
        return self.generator_late_sends > self.allowed_late_sends or any(w.fell_behind for w in self.workers)

    def describe(self) -> str:
        """One line a human understands: the figures that say whether the generator kept up."""
        lag = self.loop_lag.get("p99_s")
        parts = [
            f"{self.generator_late_sends:,} of {self.sends:,} sends more than "
            f"{self.behind_threshold_s * 1000:g} ms late ({self.late_sends:,} more than {self.late_threshold_s * 1000:g} ms)"
        ]
        if self.write_waits:
            parts.append(f"{self.write_waits:,} writes waited on the server's socket buffer (that lateness is the server's)")
        if self.blocked_sends:
            parts.append(f"{self.blocked_sends:,} not sent: the server stopped reading")
        if lag is not None:
            parts.append(f"event-loop lag p99 {lag * 1000:.1f} ms")
        parts.append(f"client CPU {self.cpu_share:.0%} of a core")
        if self.machine_busy is not None:
            parts.append(f"machine {self.machine_busy:.0%} busy on {self.cores} cores")
        behind = [w.run for w in self.workers if w.fell_behind]
        if self.workers:
            parts.append(f"{len(self.workers)} workers" + (f", {' and '.join(behind)} fell behind" if behind else ""))
        return "; ".join(parts)

    def inconclusive_reason(self) -> str:
        """Why the run's rate and latency cannot be judged, or ``""`` when the generator kept up."""
        if not self.fell_behind:
            return ""
        return (
            f"the load generator fell behind its schedule in '{self.run}' ({self.describe()}): "
            "this run cannot judge the server's rate or latency"
        )

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["allowed_late_sends"] = self.allowed_late_sends
        data["fell_behind"] = self.fell_behind
        data["workers"] = [w.as_dict() for w in self.workers]
        return data


__all__ = ["FlowConnection", "GeneratorHealth", "LagProbe", "SendClock", "waits_on_peer"]
