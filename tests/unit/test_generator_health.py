"""The load generator judges itself: late sends, lateness excused by writes waiting on the server,
the bound, the inconclusive verdict, and the rows of the measurement table.

No test here asserts a measured time: the clocks are driven by hand, and the real-socket test
waits for a condition (the connection pausing its writes) with a timeout.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from assertionengine import AssertionOperator as Op
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from MessagingLibrary import _judge_inconclusive
from MessagingLibrary.context import Context, is_timing
from MessagingLibrary.engine.health import MIN_LATE_SENDS, FlowConnection, GeneratorHealth, SendClock, waits_on_peer
from MessagingLibrary.keywords.reporting import _table

MS = 1_000_000


def _health(clock: SendClock, fraction: float = 0.01, run: str = "r") -> GeneratorHealth:
    return GeneratorHealth.of(run, clock, None, fraction)


def test_late_sends_are_the_generators_own_unless_a_write_waited_on_the_server():
    clock = SendClock(0.010, 0.010)
    clock.before(0, 1 * MS)  # on time
    clock.after(0, False)
    clock.before(10 * MS, 30 * MS)  # 20 ms late, nothing waited: the generator's own
    clock.after(0, False)
    assert (clock.late_sends, clock.generator_late_sends) == (1, 1)


def test_lateness_explained_by_a_write_that_waited_on_the_server_is_excused_for_the_whole_late_streak():
    clock = SendClock(0.010, 0.010)
    clock.before(0, 0)
    clock.after(500 * MS, True)  # the server stopped reading: this send waited 500 ms
    for k in range(1, 6):  # the next sends were due meanwhile and go out late
        clock.before(k * 10 * MS, 500 * MS + k * 1000)
        clock.after(0, False)
    assert clock.late_sends == 5
    assert clock.generator_late_sends == 0
    assert clock.write_waits == 1


def test_an_on_time_send_ends_the_streak_so_later_lateness_is_the_generators_again():
    clock = SendClock(0.010, 0.010)
    clock.before(0, 0)
    clock.after(100 * MS, True)
    clock.before(200 * MS, 200 * MS)  # on time: the server's wait is over
    clock.after(0, False)
    clock.before(300 * MS, 350 * MS)  # 50 ms late with no wait: the generator's
    clock.after(0, False)
    assert clock.generator_late_sends == 1


def test_hiccups_under_the_behind_threshold_are_reported_but_not_held_against_the_generator():
    clock = SendClock(0.010, 0.050)
    for k in range(100):
        clock.before(k * 10 * MS, k * 10 * MS + 30 * MS)  # every send 30 ms late: a shared machine
    health = _health(clock)
    assert (health.late_sends, health.generator_late_sends, health.fell_behind) == (100, 0, False)
    assert health.describe().startswith("0 of 100 sends more than 50 ms late (100 more than 10 ms)")


def test_a_slow_send_that_did_not_wait_is_never_excused():
    clock = SendClock(0.010, 0.010)
    clock.before(0, 0)
    clock.after(300 * MS, False)  # descheduled mid-send: the generator's problem
    clock.before(10 * MS, 300 * MS)
    assert clock.generator_late_sends == 1


def test_the_bound_is_a_share_of_the_sends_and_at_least_a_few_sends():
    clock = SendClock(0.010, 0.010)
    for k in range(1000):
        clock.before(k * MS, k * MS + (20 * MS if k < MIN_LATE_SENDS else 0))
    health = _health(clock, 0.01)
    assert health.allowed_late_sends == 10
    assert not health.fell_behind and health.inconclusive_reason() == ""
    for k in range(1000, 1020):
        clock.before(k * MS, k * MS + 20 * MS)
    health = _health(clock, 0.01)
    assert health.generator_late_sends == 25
    assert health.fell_behind
    small = SendClock(0.010, 0.010)
    for k in range(100):
        small.before(k * MS, k * MS + (20 * MS if k < MIN_LATE_SENDS - 1 else 0))
    assert not _health(small, 0.01).fell_behind  # 4 late of 100: one hiccup, not a generator that cannot keep up


def test_the_reason_names_the_run_the_counts_and_says_what_cannot_be_judged():
    clock = SendClock(0.010, 0.010)
    for k in range(100):
        clock.before(k * MS, k * MS + 20 * MS)
    reason = _health(clock, run="rate-10000").inconclusive_reason()
    assert reason.startswith("the load generator fell behind its schedule in 'rate-10000' (100 of 100 sends more than 10 ms late")
    assert "client CPU" in reason and reason.endswith("this run cannot judge the server's rate or latency")


def test_rates_and_latencies_are_timing_figures_counts_and_memory_are_not():
    assert is_timing("latency p95 of load 'x'", "s")
    assert is_timing("receive rate of load 'x'", "msg/s")
    assert is_timing("achieved ratio of load 'x' phase peak", "ratio")
    assert is_timing("p95 degradation of load 'x'", "ratio")
    assert not is_timing("delivery ratio of load 'x'", "ratio")
    assert not is_timing("lost of load 'x'", "count")
    assert not is_timing("server memory growth", "MB")


def _behind() -> GeneratorHealth:
    clock = SendClock(0.010, 0.010)
    for k in range(100):
        clock.before(k * MS, k * MS + 20 * MS)
    return _health(clock, run="flood")


def test_a_timing_assertion_after_a_run_whose_generator_fell_behind_is_recorded_inconclusive_not_failed():
    ctx = Context()
    ctx.note_generator(_behind(), "load 'flood'")
    # would fail (2 s > 200 ms), but cannot judge the server: no AssertionError
    assert ctx.check("latency p95 of load 'flood'", 2.0, Op["<="], "200 ms", unit="s") == 2.0
    row = ctx.measurements[-1]
    assert row.verdict == "INCONCLUSIVE" and row.passed is None and row.expected == 0.2
    assert ctx.inconclusive == [ctx.generator.inconclusive_reason()]
    # loss is still judged
    with pytest.raises(AssertionError, match="lost of load 'flood' was 3, expected == 0"):
        ctx.check("lost of load 'flood'", 3, Op["=="], 0, unit="count")
    ctx.loop.stop()


def test_a_generator_that_kept_up_leaves_every_assertion_to_judge():
    ctx = Context()
    ctx.note_generator(_health(SendClock(0.010, 0.010)), "load 'ok'")
    with pytest.raises(AssertionError, match="latency p95 of load 'ok' was 2 s, expected <= 0.2 s"):
        ctx.check("latency p95 of load 'ok'", 2.0, Op["<="], "200 ms", unit="s")
    assert ctx.inconclusive == []
    ctx.loop.stop()


def test_the_generator_rows_stand_beside_the_servers_in_the_table():
    ctx = Context()
    ctx.check("lost of load 'flood'", 0, Op["=="], 0, unit="count")
    ctx.note_generator(_behind(), "load 'flood'")
    sources = [r.source for r in ctx.measurements]
    assert sources == ["server", "generator", "generator", "generator", "generator"]
    late = ctx.measurements[1]
    assert late.name == "late sends (over 10 ms, the generator's own) of load 'flood'"
    assert (late.value, late.expected, late.verdict) == (100, MIN_LATE_SENDS - 1, "INCONCLUSIVE")
    html = _table(ctx.measurements)
    server, generator = html.split("The load generator's own figures")
    assert "lost of load" in server and "late sends" not in server
    assert "late sends" in generator and "INCONCLUSIVE" in generator
    assert ctx.measurements[-1].as_dict()["source"] == "generator"
    ctx.loop.stop()


def _result(status: str, message: str = "") -> SimpleNamespace:
    result = SimpleNamespace(status=status, message=message, tags=set())
    result.passed = status == "PASS"
    return result


def test_a_test_that_otherwise_passed_ends_skip_inconclusive_and_tagged():
    result = _result("PASS")
    _judge_inconclusive(result, ["the load generator fell behind its schedule in 'x' (...)"])
    assert result.status == "SKIP"
    assert result.message == "Inconclusive: the load generator fell behind its schedule in 'x' (...)."
    assert result.tags == {"inconclusive"}


def test_a_failure_found_anyway_stays_a_failure_with_the_note():
    result = _result("FAIL", "3 of 100 message(s) never delivered")
    _judge_inconclusive(result, ["the load generator fell behind its schedule in 'x'"])
    assert result.status == "FAIL"
    assert result.message.startswith("3 of 100 message(s) never delivered [Inconclusive: ")


def test_no_reason_leaves_the_result_alone():
    result = _result("PASS")
    _judge_inconclusive(result, [])
    assert (result.status, result.tags) == ("PASS", set())


def test_a_connection_whose_peer_stops_reading_pauses_its_writes():
    """TCP backpressure is seen as such: the client's writes pause when the server does not read."""

    async def scenario() -> int:
        release = asyncio.Event()

        async def never_reads(ws):
            await release.wait()

        server = await serve(never_reads, "127.0.0.1", 0, compression=None, max_queue=1, max_size=None)
        port = server.sockets[0].getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None, create_connection=FlowConnection, max_size=None)
        try:
            assert waits_on_peer(ws) == (False, 0)
            chunk = b"x" * 65536

            async def fill() -> None:
                while True:
                    await ws.send(chunk)  # waits in drain() once the server's buffers are full

            filler = asyncio.create_task(fill())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while ws.pauses == 0 and loop.time() < deadline and not filler.done():
                await asyncio.sleep(0.01)  # polling a condition, with a timeout
            filler.cancel()
            await asyncio.gather(filler, return_exceptions=True)
            return ws.pauses
        finally:
            release.set()
            ws.transport.abort()
            server.close()
            await asyncio.wait([asyncio.ensure_future(server.wait_closed())], timeout=5)

    assert asyncio.run(scenario()) >= 1
