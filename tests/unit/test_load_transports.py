"""The load engine on both its transports (``LoadPlan(transport=...)``): picows, the default, and
websockets must give the same figures.

The load engine's scenarios that depend on the transport (test_load_engine.py has the rest, on
the default) run on each transport against the real mock (a separate process), plus a scripted
in-process server that sends what the mock never does (unparseable frames, a binary frame,
fragmented messages, a close with a code and a reason), which both must count alike. Counts
only, never times.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

pytest.importorskip("picows")

from apex_mock import faults as F
from fakes import INSTANT, start_instant_mock
from MessagingLibrary.dialects import load_dialect
from MessagingLibrary.engine.auth import development_jwt_secret, mint_jwt
from MessagingLibrary.engine.load import LoadEngine, LoadResult, connection_class, run_load
from MessagingLibrary.engine.mock_process import start_mock
from MessagingLibrary.engine.picows_transport import PicowsLoadConnection, describe_picows_open_error
from test_load_engine import plan, run
from websockets.asyncio.server import serve

PICOWS = {"transport": "picows"}
TRANSPORTS = ("picows", "websockets")


MOCK_ARGS = INSTANT  # the conftest's mock answers at once


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> dict[str, str]:
    """The plan option choosing the transport: each test using it runs once per transport."""
    return {"transport": request.param}


def test_the_transport_name_selects_the_picows_connection(mock):
    assert connection_class("picows") is PicowsLoadConnection
    engine = LoadEngine(plan(mock.url, 10, 0.1, connections=2, **PICOWS))
    assert all(isinstance(c, PicowsLoadConnection) for c in engine.connections)


def test_every_message_answered_in_order_per_connection(mock, transport):
    result = run(plan(mock.url, 1000, 0.5, connections=4, **transport))
    assert (result.scheduled, result.sent, result.answered, result.lost) == (500, 500, 500, 0)
    assert (result.duplicated, result.reordered, result.disconnects, result.unmatched, result.unparseable) == (0, 0, 0, 0, 0)
    assert [c["answered"] for c in result.per_connection] == [125, 125, 125, 125]
    assert result.latency["count"] == 500
    assert result.close_reasons == [] and result.stalled_connections == 0


def test_chat_messages_with_streams_are_followed(mock, transport):
    result = run(plan(mock.url, 200, 0.25, connections=2, message_type="user_message", streams=True, quiet_s=0.05, **transport))
    assert (result.scheduled, result.answered, result.lost) == (50, 50, 0)
    assert result.streams is not None


def test_a_loop_blocked_mid_run_makes_late_sends_not_lost_ones(mock, transport):
    """Counts only: ~150 sends were due while the loop was blocked, they go out late, all answered."""
    result = run(plan(mock.url, 500, 1.0, **transport), during=(0.3, lambda: time.sleep(0.3)))
    assert result.answered == 500 and result.missed_sends >= 100
    assert result.generator.write_waits == 0  # nothing waited on the server


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (F.REORDER, lambda r: r.reordered > 0 and r.lost == 0 and any("arrived after" in e for e in r.examples)),
        (F.DUPLICATE_RESPONSE, lambda r: r.duplicated == 100 // 5 and r.lost == 0 and r.answered == 100),
        (F.DROP_RESPONSE, lambda r: r.lost == 100 // F.DROP_PERIOD and r.delivery_ratio < 1.0),
    ],
    ids=["reorder", "duplicate", "gap"],
)
def test_order_duplicates_and_gaps_are_judged_in_arrival_order(fault, check, transport):
    server = start_instant_mock(fault)
    try:
        result = run(plan(server.url, 500, 0.2, drain_timeout_s=0.5, **transport))
    finally:
        server.stop()
    assert result.scheduled == 100
    assert check(result), (result.reordered, result.duplicated, result.lost, result.examples)


def test_injected_drops_reconnect_resend_and_every_message_is_processed_once(mock, transport):
    result = run(plan(mock.url, 400, 0.5, connections=2, message_type="user_message",
                      drop_every=25, verify_processing=True, **transport))
    assert result.injected_drops == 8  # 100 messages per connection, a drop after every 25th
    assert result.reconnects == 8 and result.reconnect_failures == []
    assert result.delivered == 200 and result.disconnects == 0
    assert result.processing == {"not_processed": 0, "processed_more_than_once": 0, "examples": [], "unavailable": "", "unsupported": ""}


def test_server_side_disconnects_are_reported_with_their_close_code_and_reconnected(transport):
    server = start_instant_mock(f"{F.DISCONNECT_EVERY}=40")
    try:
        result = run(plan(server.url, 400, 0.25, message_type="user_message", reconnect=True, **transport))
    finally:
        server.stop()
    assert result.disconnects >= 2 and result.reconnects == result.disconnects
    assert result.delivered == result.scheduled == 100
    assert result.close_reasons[0] == "connection c0 closed by the server or the network (code 1006)"


def test_a_frame_over_the_servers_limit_closes_with_its_code_and_reason_on_both_transports(mock):
    """The mock closes a connection that sends a frame over 1 MiB with 1009 and a reason."""
    results = {
        transport: run(plan(mock.url, 20, 0.1, message_type="user_message", message_size=2**20 + 10,
                            drain_timeout_s=1.0, transport=transport))
        for transport in ("websockets", "picows")
    }
    for result in results.values():
        assert result.disconnects == 1 and result.answered == 0
        assert result.close_reasons and "(code 1009" in result.close_reasons[0]
    assert results["picows"].close_reasons == results["websockets"].close_reasons


def test_a_server_that_stops_reading_stalls_the_connection_and_that_is_the_servers_fault(transport):
    """TCP backpressure: the mock stops reading after 20 frames; 32 KB messages fill the socket
    buffers, the client's writes wait, the connection counts as stalled after the stall timeout
    and its later messages are not sent. The lateness that caused is excused: the generator kept
    its schedule (late threshold 300 ms, so only the server's stall can make a send that late)."""
    server = start_instant_mock(f"{F.STOP_READING}=20")
    try:
        result = run(
            plan(server.url, 400, 1.0, message_type="user_message", message_size=32768, stall_timeout_s=0.3,
                 late_threshold_s=0.3, drain_timeout_s=0.5, **transport)
        )
    finally:
        server.stop(timeout=0.5)  # a server that stopped reading its connection does not stop gracefully
    health = result.generator
    assert result.stalled_connections == 1
    assert result.blocked_sends > 0 and health.blocked_sends == result.blocked_sends
    assert health.write_waits >= 1
    assert result.delivered <= 20 < result.scheduled
    assert not health.fell_behind, health.describe()
    assert any("stalled: the server did not read" in reason for reason in result.close_reasons)


def test_the_netra_dialect_opens_its_session_and_every_message_is_answered(transport):
    server = start_mock(extra_args=["--processing-ms", "0", "--dialect", "netra"], timeout=15)
    try:
        secret = development_jwt_secret()
        for message_type in ("throughput_test", "user_message"):
            load_plan = plan(server.url, 400, 0.25, connections=2, message_type=message_type,
                             dialect=load_dialect("netra"), **transport)
            load_plan.tokens = [mint_jwt(secret, f"picows-{message_type}-{i}") for i in range(2)]
            result = run(load_plan)
            assert result.opened == 2, result.connect_failures
            assert (result.scheduled, result.answered, result.lost) == (100, 100, 0), message_type
            assert "'netra'" in result.dialect and result.close_reasons == []
        bad = plan(server.url, 100, 0.1, dialect=load_dialect("netra"), **transport)  # opaque token: refused
        refused = asyncio.run(run_load(bad))
        assert refused.opened == 0
        assert "the session did not open" in refused.connect_failures[0] or "HTTP 40" in refused.connect_failures[0]
    finally:
        server.stop()


def test_configure_requests_are_answered_and_a_missing_operation_is_reported(transport):
    server = start_mock(extra_args=["--without", "configure_session"], timeout=15)
    try:
        load_plan = plan(server.url, 100, 0.1, configure={"throughput_processing_ms": 0.5}, **transport)

        async def _go():
            engine = LoadEngine(load_plan)
            try:
                await asyncio.wait_for(engine.open(), 5)
                return engine.configure_problem
            finally:
                await engine.close()

        problem = asyncio.run(_go())
    finally:
        server.stop()
    assert "answered error 'unsupported'" in problem


def test_refused_connections_are_counted_and_named(mock, transport):
    result = asyncio.run(run_load(plan(mock.url.replace("/ws", "/nowhere"), 100, 0.1, connections=2, **transport)))
    assert result.opened == 0
    assert result.lost == result.scheduled == 10
    assert "HTTP 404" in result.connect_failures[0]
    closed_port = asyncio.run(run_load(plan("ws://127.0.0.1:9/ws", 100, 0.1, connect_timeout_s=2.0, **transport)))
    assert closed_port.opened == 0 and closed_port.connect_failures[0].startswith("Cannot connect to ws://127.0.0.1:9/ws")


def test_open_errors_are_described_without_the_token():
    assert "timed out" in describe_picows_open_error("ws://h/ws", TimeoutError())
    assert "connection refused" in describe_picows_open_error("ws://h/ws", ConnectionRefusedError())


# --------------------------------------------------------------------------- a scripted server


CLOSE_AFTER = 10


async def _scripted(ws) -> None:
    """session_started, two unparseable frames, a binary JSON frame of no known type; then each
    throughput_test answered (every other answer fragmented); closes with 4000 after CLOSE_AFTER."""
    await ws.send(orjson.dumps({"type": "session_started", "queued": 0}).decode())
    await ws.send("not json")
    await ws.send("[1, 2]")
    await ws.send(b'{"type": "hello"}')
    answered = 0
    async for raw in ws:
        frame = orjson.loads(raw)
        reply = orjson.dumps({"type": "throughput_response", "message_id": frame["message_id"],
                              "sequence_id": frame["sequence_id"]}).decode()
        if answered % 2:
            await ws.send([reply[:7], reply[7:20], reply[20:]])  # one message in three frames
        else:
            await ws.send(reply)
        answered += 1
        if answered == CLOSE_AFTER:
            await ws.close(4000, "enough for today")
            return


def _run_scripted(transport: str) -> LoadResult:
    async def _go() -> LoadResult:
        async with serve(_scripted, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            load_plan = plan(f"ws://127.0.0.1:{port}/ws", 200, 0.1, drain_timeout_s=1.0, transport=transport)
            return await asyncio.wait_for(run_load(load_plan), 10)

    return asyncio.run(_go())


def test_unparseable_fragmented_and_binary_frames_and_a_close_reason_count_alike_on_both_transports():
    results = {transport: _run_scripted(transport) for transport in ("websockets", "picows")}
    picows = results["picows"]
    assert picows.answered == CLOSE_AFTER and picows.scheduled == 20 and picows.lost == 20 - CLOSE_AFTER
    assert (picows.unparseable, picows.other_frames, picows.disconnects) == (2, 1, 1)
    assert picows.close_reasons == ["connection c0 closed by the server or the network (code 4000, reason 'enough for today')"]
    figures = ("answered", "lost", "unparseable", "other_frames", "disconnects", "close_reasons", "reordered", "duplicated")
    assert {k: getattr(picows, k) for k in figures} == {k: getattr(results["websockets"], k) for k in figures}
