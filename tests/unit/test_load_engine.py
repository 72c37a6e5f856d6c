"""The load engine against the real mock server (a separate process on 127.0.0.1).

No timing thresholds: each test asserts counts, or lower bounds that a noisy machine can only
make larger (a server that holds every answer 1.2 s cannot be measured faster than that).
The scenarios both transports must count alike (order, duplicates, gaps, injected drops and
resends, refused connections, a server that stops reading) are in test_load_transports.py,
which runs each on picows (the default) and on websockets.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import pytest
from apex_mock import faults as F
from fakes import INSTANT, start_instant_mock
from MessagingLibrary.engine.load import LoadEngine, LoadPlan, LoadResult
from MessagingLibrary.engine.metrics import PENDING_KEYS
from MessagingLibrary.engine.mock_process import start_mock
from MessagingLibrary.engine.schedule import Phase


MOCK_ARGS = INSTANT  # the conftest's mock answers at once


def plan(url: str, rate: float, seconds: float, connections: int = 1, **options) -> LoadPlan:
    run = f"t{time.perf_counter_ns()}"
    return LoadPlan(
        url=url,
        tokens=[f"{run}.{i}" for i in range(connections)],
        phases=[Phase("steady", rate, seconds)],
        connections=connections,
        run_id=run,
        drain_timeout_s=options.pop("drain_timeout_s", 5.0),
        **options,
    )


def run(load_plan: LoadPlan, during=None) -> LoadResult:
    async def _go() -> LoadResult:
        engine = LoadEngine(load_plan)
        try:
            await engine.open()
            if during is not None:
                asyncio.get_running_loop().call_later(during[0], during[1])
            return await engine.run()
        finally:
            await engine.close()

    return asyncio.run(_go())


def test_every_message_answered_in_order_per_connection(mock):
    result = run(plan(mock.url, 1000, 1.0, connections=4))
    assert (result.scheduled, result.sent, result.answered, result.lost) == (1000, 1000, 1000, 0)
    assert (result.duplicated, result.reordered, result.disconnects) == (0, 0, 0)
    assert [c["answered"] for c in result.per_connection] == [250, 250, 250, 250]
    assert result.latency["count"] == 1000
    assert result.delivery_ratio == 1.0
    assert result.as_dict()["phases"][0]["scheduled"] == 1000


def test_latency_runs_from_the_intended_send_time_so_a_stalled_sender_cannot_hide_it(mock):
    """Block the client's loop for 300 ms mid-run: the sends due meanwhile go out late and are
    counted as missed, and their latency includes the stall (no coordinated omission)."""
    result = run(plan(mock.url, 500, 1.0), during=(0.3, lambda: time.sleep(0.3)))
    assert result.missed_sends >= 100  # ~150 sends were due during the stall
    assert result.lateness["max_s"] >= 0.25
    assert result.latency["max_s"] >= 0.25
    assert result.answered == 500
    # the generator judges itself: its loop was blocked, nothing waited on the server
    health = result.generator
    assert health.generator_late_sends >= 100 and health.write_waits == 0
    assert health.fell_behind
    assert health.inconclusive_reason().startswith("the load generator fell behind its schedule")


def test_a_slow_server_shows_in_the_latency_not_in_the_send_rate():
    server = start_instant_mock(F.SLOW)
    try:
        result = run(plan(server.url, 200, 0.5, drain_timeout_s=5.0))
    finally:
        server.stop()
    assert result.answered == 100
    assert result.latency["p50_s"] >= F.SLOW_DELAY_S * 0.95
    assert result.sent == 100
    assert result.generator.write_waits == 0  # a slow server still reads: no write waited on it


def test_processing_twice_is_caught_by_the_agent_state():
    # 10 ms per message: the message sent just before each injected drop is still being
    # processed when it is resent, so without de-duplication it is processed twice.
    server = start_mock(faults=[F.NO_DEDUP], extra_args=["--processing-ms", "10"], timeout=15)
    try:
        result = run(plan(server.url, 50, 2.0, message_type="user_message", drop_every=20, verify_processing=True))
    finally:
        server.stop()
    # Resent messages whose first attempt had been processed are processed again.
    assert result.processing is not None
    assert result.processing["processed_more_than_once"] > 0
    assert "processed 2 times" in " ".join(result.processing["examples"])


def test_plan_refuses_bad_values_naming_them():
    with pytest.raises(ValueError, match="one per connection"):
        LoadPlan(url="ws://x", tokens=["a", "b"], phases=[Phase("p", 1, 1)], connections=3)
    with pytest.raises(ValueError, match="Message type must be one of"):
        LoadPlan(url="ws://x", tokens=["a"], phases=[Phase("p", 1, 1)], message_type="chat")
    with pytest.raises(ValueError, match="verify_processing needs message_type user_message"):
        LoadPlan(url="ws://x", tokens=["a"], phases=[Phase("p", 1, 1)], verify_processing=True)


def _traced_peak(url: str, seconds: float) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = run(plan(url, 4000, seconds))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.answered == result.scheduled
    return peak


def test_a_run_twice_as_long_takes_no_more_client_memory(mock):
    """Bounded state: histograms and interval sets, no per-message records."""
    _traced_peak(mock.url, 0.5)  # warm up imports and caches
    short = _traced_peak(mock.url, 1.0)
    long = _traced_peak(mock.url, 3.0)
    # 8,000 more messages: keeping even one small int per message would add over 280 KB. The
    # allowance covers the histograms' pending batches (at most PENDING_KEYS values each).
    allowance = 5 * PENDING_KEYS * 120 + 32 * 1024
    assert long <= short + allowance, f"peak traced memory: {short} B for 4,000 messages, {long} B for 12,000"
