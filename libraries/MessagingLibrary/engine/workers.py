"""One load run split over several worker processes, on this machine or on a Dask cluster.

**The partition** (k6's execution segments, cut by connection): worker ``w`` of ``W`` runs the
connections ``c`` with ``c mod W == w`` and exactly their messages (message ``k`` belongs to
connection ``k mod C``), each at its intended time on the run's one schedule. The workers'
sends together are exactly the one-process schedule, and every connection, with its order,
gap, duplicate and loss tracking, lives on one worker. There are never more workers than
connections.

**The start.** Every worker opens its connections, says it is ready, and waits; the
coordinator then gives one start time (wall clock) to all, and each worker turns it into its
own monotonic clock. Latency runs from each message's intended time, as in one process.

**The merge** is exact where it can be (:func:`merge_slices`): HDR histograms are merged
(never percentiles averaged; differing settings are refused), counters summed, first times the
earliest and last times the latest (each worker's times relative to the common start), the
rate timeline added bucket by bucket, agent-run books merged. Per worker, the result keeps its
connections, counts, latency and generator health (``LoadResult.workers``); a worker that fell
behind makes the whole run inconclusive. A worker that dies, or never reports, is a *lost
slice* (``LoadResult.lost_slices``): its messages count as lost and the keywords fail the run.

**Where the workers run.**

* :class:`LocalWorkers` (the default, embedded): ``W`` processes on this machine, started with
  the ``spawn`` start method (never ``fork`` from Robot's threaded process), each with its own
  event loop (uvloop when installed), talking to the coordinator over a pipe.
* :class:`DaskWorkers` (``cluster=tcp://host:8786``, the optional extra ``[distributed]``): one
  task per slice, each on a Dask worker that offers the resource ``load_slice`` (one slice per
  worker at a time), submitted with no retries and a unique key (no duplicate suppression). A
  slice that finds it has already started once refuses to run again, so no slice runs twice
  even when a scheduler re-runs a task after losing its worker. Ready and start go through the
  scheduler's metadata.
"""

from __future__ import annotations

import asyncio
import copy
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from .console import console
from .health import GeneratorHealth, LagProbe, SendClock
from .load import MAX_REASONS, PROGRESS_AFTER_S, LoadEngine, LoadPlan, LoadResult, PhaseFigures
from .loop import new_event_loop
from .schedule import Schedule
from .tracking import ConnectionTracker

#: How long the coordinator gives a worker to start, import the library and open its
#: connections, beyond the plan's connect timeout.
START_GRACE_S = 60.0
#: Between "all ready" and the first intended send: time for the start message to arrive.
START_LEAD_S = 0.25
#: After the planned end (schedule, drain, verification), how long a worker may take to report.
REPORT_GRACE_S = 30.0
#: The Dask resource a worker must offer to run a slice (``dask worker --resources load_slice=1``).
DASK_RESOURCE = "load_slice"


class WorkerLost(RuntimeError):
    """A worker died or stopped reporting: its slice is lost."""


def resolve_workers(workers: int | str, connections: int) -> int:
    """``workers`` as a count: a positive number, or ``auto`` for this machine's cores; never
    more than the run's connections (a worker without a connection would have nothing to do)."""
    if isinstance(workers, str):
        text = workers.strip().lower()
        if text == "auto":
            count = os.cpu_count() or 1
        elif text.isdigit():
            count = int(text)
        else:
            raise ValueError(f"workers must be a positive number or 'auto', got '{workers}'.")
    else:
        count = int(workers)
    if count < 1:
        raise ValueError(f"workers must be a positive number or 'auto', got {workers}.")
    return max(1, min(count, connections))


# -- what a worker sends back ------------------------------------------------------------------


@dataclass
class ConnectionRecord:
    """What the result needs of one connection, without its socket (it stays in the worker)."""

    index: int
    name: str
    tracker: ConnectionTracker
    open_error: str
    handshake_s: float
    gave_up: str
    correlation: str


