"""A load run split over worker processes (engine.workers): the partition, the exact merge, and
a worker that dies. Against the real mock on 127.0.0.1; counts only, never a measured time.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import threading
import time
from datetime import timedelta

import pytest
from apex_mock import faults as F
from fakes import INSTANT, start_instant_mock
from hdrh.histogram import HdrHistogram
from MessagingLibrary.engine.load import LoadEngine, LoadPlan, LoadResult, run_load
from MessagingLibrary.engine.metrics import LatencyHistogram
from MessagingLibrary.engine.schedule import Phase
from MessagingLibrary.engine.workers import LocalWorkers, SliceResult, merge_slices, resolve_workers

#: What a split run must give exactly as one process does, for the same schedule and server.
EXACT = ("scheduled", "sent", "unsent", "answered", "delivered", "lost", "duplicated", "reordered", "untracked",
         "unmatched", "connections", "opened", "high_priority_sent", "stalled_connections", "foreign_slice")


MOCK_ARGS = INSTANT  # the conftest's mock answers at once


def plan(url: str, rate: float, seconds: float, connections: int, phases: list[Phase] | None = None, **options) -> LoadPlan:
    run = f"w{time.perf_counter_ns()}"
    return LoadPlan(
        url=url, tokens=[f"{run}.{i}" for i in range(connections)], phases=phases or [Phase("steady", rate, seconds)],
        connections=connections, run_id=run, name=run, drain_timeout_s=options.pop("drain_timeout_s", 5.0),
        progress=False, **options,
    )


def _exact(result: LoadResult) -> dict:
    figures = {name: getattr(result, name) for name in EXACT}
    figures["per_connection"] = [(c["connection"], c["sent"], c["answered"], c["reordered"], c["duplicated"])
                                 for c in result.per_connection]
    figures["phases"] = [(p["name"], p["scheduled"], p["sent"], p["answered"]) for p in result.phases]
    figures["latency count"] = result.latency["count"]
    return figures


# -- the partition --------------------------------------------------------------------------------


@pytest.mark.parametrize(("connections", "workers"), [(1, 1), (3, 2), (7, 3), (20, 2), (5, 5)])
def test_the_slices_together_are_exactly_the_one_process_schedule(connections, workers):
    phases = [Phase("warm", 100, 0.37), Phase("ramp", 300, 0.5, start_rate=100), Phase("hold", 250, 0.21)]
    load = plan("ws://127.0.0.1:9", 0, 0, connections, phases=phases)
    whole = LoadEngine(load)
    slices = [LoadEngine(load, part=(w, workers)) for w in range(workers)]
    sent = [k for engine in slices for k in engine.owned_messages()]
    assert sorted(sent) == list(range(whole.schedule.total))  # every message once, no other
    for w, engine in enumerate(slices):
        owned = list(engine.owned_messages())
        assert owned == sorted(owned)  # each slice sends in schedule order
        assert all((k % connections) % workers == w for k in owned)  # with its connection
        assert engine.scheduled_total == len(owned)
        assert sorted(engine.by_index) == list(range(w, connections, workers))
    for p in range(len(phases)):
        assert sum(engine.phases[p].scheduled for engine in slices) == whole.phases[p].scheduled


def test_workers_is_a_count_or_auto_and_never_more_than_the_connections():
    assert resolve_workers(2, 20) == 2
    assert resolve_workers("3", 20) == 3
    assert resolve_workers("auto", 1000) == (os.cpu_count() or 1)
    assert resolve_workers(8, 3) == 3
    for bad in (0, -1, "two", "1.5"):
        with pytest.raises(ValueError, match="workers must be a positive number or 'auto'"):
            resolve_workers(bad, 10)


# -- histograms cross processes and merge exactly -------------------------------------------------


def test_histograms_merge_exactly_and_refuse_different_settings():
    first, second = range(1_000, 9_000_000, 997), range(5_000, 700_000, 31)
    merged = pickle.loads(pickle.dumps(LatencyHistogram.of(first)))
    merged.merge(pickle.loads(pickle.dumps(LatencyHistogram.of(second))))
    merged.merge(pickle.loads(pickle.dumps(LatencyHistogram())))  # an empty one adds nothing
    assert merged.summary() == LatencyHistogram.of([*first, *second]).summary()

    other = LatencyHistogram()
    other._histogram = HdrHistogram(1, 3_600_000_000, 2)
    with pytest.raises(ValueError, match="different settings"):
        merged.merge(other)


# -- against the mock: the same verdicts as one process -------------------------------------------


def test_two_workers_give_the_one_process_figures_exactly(mock):
    load = plan(mock.url, 2000, 1.0, 20, high_priority_every=7)
    single = asyncio.run(run_load(load))
    split = asyncio.run(run_load(plan(mock.url, 2000, 1.0, 20, high_priority_every=7), workers=2))
    assert _exact(split) == _exact(single)
    assert (split.answered, split.lost, split.reordered, split.duplicated) == (2000, 0, 0, 0)
    assert [w["worker"] for w in split.workers] == [1, 2]
    assert [w["connections"] for w in split.workers] == [10, 10]
    assert sum(w["answered"] for w in split.workers) == 2000
    assert len({w["pid"] for w in split.workers}) == 2 and os.getpid() not in {w["pid"] for w in split.workers}
    assert [h.run for h in split.generator.workers] == ["worker 1 of 2", "worker 2 of 2"]
    assert split.lost_slices == [] and single.workers == []
    assert sum(split.timeline["offered"]) == pytest.approx(sum(single.timeline["offered"]))


def test_a_reordering_server_is_caught_on_every_worker_as_in_one_process():
    server = start_instant_mock(F.REORDER)
    try:
        single = asyncio.run(run_load(plan(server.url, 500, 0.4, 4)))
        split = asyncio.run(run_load(plan(server.url, 500, 0.4, 4), workers=2))
    finally:
        server.stop()
    assert single.reordered > 0 and split.reordered > 0
    assert [w["answered"] for w in split.workers] == [100, 100]
    assert split.lost == single.lost == 0


def test_a_worker_that_falls_behind_makes_the_whole_run_inconclusive(mock):
    split = asyncio.run(run_load(plan(mock.url, 400, 0.5, 4), workers=2))
    behind = split.generator.workers[1]
    behind.generator_late_sends = behind.sends  # as if its process had been starved
    assert split.generator.fell_behind
    assert "worker 2 of 2 fell behind" in split.generator.inconclusive_reason()


def test_a_worker_that_dies_is_a_lost_slice_named_with_its_messages(mock):
    load = plan(mock.url, 500, 3.0, 4, drain_timeout_s=1.0)

    async def _go() -> LoadResult:
        workers = LocalWorkers(load, 2)
        try:
            await workers.open()
            running = asyncio.create_task(workers.run())
            await asyncio.sleep(0.5)  # a fault at a point in the run, not a wait for a result
            os.kill(workers._processes[1].pid, signal.SIGKILL)
            return await running
        finally:
            await workers.close()

    result = asyncio.run(_go())
    assert len(result.lost_slices) == 1
    assert "worker 2 of 2" in result.lost_slices[0] and "killed by SIGKILL" in result.lost_slices[0]
    assert "c1, c3" in result.lost_slices[0] and "750 message(s) is lost" in result.lost_slices[0]
    assert result.workers[1]["status"].startswith("lost")
    assert result.lost >= 750 and result.answered == 750  # worker 1's half, all answered
    assert result.scheduled == 1500


def test_the_merge_refuses_slices_of_different_partitions():
    load = plan("ws://127.0.0.1:9", 100, 0.2, 6)
    health = LoadEngine(load).health()
    bad = [SliceResult((0, 2), "h", 1, [], {}, health, {}), SliceResult((1, 3), "h", 2, [], {}, health, {})]
    with pytest.raises(ValueError, match="different partitions"):
        merge_slices(load, bad)


def test_run_load_fails_naming_the_lost_slice_after_writing_its_figures(lib, mock):
    """The keyword: a worker killed mid-run fails `Run Load`, which still wrote the figures."""
    library = lib.library
    killed: list[int] = []

    def _kill_the_second_worker() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the run has started (not a wait for a result)
            engine = library.ctx.load_engine
            if isinstance(engine, LocalWorkers) and engine.started_wall and time.time() > engine.started_wall + 0.3:
                killed.append(engine._processes[1].pid)
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=_kill_the_second_worker, daemon=True)
    killer.start()
    with pytest.raises(AssertionError, match=r"lost 1 of 2 worker slices: worker 2 of 2 \(pid \d+\) died"):
        lib.run_load(300, timedelta(seconds=2), connections=4, workers=2, name="killed")
    killer.join(5)
    assert killed
    written = json.loads(next((library.ctx.output_dir() / "load").glob("killed-*.json")).read_text())
    assert written["lost_slices"] and written["workers"][1]["status"].startswith("lost")


def test_a_slice_larger_than_the_pipe_buffer_reaches_the_coordinator_whole(mock):
    """Three thousand connections' trackers are hundreds of KB: more than a socket buffer holds at once."""
    result = asyncio.run(run_load(plan(mock.url, 50, 0.2, 3000, connect_concurrency=200), workers=2))
    assert result.lost_slices == []
    assert (result.opened, result.answered) == (3000, 10)
    assert [w["opened"] for w in result.workers] == [1500, 1500]
