"""apex_mock over real WebSockets: in-process server on port 0, plus the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from apex_mock import MockServer, user_id_for_token
from apex_mock import faults as F

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ROOT / "libraries"


# --------------------------------------------------------------------------- helpers


def run(coro, timeout: float = 10.0):
    async def guarded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


async def poll(predicate, timeout: float = 3.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Client:
    """Test client: a reader task collects every frame; tests poll the list."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[dict] = []
        self.raw: list[str] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: MockServer, token: str = "tok", **kw) -> "Client":
        ws = await connect(
            server.url, additional_headers={"Authorization": f"Bearer {token}"}, **kw
        )
        client = cls(ws)
        await client.wait_type("session_started")
        return client

    async def _read(self):
        try:
            async for raw in self.ws:
                self.raw.append(raw)
                self.frames.append(orjson.loads(raw))
        except ConnectionClosed:
            pass

    async def send(self, **frame):
        await self.ws.send(orjson.dumps(frame).decode())

    def of_type(self, t: str) -> list[dict]:
        return [f for f in self.frames if f["type"] == t]

    async def wait_type(self, t: str, count: int = 1, timeout: float = 3.0) -> list[dict]:
        return await poll(
            lambda: (lambda got: got if len(got) >= count else None)(self.of_type(t)),
            timeout,
            f"{count} x {t}",
        )

    async def request(self, rid, timeout: float = 3.0, **frame) -> dict:
        await self.send(request_id=rid, **frame)
        found = await poll(
            lambda: [f for f in self.frames if f.get("request_id") == rid], timeout, f"reply to {rid}"
        )
        return found[0]

    async def close(self):
        await self.ws.close()
        await self.reader


async def started(*faults, **kw) -> MockServer:
    server = MockServer(faults, **kw)
    await server.start("127.0.0.1", 0)
    return server


# --------------------------------------------------------------------------- basics


def test_session_started_ordering_and_request_id_echo():
    async def scenario():
        server = await started(processing_ms=1)
        try:
            c = await Client.open(server, "alice.1")
            ss = c.frames[0]
            assert ss["type"] == "session_started" and ss["user_id"] == user_id_for_token("alice.1")
            assert ss["resumed"] is False and ss["queued"] == 0 and isinstance(ss["server_time_ns"], int)
            assert "alice" not in orjson.dumps(ss).decode()
            for i in range(30):
                await c.send(type="user_message", message_id=f"m{i}", sequence_id=i, content=str(i),
                             request_id=f"r{i}", priority=("high" if i % 3 == 0 else "normal"))
            replies = await c.wait_type("ai_response", 30)
            assert [r["sequence_id"] for r in replies] == list(range(30))
            assert [r["request_id"] for r in replies] == [f"r{i}" for i in range(30)]
            state = await c.request(1, type="get_agent_state")
            assert state["type"] == "agent_state" and state["message_count"] == 30
            assert state["last_sequence_id"] == 29 and state["corrupted"] is False
            assert state["memory_usage"]["rss"] > 0
            qs = await c.request(2, type="get_queue_state")
            assert qs["processed_total"] == 30 and qs["capacity"] == 500 and qs["processing_ms"] == 1
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_errors_keep_the_connection_usable():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server)
            await c.ws.send("not json")
            await c.ws.send(b"\x01\x02")
            await c.ws.send("[1, 2]")
            await c.send(type="teleport", request_id=1)
            await c.send(type="user_message", request_id=2)
            await c.send(type="user_message", message_id=3, request_id=3)
            await c.send(type="user_message", message_id="m", priority="urgent", request_id=4)
            await c.send(content="no type", request_id=5)
            await c.send(type="get_queue_state", request_id=[1])
            errors = await c.wait_type("error", 9)
            assert [e["code"] for e in errors] == [
                "bad_json", "bad_json", "bad_json", "unknown_type", "missing_field",
                "bad_field", "bad_field", "missing_field", "bad_field",
            ]
            assert [e.get("request_id") for e in errors] == [None, None, None, 1, 2, 3, 4, 5, None]
            assert "message_id" in errors[4]["message"] and errors[6]["message_id"] == "m"
            # still works afterwards
            await c.send(type="user_message", message_id="ok", sequence_id=0)
            (r,) = await c.wait_type("ai_response")
            assert r["message_id"] == "ok"
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_handler_exception_replies_internal_and_server_survives(monkeypatch):
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "u1")
            other = await Client.open(server, "u2")
            from apex_mock.core import UserCore

            original = UserCore.queue_state

            def boom(self, request=None):
                raise RuntimeError("boom")

            monkeypatch.setattr(UserCore, "queue_state", boom)
            await c.send(type="get_queue_state", request_id="boom")
            (err,) = await c.wait_type("error")
            assert err["code"] == "internal" and err["request_id"] == "boom"
            monkeypatch.setattr(UserCore, "queue_state", original)
            assert (await c.request(7, type="get_queue_state"))["type"] == "queue_state"
            assert (await other.request(8, type="get_queue_state"))["type"] == "queue_state"
            await c.close()
            await other.close()
        finally:
            await server.stop()

    run(scenario())


