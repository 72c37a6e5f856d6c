"""Load slices on a Dask cluster (``cluster=``): a local cluster of two worker processes on this
machine, on 127.0.0.1 only. Suite 3's flood and ten-connection scenarios pass through it; the
merged result equals the one-process result figure for figure where a figure is exact; a
worker killed mid-run is a lost slice, named, and never run twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from .robot_runs import assert_passed_or_inconclusive, run_suite

distributed = pytest.importorskip("distributed", reason="the [distributed] extra is not installed")

from MessagingLibrary.engine.load import LoadPlan, LoadResult, run_load  # noqa: E402
from MessagingLibrary.engine.mock_process import start_mock  # noqa: E402
from MessagingLibrary.engine.schedule import Phase  # noqa: E402
from MessagingLibrary.engine.workers import DASK_RESOURCE, DaskWorkers  # noqa: E402

pytestmark = pytest.mark.suite

FLOOD = "Order Holds Under A 10,000-Message Flood"
TEN = "Order Holds On Each Of Ten Connections"


@pytest.fixture(scope="module")
def cluster():
    """Two Dask worker processes, each offering one load slice; the scheduler's default
    ``allowed-failures`` (a task whose worker died is run again elsewhere) stays as it is, so
    the slice's own guard is what keeps a slice from running twice."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", resources={DASK_RESOURCE: 1},
        dashboard_address=None, worker_dashboard_address=None,
    ) as local:
        yield local


@pytest.fixture(scope="module")
def mock():
    server = start_mock(extra_args=["--processing-ms", "0"], timeout=15)
    try:
        yield server
    finally:
        server.stop()


def _plan(url: str, rate: float, seconds: float, connections: int, **options) -> LoadPlan:
    run = f"d{time.perf_counter_ns()}"
    return LoadPlan(url=url, tokens=[f"{run}.{i}" for i in range(connections)], phases=[Phase("steady", rate, seconds)],
                    connections=connections, run_id=run, name=run, progress=False, drain_timeout_s=3.0, **options)


def _exact(result: LoadResult) -> dict:
    names = ("scheduled", "sent", "answered", "delivered", "lost", "duplicated", "reordered", "unmatched",
             "connections", "opened", "high_priority_sent")
    figures = {name: getattr(result, name) for name in names}
    figures["per_connection"] = [(c["connection"], c["sent"], c["answered"]) for c in result.per_connection]
    figures["phases"] = [(p["scheduled"], p["sent"], p["answered"]) for p in result.phases]
    figures["latency count"] = result.latency["count"]
    return figures


def test_suite_3_flood_and_ten_connections_pass_through_the_cluster(cluster, tmp_path):
    run = run_suite("03__high_volume_throughput.robot", tmp_path, tests=[FLOOD, TEN],
                    variables={"APEX_LOAD_CLUSTER": cluster.scheduler_address})
    assert_passed_or_inconclusive(run, {FLOOD, TEN})
    figures = {p.name.rsplit("-", 1)[0]: json.loads(p.read_text()) for p in (tmp_path / "load").glob("*.json")}
    flood, ten = figures["flood"], figures["ten-connections"]
    assert [w["connections"] for w in ten["workers"]] == [5, 5]  # one slice per cluster worker
    assert len(flood["workers"]) == 1  # one connection: one slice, still on the cluster
    pids = {w["pid"] for w in ten["workers"] + flood["workers"]}
    assert pids <= set(_worker_pids(cluster).values())  # the cluster's processes ran them
    assert all(w["status"] == "reported" for w in ten["workers"] + flood["workers"])
    assert ten["answered"] == ten["scheduled"] and ten["reordered"] == 0


def _worker_pids(cluster) -> dict[str, int]:
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        return client.run(os.getpid)


def test_the_merged_result_equals_the_one_process_result(cluster, mock):
    single = asyncio.run(run_load(_plan(mock.url, 1000, 1.0, 10, high_priority_every=7)))
    spread = asyncio.run(run_load(_plan(mock.url, 1000, 1.0, 10, high_priority_every=7), cluster=cluster.scheduler_address))
    assert _exact(spread) == _exact(single)
    assert len(spread.workers) == 2 and spread.lost_slices == []


def test_a_worker_killed_mid_run_is_a_lost_slice_and_never_runs_twice(cluster, mock):
    load = _plan(mock.url, 400, 3.0, 4)

    async def _go() -> tuple[LoadResult, int]:
        slices = DaskWorkers(load, 2, cluster.scheduler_address)
        try:
            await slices.open()
            running = asyncio.create_task(slices.run())
            await asyncio.sleep(0.5)  # a fault at a point in the run, not a wait for a result
            claimed = slices._client.get_metadata([slices.run_key, "claim", "1"])
            pid = slices._client.run(os.getpid)[claimed]
            os.kill(pid, signal.SIGKILL)
            return await running, pid
        finally:
            await slices.close()

    result, killed = asyncio.run(_go())
    assert len(result.lost_slices) == 1, result.lost_slices
    lost = result.lost_slices[0]
    assert lost.startswith("worker 2 of 2") and "c1, c3" in lost and "600 message(s) is lost" in lost
    assert result.answered == 600 and result.lost >= 600
    assert killed not in {w.get("pid") for w in result.workers}
