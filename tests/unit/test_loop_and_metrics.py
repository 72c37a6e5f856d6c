"""The library's loop thread and latency histogram."""

import asyncio
import threading

import pytest

from MessagingLibrary.engine.loop import LoopThread, LoopTimeout
from MessagingLibrary.engine.metrics import LatencyHistogram


@pytest.fixture
def loop_thread():
    thread = LoopThread()
    yield thread
    thread.stop()


def test_runs_coroutines_on_its_own_thread(loop_thread):
    async def where():
        return threading.current_thread().name

    assert loop_thread.run(where(), 5) == "apex-loop"
    assert threading.current_thread().name != "apex-loop"


def test_timeout_cancels_the_coroutine_and_names_it(loop_thread):
    cancelled = threading.Event()

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(LoopTimeout, match="waiting for nothing did not finish within 0.2 s"):
        loop_thread.run(forever(), 0.2, "waiting for nothing")
    assert cancelled.wait(2)


def test_exceptions_propagate_unchanged(loop_thread):
    async def boom():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        loop_thread.run(boom(), 5)


def test_stop_cancels_pending_tasks_and_can_restart(loop_thread):
    async def spawn():
        return asyncio.get_running_loop().create_task(asyncio.sleep(3600))

    task = loop_thread.run(spawn(), 5)
    loop_thread.stop()
    assert task.cancelled()
    assert not loop_thread.running

    async def answer():
        return 42

    assert loop_thread.run(answer(), 5) == 42


def test_histogram_percentiles_in_seconds():
    histogram = LatencyHistogram.of(i * 1_000_000 for i in range(1, 1001))  # 1..1000 ms
    assert histogram.count == 1000
    assert histogram.percentile(50) == pytest.approx(0.5, rel=0.01)
    assert histogram.percentile(99) == pytest.approx(0.99, rel=0.01)
    assert histogram.max == pytest.approx(1.0, rel=0.01)
    assert histogram.mean == pytest.approx(0.5005, rel=0.01)


def test_histogram_clamps_out_of_range_and_rejects_bad_percentiles():
    histogram = LatencyHistogram()
    histogram.record_ns(10**19)
    assert histogram.clamped == 1
    with pytest.raises(ValueError, match="between 0 and 100"):
        histogram.percentile(101)
    assert LatencyHistogram().percentile(99) == 0.0