def test_frame_over_one_mib_closes_with_1009():
    async def scenario():
        server = await started()
        try:
            c = await Client.open(server, max_size=None)
            await c.ws.send("x" * (2**20 + 1))
            await asyncio.wait_for(c.reader, 3)
            assert c.ws.close_code == 1009
            c2 = await Client.open(server)  # server unaffected
            await c2.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- HTTP: auth, health, 404


def _http_get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_auth_and_unknown_path():
    async def scenario():
        server = await started()
        try:
            base = f"http://127.0.0.1:{server.port}"
            assert await asyncio.to_thread(_http_get, base + "/health") == (200, "ok")
            status, _ = await asyncio.to_thread(_http_get, base + "/nope")
            assert status == 404
            with pytest.raises(InvalidStatus) as exc:
                await connect(server.url)
            assert exc.value.response.status_code == 401
            assert b"missing" in exc.value.response.body
            for bad in ("Bearer", "Bearer has space", "Basic abc", "Bearer bad/char", "Bearer " + "a" * 201):
                with pytest.raises(InvalidStatus) as exc:
                    await connect(server.url, additional_headers={"Authorization": bad})
                assert exc.value.response.status_code == 401, bad
                assert b"malformed" in exc.value.response.body
                assert b"bad/char" not in exc.value.response.body
            with pytest.raises(InvalidStatus) as exc:
                await connect(f"ws://127.0.0.1:{server.port}/other",
                              additional_headers={"Authorization": "Bearer ok"})
            assert exc.value.response.status_code == 404
            c = await Client.open(server, "Ok-._~123")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- users, dedup, routing


def test_dedup_is_per_user_and_survives_reconnect():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            a = await Client.open(server, "userA")
            b = await Client.open(server, "userB")
            await a.send(type="user_message", message_id="same", sequence_id=1)
            await b.send(type="user_message", message_id="same", sequence_id=2)
            await a.wait_type("ai_response")
            await b.wait_type("ai_response")
            await a.close()
            a2 = await Client.open(server, "userA")
            assert a2.frames[0]["resumed"] is True
            dup = await a2.request("d", type="user_message", message_id="same", sequence_id=3)
            assert dup == {"type": "duplicate_rejected", "message_id": "same", "sequence_id": 3,
                           "original_sequence_id": 1, "request_id": "d"}
            await a2.close()
            await b.close()
        finally:
            await server.stop()

    run(scenario())


def test_reply_goes_to_other_connection_or_waits_for_reconnect():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            user = server.users  # in-process inspection
            a = await Client.open(server, "router")
            b = await Client.open(server, "router")
            await a.request(1, type="configure_session", processing_ms=150)
            await a.send(type="user_message", message_id="to-b", sequence_id=1)
            await a.close()
            (r,) = await b.wait_type("ai_response")
            assert r["message_id"] == "to-b"
            await b.send(type="user_message", message_id="later", sequence_id=2)
            await b.close()
            uid = user_id_for_token("router")
            await poll(lambda: len(user[uid].core.pending_replies) == 1, what="pending reply")
            c = await Client.open(server, "router")
            assert c.frames[0]["queued"] == 1
            (r,) = await c.wait_type("ai_response")
            assert r["message_id"] == "later" and c.frames.index(r) == 1
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- backpressure, agents, misc