@dataclass
class SliceResult:
    """One worker's slice: its engine's state, every time relative to the common start."""

    part: tuple[int, int]
    host: str
    pid: int
    connections: list[ConnectionRecord]
    state: dict[str, Any]
    health: GeneratorHealth
    #: The slice's own headline figures (the per-worker breakdown).
    figures: dict[str, Any]


#: Engine counters summed over the slices.
COUNTERS = (
    "deferred_sends", "unsent", "unmatched", "foreign_slice", "unparseable", "other_frames", "stalls",
    "refused_high", "answered_high",
)
#: Engine times (perf_counter ns) shipped relative to the slice's start; 0 or None: never happened.
TIMES = ("first_refusal_ns", "send_done_ns", "end_ns")
#: Engine histograms merged over the slices.
HISTOGRAMS = ("latency", "reconnect_ns")


def export_slice(engine: LoadEngine) -> SliceResult:
    """A finished engine's slice, ready to cross to another process."""
    start = engine.start_ns
    state: dict[str, Any] = {name: getattr(engine, name) for name in COUNTERS + HISTOGRAMS}
    for name in TIMES:
        value = getattr(engine, name)
        state[name] = value - start if value else None
    phases = []
    for figures in engine.phases:
        shipped = copy.copy(figures)
        for name in ("first_send_ns", "last_send_ns", "first_answer_ns", "last_answer_ns"):
            value = getattr(figures, name)
            setattr(shipped, name, value - start if value else 0)
        phases.append(shipped)
    state.update(
        phases=phases,
        thirds=engine.thirds,
        clock=engine.clock,
        probe=engine.probe,
        trust=dict(engine.trust),
        trust_examples={k: list(v) for k, v in engine.trust_examples.items()},
        error_codes=dict(engine.error_codes),
        close_reasons=list(engine.close_reasons),
        connect_time_s=engine.connect_time_s,
        configure_result=engine.configure_result,
        configure_problem=engine.configure_problem,
        processing=engine.processing,
        streams=engine.streams,
        offered_buckets=list(engine.offered_buckets),
        answered_buckets=list(engine.answered_buckets),
    )
    records = [
        ConnectionRecord(c.index, c.name, c.tracker, c.open_error, c.handshake_s, c.gave_up, c.correlation)
        for c in engine.connections
    ]
    worker, workers = engine.part or (0, 1)
    health = engine.health()
    health.run = f"worker {worker + 1} of {workers}"
    trackers = [c.tracker for c in engine.connections]
    sent = sum(t.sent for t in trackers)
    figures = {
        "worker": worker + 1,
        "connections": len(records),
        "opened": engine.opened,
        "scheduled": engine.scheduled_total,
        "sent": sent,
        "answered": sum(t.answered_count for t in trackers),
        "lost": sum(t.unsettled for t in trackers) + engine.scheduled_total - sent,
        "latency": engine.latency.summary().as_dict(),
        "cpu_share": health.cpu_share,
        "fell_behind": health.fell_behind,
    }
    figures["latency"].pop("spectrum", None)
    return SliceResult((worker, workers), socket.gethostname(), os.getpid(), records, state, health, figures)


