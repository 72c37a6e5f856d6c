"""The fault proxy between a real websockets client and server on 127.0.0.1.

The server here is a tiny in-process websockets server: a client frame ``{"n": N}`` makes it
send N numbered ``ai_response`` frames back; every client frame is also remembered, so tests
can see what reached the server. No timing thresholds beyond lower bounds a noisy machine can
only make larger; absence is checked over short bounded windows.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from MessagingLibrary.engine.proxy import (
    PRESETS,
    Action,
    Direction,
    FaultProxy,
    FaultRecord,
    FrameReader,
    FrameRule,
    Latency,
    PartitionEnd,
    ProxyError,
    is_loopback,
    parse_preset,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response

QUIET_S = 0.3  # how long "nothing arrives" is watched
LOOP = {"factory": asyncio.new_event_loop}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request):
    """Every test on the standard loop, and on uvloop when it is installed (the library prefers it)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        LOOP["factory"] = uvloop.new_event_loop
    else:
        LOOP["factory"] = asyncio.new_event_loop
    yield request.param


class Server:
    """Answers ``{"n": N}`` with N ``ai_response`` frames ``{"i": 0..N-1}``; remembers what arrived."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hosts: list[str] = []
        self.closed = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        self.hosts.append(ws.request.headers.get("Host", ""))
        try:
            async for message in ws:
                frame = orjson.loads(message)
                self.received.append(frame)
                for i in range(frame.get("n", 0)):
                    if frame.get("progress"):  # a run's progress event before its answer
                        await ws.send(orjson.dumps({"type": "agent_progress", "message_id": f"m{i}", "i": f"p{i}"}).decode())
                    await ws.send(orjson.dumps({"type": "ai_response", "message_id": f"m{i}", "i": i}).decode())
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()


Scenario = Callable[[FaultProxy, Server, str], Awaitable[None]]


def run(scenario: Scenario, *, process_request=None, **proxy_options: Any) -> list[FaultRecord]:
    """Start a server and a proxy in front of it, run ``scenario``, stop both; return the fault records."""
    records: list[FaultRecord] = []

    async def main() -> None:
        server = Server()
        async with serve(server.handler, "127.0.0.1", 0, compression=None, process_request=process_request) as ws_server:
            port = ws_server.sockets[0].getsockname()[1]
            proxy = FaultProxy(f"ws://127.0.0.1:{port}/ws", on_fault=records.append, **proxy_options)
            url = await proxy.start()
            try:
                await asyncio.wait_for(scenario(proxy, server, url), 20)
            finally:
                await proxy.stop()

    with asyncio.Runner(loop_factory=LOOP["factory"]) as runner:
        runner.run(main())
    return records


async def ask(ws: ClientConnection, n: int) -> list[int]:
    await ws.send(orjson.dumps({"n": n}).decode())
    return [orjson.loads(await asyncio.wait_for(ws.recv(), 5))["i"] for _ in range(n)]


async def nothing_arrives(ws: ClientConnection) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), QUIET_S)
    except TimeoutError:
        return True
    return False


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait for ``condition`` (polling the loop), failing after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def rule(action: Action, *types: str, **options: Any) -> FrameRule:
    return FrameRule(action, options.pop("direction", Direction.to_client), frozenset(types) or None, **options)


# -- relaying ---------------------------------------------------------------------------------


def test_relays_both_ways_unchanged_and_gives_the_target_its_own_host_header():
    async def scenario(proxy, server, url):
        async with connect(url, compression=None) as ws:
            assert await ask(ws, 3) == [0, 1, 2]
            await ws.send(orjson.dumps({"n": 1, "pad": "x" * 70_000}).decode())  # a 64-bit length frame
            assert orjson.loads(await ws.recv())["i"] == 0
        assert len(server.received[-1]["pad"]) == 70_000
        assert server.hosts == [f"127.0.0.1:{proxy.target_port}"]
        assert proxy.url.endswith("/ws") and f":{proxy.port}/" in proxy.url

    assert run(scenario) == []


def test_a_refused_upgrade_is_relayed_as_is():
    def refuse(connection, request):
        return Response(401, "Unauthorized", Headers({"Content-Length": "0"}), b"")

    async def scenario(proxy, server, url):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, compression=None, open_timeout=5)
        assert refused.value.response.status_code == 401

    run(scenario, process_request=refuse)


def test_an_unreachable_target_answers_502_naming_it():
    async def main() -> None:
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proxy = FaultProxy(f"ws://127.0.0.1:{port}/ws")
        url = await proxy.start()
        try:
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, compression=None, open_timeout=5)
            response = refused.value.response
            assert response.status_code == 502
            assert f"could not reach ws://127.0.0.1:{port}/ws" in response.body.decode()
        finally:
            await proxy.stop()

    with asyncio.Runner(loop_factory=LOOP["factory"]) as runner:
        runner.run(main())


def test_only_loopback_targets_unless_allowed():
    with pytest.raises(ProxyError, match="not a loopback address; pass allow_remote=True"):
        FaultProxy("wss://staging.example/ws")
    assert FaultProxy("wss://staging.example/ws", allow_remote=True).remote
    with pytest.raises(ProxyError, match="ws:// or wss://"):
        FaultProxy("http://127.0.0.1:1/ws")
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.1")


# -- frame faults -----------------------------------------------------------------------------


def test_drop_the_next_ai_response_only():
    async def scenario(proxy, server, url):
        async with connect(url, compression=None) as ws:
            proxy.add_rule(rule(Action.drop, "ai_response", limit=1))
            await ws.send(orjson.dumps({"n": 3}).decode())
            assert [orjson.loads(await ws.recv())["i"] for _ in range(2)] == [1, 2]
            assert await ask(ws, 2) == [0, 1]

    records = run(scenario)
    drops = [r for r in records if r.fault == "drop"]
    assert len(drops) == 1
    assert drops[0].details["frame"] == {"type": "ai_response", "message_id": "m0"}
    assert drops[0].details["rule"] == "drop the next ai_response to the client"


def test_duplicate_every_nth_server_frame_counted_per_connection():
    async def scenario(proxy, server, url):
        proxy.add_rule(rule(Action.duplicate, every=3))
        async with connect(url, compression=None) as first, connect(url, compression=None) as second:
            assert await ask(first, 7) == [0, 1, 2, 2, 3, 4, 5]  # 7 asked, 8 read: frame 3 and 6 twice
            assert orjson.loads(await first.recv())["i"] == 5
            assert await ask(second, 3) == [0, 1, 2]
            assert orjson.loads(await second.recv())["i"] == 2

    run(scenario)


def test_reorder_swaps_a_frame_with_its_successor_and_a_lone_frame_still_arrives():
    async def scenario(proxy, server, url):
        proxy.add_rule(rule(Action.reorder, "ai_response", every=5, start=2))
        async with connect(url, compression=None) as ws:
            assert await ask(ws, 8) == [0, 2, 1, 3, 4, 5, 7, 6]
        proxy.clear()
        proxy.add_rule(rule(Action.reorder, "ai_response", start=1, limit=1))
        async with connect(url, compression=None) as ws:
            assert await ask(ws, 1) == [0]  # no successor: released after the hold

    run(scenario)


def test_a_held_response_is_overtaken_by_the_next_response_not_by_a_progress_event_between():
    """Streamed answers (the netra dialect): response 1 is held past run 2's progress event
    until response 2 has passed, so the answers really arrive out of order."""

    async def scenario(proxy, server, url):
        proxy.add_rule(rule(Action.reorder, "ai_response", start=2, limit=1))
        async with connect(url, compression=None) as ws:
            await ws.send(orjson.dumps({"n": 3, "progress": True}).decode())
            arrived = [orjson.loads(await asyncio.wait_for(ws.recv(), 5))["i"] for _ in range(6)]
        assert arrived == ["p0", 0, "p1", "p2", 2, 1]

    run(scenario)


def test_delay_lets_later_frames_overtake():
    async def scenario(proxy, server, url):
        proxy.add_rule(rule(Action.delay, "ai_response", limit=1, delay_s=0.2))
        async with connect(url, compression=None) as ws:
            assert await ask(ws, 3) == [1, 2, 0]

    run(scenario)


def test_client_frames_can_be_dropped_by_type_before_the_server_sees_them():
    async def scenario(proxy, server, url):
        proxy.add_rule(rule(Action.drop, "ping_me", direction=Direction.to_server))
        async with connect(url, compression=None) as ws:
            await ws.send(orjson.dumps({"type": "ping_me"}).decode())
            assert await ask(ws, 1) == [0]
        assert [f.get("type") for f in server.received] == [None]

    run(scenario)


def test_close_after_the_nth_frame_lets_it_through_then_resets():
    async def scenario(proxy, server, url):
        proxy.add_rule(FrameRule(Action.close, Direction.to_server, None, every=2))
        async with connect(url, compression=None) as ws:
            await ws.send(orjson.dumps({"n": 0, "k": 1}).decode())
            await ws.send(orjson.dumps({"n": 0, "k": 2}).decode())
            await ws.send(orjson.dumps({"n": 0, "k": 3}).decode())
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is None  # no close frame: a reset
        await asyncio.wait_for(server.closed.wait(), 5)
        assert [f["k"] for f in server.received] == [1, 2]

    run(scenario)


# -- connection faults ------------------------------------------------------------------------


def test_latency_delays_without_reordering():
    async def scenario(proxy, server, url):
        async with connect(url, compression=None) as ws:
            proxy.set_latency(Direction.to_client, Latency(0.15, 0.1))
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await ask(ws, 30) == list(range(30))
            assert loop.time() - started >= 0.05  # at least the smallest possible delay
            proxy.set_latency(Direction.both, None)
            assert await ask(ws, 2) == [0, 1]

    run(scenario)


@pytest.mark.parametrize("end", [PartitionEnd.heal, PartitionEnd.cut])
def test_a_partition_holds_everything_then_heals_in_order_or_cuts(end):
    async def scenario(proxy, server, url):
        async with connect(url, compression=None) as ws:
            assert await ask(ws, 1) == [0]
            proxy.partition()
            await ws.send(orjson.dumps({"n": 2}).decode())
            pong = await ws.ping()
            assert await nothing_arrives(ws)
            assert not pong.done(), "a ping passed the partition"
            assert len(server.received) == 1, "a client frame passed the partition"
            held = proxy.end_partition(end)
            assert held == 2  # the request and the ping
            if end is PartitionEnd.heal:
                assert [orjson.loads(await ws.recv())["i"] for _ in range(2)] == [0, 1]
                await asyncio.wait_for(pong, 5)
            else:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)

    records = run(scenario)
    assert [r.fault for r in records] == ["partition started", f"partition {'healed' if end is PartitionEnd.heal else 'cut'}"]


def test_a_partition_of_every_connection_holds_new_handshakes_too():
    async def scenario(proxy, server, url):
        proxy.partition()
        opening = asyncio.ensure_future(connect(url, compression=None, open_timeout=5))
        done, _ = await asyncio.wait({opening}, timeout=QUIET_S)
        assert not done, "a handshake passed the partition"
        proxy.end_partition(PartitionEnd.heal)
        ws = await opening
        assert await ask(ws, 1) == [0]
        await ws.close()

    run(scenario)


def test_a_tcp_reset_ends_both_sides_without_a_close_frame():
    async def scenario(proxy, server, url):
        async with connect(url, compression=None) as ws:
            assert await ask(ws, 1) == [0]
            assert proxy.reset() == 1
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is None
            await asyncio.wait_for(server.closed.wait(), 5)
        assert proxy.connections == {}

    records = run(scenario)
    assert [r.fault for r in records] == ["reset"]


def test_faults_can_be_scheduled_while_traffic_flows():
    async def scenario(proxy, server, url):
        async with connect(url, compression=None) as ws:
            proxy.schedule(0.1, lambda: proxy.add_rule(rule(Action.drop, "ai_response")))
            assert await ask(ws, 1) == [0]
            await until(lambda: proxy.rules)
            await ws.send(orjson.dumps({"n": 1}).decode())
            assert await nothing_arrives(ws)

    run(scenario)


# -- frames and presets -----------------------------------------------------------------------


def _wire(frame: Frame, *, mask: bool) -> bytes:
    return frame.serialize(mask=mask, extensions=[])


def test_the_frame_reader_splits_masked_fragmented_and_interleaved_frames_fed_byte_by_byte():
    text = Frame(Opcode.TEXT, orjson.dumps({"type": "a", "message_id": "x"}))
    big = Frame(Opcode.TEXT, orjson.dumps({"type": "b", "pad": "y" * 70_000}))
    first = Frame(Opcode.TEXT, b'{"type":', fin=False)
    ping = Frame(Opcode.PING, b"p")
    rest = Frame(Opcode.CONT, b'"c"}', fin=True)
    wires = [_wire(f, mask=True) for f in (text, big, first, ping, rest)]  # random masks: serialise once
    stream = b"".join(wires)
    reader, units = FrameReader(), []
    for i in range(len(stream)):
        units += reader.feed(stream[i : i + 1])
    assert [unit.type for unit in units] == ["a", "b", "<control 9>", "c"]
    assert units[0].info()["message_id"] == "x"
    # the ping stands alone, ahead of the message it interrupted; nothing else moves or changes
    assert [u.data for u in units] == [wires[0], wires[1], wires[3], wires[2] + wires[4]]
    assert reader.buffered == 0


def test_presets_are_named_validated_and_counted_per_connection():
    rules, latency = parse_preset("drop_responses=3")
    assert latency is None and rules[0].every == 3 and rules[0].standing
    assert rules[0].describe() == "drop every 3rd ai_response or throughput_response to the client"
    assert parse_preset("latency=200")[1] == Latency(0.2, 0.02)
    assert set(PRESETS) >= {"reorder_responses", "duplicate_responses", "drop_responses", "close_after"}
    with pytest.raises(ProxyError, match="Unknown proxy fault 'drop_everything'. Known: reorder_responses"):
        parse_preset("drop_everything")
    with pytest.raises(ProxyError, match="takes a whole number"):
        parse_preset("drop_responses=often")
    with pytest.raises(ProxyError, match="every must be at least 1"):
        FrameRule(Action.drop, every=0)


def _text_frame(frame: dict[str, Any]) -> bytes:
    payload = orjson.dumps(frame)
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


def test_rules_select_server_frames_by_their_canonical_type_in_the_targets_dialect():
    """In the netra dialect an answer is ``agent_completed`` on the wire: the proxy classifies it
    with the dialect's codec, so ``drop_responses`` (which selects ``ai_response``) hits it."""
    from MessagingLibrary.dialects import load_dialect

    wire = {"type": "agent_completed", "run_id": "m-1", "thread_id": "t-1", "result": "ok", "data": {"message_id": "m-1"}}
    [unit] = FrameReader().feed(_text_frame(wire))
    assert unit.type == "agent_completed"  # no dialect: the wire type

    [unit] = FrameReader().feed(_text_frame(wire))
    unit.classify = load_dialect("netra").codec().classify
    assert unit.type == "ai_response"
    assert unit.info()["message_id"] == "m-1"
    [rule], _ = parse_preset("drop_responses=1")
    assert rule.types is not None and unit.type in rule.types