def test_capacity_headroom_and_queue_state():
    async def scenario():
        server = await started()
        try:
            c = await Client.open(server)
            await c.request(0, type="configure_session", processing_ms=5000, queue_capacity=3)
            await c.send(type="user_message", message_id="busy")  # goes in flight
            uid = user_id_for_token("tok")
            await poll(lambda: server.users[uid].core.in_flight is not None, what="in flight")
            for i in range(3):
                await c.send(type="user_message", message_id=f"w{i}")
            full = await c.request("n", type="user_message", message_id="n", sequence_id=9)
            assert full == {"type": "queue_full", "message_id": "n", "sequence_id": 9, "priority": "normal",
                            "queue_size": 3, "capacity": 3, "retry_after_ms": 15000, "request_id": "n"}
            await c.send(type="user_message", message_id="h", priority="high")
            full = await c.request("c", type="user_message", message_id="c", priority="critical")
            assert full["type"] == "queue_full" and full["queue_size"] == 4
            qs = await c.request("q", type="get_queue_state")
            assert qs["queue_size"] == 4 and qs["in_flight"] == 1 and qs["max_queue_size_seen"] == 4
            assert qs["headroom"] == 1 and qs["queue_full_total"] == 2
            stats = await c.request("s", type="get_server_stats")
            assert stats["queue_depth"] == 4 and stats["connections"] == 1 and stats["users"] == 1
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_agents_probe_stats_push_ack():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server)
            assert (await c.request(1, type="configure_agents", agents=["x", "y"]))["agents"] == ["x", "y"]
            err = await c.request(2, type="user_message", message_id="m", target_agents=["z"])
            assert err["code"] == "bad_field"
            await c.send(type="user_message", message_id="m", sequence_id=4, target_agents=["x", "y"])
            (r,) = await c.wait_type("ai_response")
            assert r["contributing_agents"] == [{"agent": "x", "processed_sequence": 4},
                                                {"agent": "y", "processed_sequence": 4}]
            st = await c.request(3, type="get_all_agent_states")
            assert st["agents"]["x"]["shared_state"] == st["agents"]["y"]["shared_state"] == {"m": "m@4"}
            t0 = time.monotonic_ns()
            p = await c.request(4, type="latency_probe", probe_id="p1", client_send_ns=t0)
            assert p["type"] == "latency_response" and p["client_send_ns"] == t0
            assert t0 <= p["server_receive_ns"] <= p["server_send_ns"] <= time.monotonic_ns()
            await c.send(type="throughput_test", message_id="t", sequence_id=1, request_id=5)
            (tr,) = await c.wait_type("throughput_response")
            assert tr == {"type": "throughput_response", "message_id": "t", "sequence_id": 1, "request_id": 5}
            await c.send(type="ack", delivery_ids=["x"])
            assert (await c.request(6, type="push", to_user="u", message_id="p"))["code"] == "forbidden"
            stats = await c.request(7, type="get_server_stats")
            for key in ("connections", "users", "messages_total", "rss_bytes", "uptime_s", "queue_depth"):
                assert key in stats
            assert stats["messages_total"] == 2
            admin = await Client.open(server, "admin-root")
            assert (await admin.request(8, type="push", to_user="u", message_id="p"))["code"] == "unsupported"
            assert [e["request_id"] for e in c.of_type("error")] == [2, 6]  # ack got no reply
            await admin.close()
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- faults over the wire


async def _fire(c: Client, n: int, **extra):
    for i in range(n):
        await c.send(type="user_message", message_id=f"m{i}", sequence_id=i, **extra)