def merge_slices(plan: LoadPlan, slices: list[SliceResult], lost: dict[int, str] | None = None) -> LoadResult:
    """The run's result from its workers' slices, as one process would have given it.

    ``lost``: the slices (by worker index) that never reported, and why; their connections
    appear with nothing sent, their messages count as lost, and ``lost_slices`` says so.
    """
    lost = lost or {}
    workers = slices[0].part[1] if slices else max(lost) + 1 if lost else 1
    for piece in slices:
        if piece.part[1] != workers:
            raise ValueError(f"Slices of different partitions cannot be merged: {piece.part} among {workers} workers.")
    merged = LoadEngine(plan, part=None)
    base = time.perf_counter_ns()
    merged.start_ns = base
    records: list[Any] = [record for piece in sorted(slices, key=lambda p: p.part) for record in piece.connections]
    for worker in lost:
        for index in range(worker, plan.connections, workers):
            tracker = ConnectionTracker(index)
            tracker.scheduled = merged_count(merged, index)
            records.append(ConnectionRecord(index, f"c{index}", tracker, "", 0.0, "", "lost with its worker"))
    merged.connections = sorted(records, key=lambda r: r.index)

    clock = SendClock(plan.late_threshold_s, plan.behind_threshold_s)
    probe = LagProbe()
    earliest: dict[str, int] = {}
    for piece in slices:
        state = piece.state
        for name in COUNTERS:
            setattr(merged, name, getattr(merged, name) + state[name])
        for name in HISTOGRAMS:
            getattr(merged, name).merge(state[name])
        for mine, theirs in zip(merged.thirds, state["thirds"], strict=True):
            mine.merge(theirs)
        clock.merge(state["clock"])
        probe.merge(state["probe"])
        for target, figures in zip(merged.phases, state["phases"], strict=True):
            _merge_phase(target, figures, base)
        for name in TIMES:
            value = state[name]
            if value is not None:
                earliest[name] = min(earliest.get(name, value), value) if name == "first_refusal_ns" else max(earliest.get(name, value), value)
        for defect, count in state["trust"].items():
            merged.trust[defect] = merged.trust.get(defect, 0) + count
        for defect, examples in state["trust_examples"].items():
            kept = merged.trust_examples.setdefault(defect, [])
            kept.extend(examples[: max(0, MAX_REASONS - len(kept))])
        for code, count in state["error_codes"].items():
            merged.error_codes[code] = merged.error_codes.get(code, 0) + count
        merged.close_reasons.extend(state["close_reasons"][: max(0, MAX_REASONS - len(merged.close_reasons))])
        merged.connect_time_s = max(merged.connect_time_s, state["connect_time_s"])
        merged.configure_result = merged.configure_result or state["configure_result"]
        merged.configure_problem = merged.configure_problem or state["configure_problem"]
        merged.processing = _merge_processing(merged.processing, state["processing"])
        if state["streams"] is not None:
            merged.streams = state["streams"] if merged.streams is None or not merged.streams.finished else merged.streams.merge(state["streams"])
        _add_buckets(merged.offered_buckets, state["offered_buckets"])
        _add_buckets(merged.answered_buckets, state["answered_buckets"])
    for name in TIMES:
        setattr(merged, name, base + earliest[name] if name in earliest else (None if name == "first_refusal_ns" else 0))
    if not merged.end_ns:
        merged.end_ns = base + int(merged.schedule.duration_s * 1e9)
    merged.clock = clock
    merged.probe = probe
    result = merged.result()
    result.generator.workers = [piece.health for piece in sorted(slices, key=lambda p: p.part)]
    result.workers = [
        {**piece.figures, "of": workers, "host": piece.host, "pid": piece.pid, "status": "reported"}
        for piece in sorted(slices, key=lambda p: p.part)
    ]
    for worker, why in sorted(lost.items()):
        owned = range(worker, plan.connections, workers)
        messages = sum(merged_count(merged, index) for index in owned)
        result.workers.append({"worker": worker + 1, "of": workers, "connections": len(owned), "scheduled": messages,
                               "status": f"lost: {why}"})
        result.lost_slices.append(
            f"worker {worker + 1} of {workers} {why}: its slice of {len(owned)} connection(s) "
            f"({_names(owned)}) and {messages:,} message(s) is lost"
        )
    result.workers.sort(key=lambda w: w["worker"])
    return result


def merged_count(engine: LoadEngine, index: int) -> int:
    """How many of the run's messages belong to connection ``index``."""
    total, width = engine.schedule.total, engine.width
    return (total - index + width - 1) // width if index < total else 0


def _names(indexes: range) -> str:
    names = [f"c{i}" for i in indexes[:6]]
    return ", ".join(names) + (f" and {len(indexes) - 6} more" if len(indexes) > 6 else "")


def _merge_phase(target: PhaseFigures, figures: PhaseFigures, base: int) -> None:
    target.sent += figures.sent
    target.answered += figures.answered
    for name in ("first_send_ns", "first_answer_ns"):
        value = getattr(figures, name)
        if figures.sent if name == "first_send_ns" else figures.answered:
            current = getattr(target, name)
            setattr(target, name, base + value if not current else min(current, base + value))
    for name in ("last_send_ns", "last_answer_ns"):
        value = getattr(figures, name)
        if figures.sent if name == "last_send_ns" else figures.answered:
            setattr(target, name, max(getattr(target, name), base + value))
    target.latency.merge(figures.latency)


def _merge_processing(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> dict[str, Any] | None:
    if mine is None or theirs is None:
        return mine or theirs
    return {
        "not_processed": mine["not_processed"] + theirs["not_processed"],
        "processed_more_than_once": mine["processed_more_than_once"] + theirs["processed_more_than_once"],
        "examples": (mine["examples"] + theirs["examples"])[:MAX_REASONS],
        "unavailable": mine["unavailable"] or theirs["unavailable"],
        "unsupported": mine["unsupported"] or theirs["unsupported"],
    }


def _add_buckets(into: list[int], other: list[int]) -> None:
    into.extend([0] * (len(other) - len(into)))
    for i, count in enumerate(other):
        into[i] += count


# -- the worker's side -------------------------------------------------------------------------


async def run_slice(plan: LoadPlan, part: tuple[int, int], ready: Callable[[dict[str, Any]], Any],
                    wait_start: Callable[[], Any]) -> SliceResult | None:
    """Open this slice's connections, report ``ready``, wait for the start, run, and export.

    ``ready(info)`` and ``wait_start()`` (returns the start as a wall-clock time, or None to
    stop) are awaitables of the backend. None: told to stop before the start.
    """
    worker, workers = part
    if worker != 0 or workers > 1:
        plan = copy.copy(plan)
        # Progress lines come from the first worker only, marked as such.
        plan.progress = plan.progress and worker == 0
    engine = LoadEngine(plan, part)
    engine.label = f" (worker {worker + 1} of {workers})" if workers > 1 else ""
    try:
        await engine.open()
        await ready({
            "opened": engine.opened, "connections": len(engine.connections), "connect_time_s": engine.connect_time_s,
            "configure_problem": engine.configure_problem, "configure_result": engine.configure_result,
            "pid": os.getpid(), "host": socket.gethostname(),
        })
        start = await wait_start()
        if start is None:
            return None
        start_ns = time.perf_counter_ns() + int((start - time.time()) * 1e9)
        await engine.run(start_ns=start_ns)
        return export_slice(engine)
    finally:
        await engine.close()


def _process_main(connection: Any, plan: LoadPlan, part: tuple[int, int]) -> None:
    """A local worker process: one slice on its own event loop (uvloop when installed)."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def ready(info: dict[str, Any]) -> None:
        connection.send(("ready", info))

    async def wait_start() -> float | None:
        message = await _receive(connection, None, None, loop)
        return message[1] if message[0] == "start" else None

    try:
        result = loop.run_until_complete(run_slice(plan, part, ready, wait_start))
        if result is not None:
            connection.send(("result", result))
    except BaseException as error:  # noqa: BLE001 (everything is reported to the coordinator)
        traceback.print_exc()  # to the console Robot writes to: the coordinator names the worker
        try:
            connection.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}"))
        except (OSError, EOFError):
            pass
        raise SystemExit(1) from None
    finally:
        loop.close()
        connection.close()


async def _receive(connection: Any, process: Any, deadline: float | None, loop: asyncio.AbstractEventLoop) -> tuple:
    """The next message on a pipe, without blocking the loop; WorkerLost when the process on the
    other side died (``process``) or ``deadline`` (loop time) passed first."""
    while True:
        if connection.poll():
            try:
                return connection.recv()
            except (EOFError, OSError) as error:
                if process is None:
                    raise WorkerLost(f"closed its pipe ({error})") from None
                await asyncio.to_thread(process.join, 2.0)  # its pipe closed: it is exiting, learn how
                raise WorkerLost(_death(process)) from None
        if process is not None and not process.is_alive() and not connection.poll():
            raise WorkerLost(_death(process))
        if deadline is not None and loop.time() > deadline:
            raise WorkerLost("did not report in time")
        # Waited for on a thread: the pipe stays a blocking socket (an event loop's reader would
        # make it non-blocking, and a large message then fails half-sent with EAGAIN).
        await asyncio.to_thread(connection.poll, 0.2)


def _death(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return f"(pid {process.pid}) stopped answering"
    signal_name = ""
    if code < 0:
        import signal  # noqa: PLC0415

        try:
            signal_name = f", killed by {signal.Signals(-code).name}"
        except ValueError:
            signal_name = ""
    return f"(pid {process.pid}) died with exit code {code}{signal_name}"


# -- the coordinator's side ----------------------------------------------------------------------


class WorkerRun:
    """A load run over several workers, with a :class:`LoadEngine`'s interface for the keywords:
    ``await open()``, ``opened``, ``configure_problem``, ``await run()``, ``await close()``."""

    def __init__(self, plan: LoadPlan, workers: int) -> None:
        self.plan = plan
        self.schedule = Schedule(plan.phases)
        self.workers = workers
        #: No connection lives in this process (the fault proxy's namer finds none here).
        self.connections: list[Any] = []
        self.ready: dict[int, dict[str, Any]] = {}
        self.lost: dict[int, str] = {}
        self.configure_problem = ""
        self.configure_result: dict[str, Any] | None = None
        self.connect_time_s = 0.0
        self.started_wall = 0.0

    @property
    def opened(self) -> int:
        return sum(info["opened"] for info in self.ready.values())

    def _note_ready(self, worker: int, info: dict[str, Any]) -> None:
        self.ready[worker] = info
        self.connect_time_s = max(self.connect_time_s, info["connect_time_s"])
        self.configure_problem = self.configure_problem or info["configure_problem"]
        self.configure_result = self.configure_result or info["configure_result"]

    def _report_deadline_s(self) -> float:
        plan = self.plan
        return (self.schedule.duration_s + plan.drain_timeout_s + (30.0 if plan.verify_processing else 0.0)
                + START_LEAD_S + REPORT_GRACE_S)

    def _finish(self, slices: list[SliceResult]) -> LoadResult:
        if not slices:
            reasons = "; ".join(f"worker {w + 1}: {why}" for w, why in sorted(self.lost.items()))
            raise RuntimeError(f"Load run '{self.plan.name}': every worker was lost ({reasons}).")
        return merge_slices(self.plan, slices, self.lost)


class LocalWorkers(WorkerRun):
    """The embedded default: ``workers`` processes on this machine (spawned, never forked)."""

    def __init__(self, plan: LoadPlan, workers: int) -> None:
        super().__init__(plan, workers)
        self._context = get_context("spawn")
        self._processes: list[Any] = []
        self._pipes: list[Any] = []

    async def open(self) -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter_ns()
        for worker in range(self.workers):
            mine, theirs = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_process_main, args=(theirs, self.plan, (worker, self.workers)),
                name=f"apex-load-worker-{worker + 1}", daemon=True,
            )
            process.start()
            theirs.close()
            self._processes.append(process)
            self._pipes.append(mine)
        deadline = loop.time() + self.plan.connect_timeout_s + START_GRACE_S

        async def _one(worker: int) -> None:
            try:
                message = await _receive(self._pipes[worker], self._processes[worker], deadline, loop)
            except WorkerLost as error:
                self.lost[worker] = f"{error} before its connections were open"
                return
            if message[0] == "ready":
                self._note_ready(worker, message[1])
            else:
                self.lost[worker] = f"failed while opening its connections: {message[1]}"

        await asyncio.gather(*(_one(w) for w in range(self.workers)))
        return (time.perf_counter_ns() - started) / 1e9

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        self.started_wall = time.time() + START_LEAD_S
        for worker in self.ready:
            self._pipes[worker].send(("start", self.started_wall))
        deadline = loop.time() + self._report_deadline_s()
        slices: list[SliceResult] = []

        async def _one(worker: int) -> None:
            try:
                message = await _receive(self._pipes[worker], self._processes[worker], deadline, loop)
            except WorkerLost as error:
                self.lost[worker] = f"{error} at +{time.time() - self.started_wall:.1f} s into the run"
                return
            if message[0] == "result":
                slices.append(message[1])
            else:
                self.lost[worker] = f"failed during the run: {message[1]}"

        await asyncio.gather(*(_one(w) for w in list(self.ready)))
        return self._finish(slices)

    async def close(self) -> None:
        """Stop what was started, by pid: a worker still running is told to stop, then killed."""
        for worker, pipe in enumerate(self._pipes):
            if self._processes[worker].is_alive():
                try:
                    pipe.send(("stop",))
                except (OSError, BrokenPipeError):
                    pass
        deadline = time.monotonic() + 5.0
        for process in self._processes:
            while process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if process.is_alive():
                process.kill()
                process.join(2.0)
            else:
                process.join(0.1)
        for pipe in self._pipes:
            pipe.close()
        self._processes.clear()
        self._pipes.clear()


# -- Dask distributed ----------------------------------------------------------------------------


def _dask_slice(plan: LoadPlan, part: tuple[int, int], run_key: str) -> SliceResult | None:
    """A Dask task: one slice, on the worker's machine, on an event loop of its own.

    Ready, start and the slice's claim go through the scheduler's metadata (``set_metadata``).
    """
    from distributed import get_worker  # noqa: PLC0415 (optional extra)

    worker, workers = part
    here = get_worker()
    client = here.client
    earlier = client.get_metadata([run_key, "claim", str(worker)], default=None)
    if earlier is not None:
        raise WorkerLost(f"slice {worker + 1} of {workers} already started once (on {earlier}); a slice never runs twice")
    client.set_metadata([run_key, "claim", str(worker)], here.address)
    deadline = time.monotonic() + plan.connect_timeout_s + START_GRACE_S

    async def ready(info: dict[str, Any]) -> None:
        await asyncio.to_thread(client.set_metadata, [run_key, "ready", str(worker)], info)

    async def wait_start() -> float | None:
        while time.monotonic() < deadline:
            value = await asyncio.to_thread(client.get_metadata, [run_key, "start"], None)
            if value is not None:
                return None if value == "stop" else float(value)
            await asyncio.sleep(0.05)
        return None

    loop = new_event_loop()
    try:
        return loop.run_until_complete(run_slice(plan, part, ready, wait_start))
    finally:
        loop.close()


class DaskWorkers(WorkerRun):
    """Slices as tasks on a Dask cluster (``cluster`` is its scheduler's address)."""

    def __init__(self, plan: LoadPlan, workers: int | None, cluster: str) -> None:
        """``workers`` None: one slice per worker of the cluster that offers the resource."""
        super().__init__(plan, workers or 0)
        self.cluster = cluster
        self.run_key = f"apex-load-{plan.run_id}-{uuid.uuid4().hex[:8]}"
        self._client: Any = None
        self._futures: list[Any] = []

    def _connect(self) -> Any:
        try:
            from distributed import Client  # noqa: PLC0415 (optional extra)
        except ImportError:
            raise RuntimeError(
                "cluster= needs Dask distributed: pip install 'apex-acceptance[distributed]'."
            ) from None
        try:
            client = Client(self.cluster, timeout=min(30.0, self.plan.connect_timeout_s + 10), set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise RuntimeError(f"No Dask scheduler answered at {self.cluster}: {error}") from None
        able = [
            address for address, worker in client.scheduler_info()["workers"].items()
            if worker.get("resources", {}).get(DASK_RESOURCE, 0) >= 1
        ]
        if not self.workers:
            self.workers = max(1, min(len(able), self.plan.connections))
        if len(able) < self.workers:
            client.close()
            raise RuntimeError(
                f"The Dask cluster at {self.cluster} has {len(able)} worker(s) offering the resource "
                f"'{DASK_RESOURCE}', and this run needs {self.workers} (one slice per worker): start each worker "
                f"with --resources {DASK_RESOURCE}=1, or ask for fewer workers."
            )
        return client

    async def open(self) -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter_ns()
        self._client = client = await asyncio.to_thread(self._connect)

        def _submit() -> list[Any]:
            return [
                client.submit(_dask_slice, self.plan, (worker, self.workers), self.run_key,
                              key=f"{self.run_key}-slice-{worker}", pure=False, retries=0,
                              resources={DASK_RESOURCE: 1})
                for worker in range(self.workers)
            ]

        self._futures = await asyncio.to_thread(_submit)
        deadline = loop.time() + self.plan.connect_timeout_s + START_GRACE_S
        while len(self.ready) + len(self.lost) < self.workers and loop.time() < deadline:
            ready = await asyncio.to_thread(client.get_metadata, [self.run_key, "ready"], {})
            for worker, info in ready.items():
                if int(worker) not in self.ready:
                    self._note_ready(int(worker), info)
            self._note_failed("before its connections were open")
            await asyncio.sleep(0.05)
        for worker in range(self.workers):
            if worker not in self.ready and worker not in self.lost:
                self.lost[worker] = "did not open its connections in time"
        return (time.perf_counter_ns() - started) / 1e9

    def _note_failed(self, when: str) -> None:
        for worker, future in enumerate(self._futures):
            if worker in self.lost or worker in self.ready or future.status not in ("error", "cancelled", "lost"):
                continue
            self.lost[worker] = f"(Dask task {future.key}) failed {when}: {_dask_error(future)}"

    async def run(self) -> LoadResult:
        loop = asyncio.get_running_loop()
        self.started_wall = time.time() + START_LEAD_S + 0.25  # the workers poll for the start
        await asyncio.to_thread(self._client.set_metadata, [self.run_key, "start"], self.started_wall)
        deadline = loop.time() + self._report_deadline_s()
        slices: list[SliceResult] = []
        pending = {w: self._futures[w] for w in self.ready if w not in self.lost}
        while pending and loop.time() < deadline:
            for worker, future in list(pending.items()):
                if future.status == "finished":
                    result = await asyncio.to_thread(future.result)
                    if result is not None:
                        slices.append(result)
                    del pending[worker]
                elif future.status in ("error", "cancelled", "lost"):
                    self.lost[worker] = (
                        f"(Dask task {future.key}) failed at +{time.time() - self.started_wall:.1f} s into the run: "
                        f"{_dask_error(future)}"
                    )
                    del pending[worker]
            if pending:
                await asyncio.sleep(0.1)
        for worker in pending:
            self.lost[worker] = "did not report in time"
        return self._finish(slices)

    async def close(self) -> None:
        client = self._client
        if client is None:
            return

        def _close() -> None:
            try:
                unfinished = [f for f in self._futures if f.status == "pending"]
                if unfinished:
                    client.set_metadata([self.run_key, "start"], "stop")
                    client.cancel(unfinished)
            finally:
                client.close(timeout=10)

        self._client = None
        await asyncio.to_thread(_close)


def _dask_error(future: Any) -> str:
    try:
        error = future.exception(timeout=1)
    except Exception as problem:  # noqa: BLE001 (describing a failure must not fail)
        return f"{type(problem).__name__}: {problem}"
    return f"{type(error).__name__}: {error}" if error is not None else future.status


def worker_run(plan: LoadPlan, workers: int | str | None = None, cluster: str | None = None) -> WorkerRun | None:
    """The :class:`WorkerRun` for ``workers``/``cluster``, or None for one process (a plain engine).

    ``workers`` None: one process here; on a cluster, one slice per worker offering the resource.
    """
    if workers is None:
        workers = "auto" if cluster else 1
    if cluster:
        auto = str(workers).strip().lower() == "auto"
        return DaskWorkers(plan, None if auto else resolve_workers(workers, plan.connections), cluster)
    count = resolve_workers(workers, plan.connections)
    return LocalWorkers(plan, count) if count > 1 else None


def progress_note(plan: LoadPlan, run: WorkerRun) -> None:
    """One console line when a long split run starts (its first worker prints the progress)."""
    if not plan.progress or Schedule(plan.phases).duration_s <= PROGRESS_AFTER_S:
        return
    where = f"Dask cluster {run.cluster}" if isinstance(run, DaskWorkers) else "this machine"
    console(f"[apex] load '{plan.name}': {run.workers} workers on {where}")


__all__ = [
    "ConnectionRecord", "DaskWorkers", "LocalWorkers", "SliceResult", "WorkerLost", "WorkerRun",
    "export_slice", "merge_slices", "resolve_workers", "run_slice", "worker_run",
]