def test_fault_reorder_over_wire():
    async def scenario():
        server = await started(F.REORDER, processing_ms=0)
        try:
            c = await Client.open(server)
            await _fire(c, 7)
            got = await c.wait_type("ai_response", 6)
            assert [r["sequence_id"] for r in got] == [0, 2, 1, 3, 4, 5]
            # the 7th response (seq 6) is held; with no next one, the timer flushes it
            got = await c.wait_type("ai_response", 7, timeout=F.REORDER_FLUSH_S + 2)
            assert got[-1]["sequence_id"] == 6
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_duplicate_and_drop_over_wire():
    async def scenario():
        server = await started(F.DUPLICATE_RESPONSE, F.DROP_RESPONSE, processing_ms=0)
        try:
            c = await Client.open(server)
            await _fire(c, 8)
            await poll(lambda: server.messages_total == 8, what="processing")
            state = await c.request("s", type="get_agent_state")
            assert state["message_count"] == 8
            got = [f["sequence_id"] for f in c.of_type("ai_response")]
            assert got == [0, 0, 1, 2, 3, 4, 5, 5, 7]  # 1st and 6th twice, 7th never
            dups = [raw for raw in c.raw if '"sequence_id":0' in raw]
            assert dups[0] == dups[1]  # identical frames
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_slow_delays_delivery_not_processing():
    async def scenario():
        server = await started(F.SLOW, processing_ms=0)
        try:
            c = await Client.open(server)
            t0 = time.monotonic()
            await _fire(c, 3)
            await poll(lambda: server.messages_total == 3, what="processing")
            assert time.monotonic() - t0 < 0.5 and not c.of_type("ai_response")
            # a state query is not delayed
            assert (await c.request(1, type="get_queue_state"))["processed_total"] == 3
            got = await c.wait_type("ai_response", 3, timeout=3)
            assert time.monotonic() - t0 >= F.SLOW_DELAY_S - 0.05
            assert [r["sequence_id"] for r in got] == [0, 1, 2]
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_state_faults_over_wire():
    async def scenario():
        server = await started(F.NO_DEDUP, F.STALE_STATE, F.AGENT_DESYNC, processing_ms=0)
        try:
            c = await Client.open(server)
            await c.request(0, type="configure_agents", agents=["a", "b"])
            await c.send(type="user_message", message_id="m", sequence_id=1, target_agents=["a", "b"])
            await c.send(type="user_message", message_id="m", sequence_id=2)
            await c.wait_type("ai_response", 2)
            assert not c.of_type("duplicate_rejected")  # no_dedup
            st = await c.request(1, type="get_agent_state")
            assert st["message_count"] == 1  # stale_state: one behind
            agents = (await c.request(2, type="get_all_agent_states"))["agents"]
            assert agents["a"]["shared_state"]["m"] != agents["b"]["shared_state"]["m"]  # desync
            assert agents["b"]["last_processed_sequence"] == 0
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_capacity_faults_over_wire():
    async def scenario():
        server = await started(F.NO_BACKPRESSURE, processing_ms=0)
        server2 = await started(F.IGNORE_PRIORITY, processing_ms=0)
        try:
            for srv, expect_full in ((server, False), (server2, True)):
                c = await Client.open(srv)
                await c.request(0, type="configure_session", processing_ms=5000, queue_capacity=2)
                await _fire(c, 1)
                core = srv.users[user_id_for_token("tok")].core
                await poll(lambda: core.in_flight is not None, what="in flight")
                await c.send(type="user_message", message_id="w1")
                await c.send(type="user_message", message_id="w2")
                await c.send(type="user_message", message_id="h", priority="high")
                await c.send(type="user_message", message_id="n")
                qs = await c.request("q", type="get_queue_state")
                if expect_full:
                    assert [f["message_id"] for f in c.of_type("queue_full")] == ["h", "n"]
                    assert qs["max_queue_size_seen"] == 2
                else:
                    assert not c.of_type("queue_full")
                    assert qs["max_queue_size_seen"] == qs["queue_size"] == 4
                await c.close()
        finally:
            await server.stop()
            await server2.stop()

    run(scenario())


# --------------------------------------------------------------------------- CLI


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(LIBRARIES) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_unknown_fault_exits_2_with_list():
    proc = subprocess.run(
        [sys.executable, "-m", "apex_mock", "--fault", "bogus"],
        capture_output=True, text=True, env=_env(), timeout=10,
    )
    assert proc.returncode == 2
    assert "bogus" in proc.stderr
    for name, fault in F.FAULTS.items():
        assert name in proc.stderr and fault.description in proc.stderr
    assert proc.stdout == ""


def test_cli_help_lists_faults():
    proc = subprocess.run([sys.executable, "-m", "apex_mock", "--help"],
                          capture_output=True, text=True, env=_env(), timeout=10)
    assert proc.returncode == 0
    for name in F.FAULTS:
        assert name in proc.stdout


def test_cli_startup_line_health_and_sigterm(tmp_path):
    log_file = tmp_path / "mock.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apex_mock", "--port", "0", "--fault", "reorder", "--log-file", str(log_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("apex-mock listening on ws://127.0.0.1:") and line.endswith("/ws\n")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        assert port > 0
        assert _http_get(f"http://127.0.0.1:{port}/health") == (200, "ok")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""
        log_text = log_file.read_text()
        assert "server_started" in log_text and '"fault":"reorder"' in log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
