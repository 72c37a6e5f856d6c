"""apex_mock over real WebSockets: in-process server on port 0, plus the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from apex_mock import MockServer, user_id_for_token
from apex_mock import faults as F
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from fakes import run, poll

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ROOT / "libraries"


# --------------------------------------------------------------------------- helpers


class Client:
    """Test client: a reader task collects every frame; tests poll the list."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[dict] = []
        self.raw: list[str] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: MockServer | str, token: str = "tok", **kw) -> Client:
        url = server if isinstance(server, str) else server.url
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, **kw)
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
        def enough() -> list[dict] | None:
            got = self.of_type(t)
            return got if len(got) >= count else None

        return await poll(enough, timeout, f"{count} x {t}")

    async def request(self, rid, timeout: float = 3.0, **frame) -> dict:
        await self.send(request_id=rid, **frame)
        found = await poll(
            lambda: [f for f in self.frames if f.get("request_id") == rid], timeout, f"reply to {rid}"
        )
        return found[0]

    async def close(self):
        await self.ws.close()
        await self.reader

    @property
    def user_id(self) -> str:
        return self.frames[0]["user_id"]


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
            await b.send(type="user_message", message_id="later", sequence_id=2, priority="high",
                         request_id="rq")
            await b.close()
            uid = user_id_for_token("router")
            await poll(lambda: user[uid].core.offline.waiting_count == 1, what="offline reply")
            c = await Client.open(server, "router")
            assert c.frames[0]["queued"] == 1
            (r,) = await c.wait_type("ai_response")
            assert c.frames.index(r) == 1
            assert r["message_id"] == "later" and r["priority"] == "high" and r["request_id"] == "rq"
            assert r["delivery_id"].startswith("dlv-") and r["redelivered"] is False
            assert isinstance(r["queued_at"], int) and r["queued_at"] <= time.time_ns()
            qs = await c.request("q", type="get_queue_state")
            assert (qs["offline_size"], qs["offline_unacked"], qs["offline_queued_total"]) == (0, 1, 1)
            await c.send(type="ack", delivery_ids=[r["delivery_id"]])
            qs = await c.request("q2", type="get_queue_state")
            assert (qs["offline_unacked"], qs["offline_delivered_total"]) == (0, 1)
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
            assert (await c.request(6, type="push", to_user=c.user_id, message_id="p"))["code"] == "forbidden"
            stats = await c.request(7, type="get_server_stats")
            for key in ("connections", "users", "messages_total", "rss_bytes", "uptime_s", "queue_depth"):
                assert key in stats
            assert stats["messages_total"] == 2
            assert stats["offline_held"] == 0
            assert [e["request_id"] for e in c.of_type("error")] == [2, 6]  # ack got no reply
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- offline queue over the wire


async def gone(server: MockServer, client: Client) -> None:
    """Close ``client`` and wait until the server has processed the close (released its entries)."""
    uid = client.user_id
    conns = server.users[uid].connections
    n = len(conns)
    await client.close()
    await poll(lambda: len(conns) < n, what="server-side close")


async def push(admin: Client, rid, to_user: str, message_id: str, **fields) -> dict:
    result = await admin.request(rid, type="push", to_user=to_user, message_id=message_id, **fields)
    assert result["type"] == "push_result", result
    return result


def test_push_needs_an_admin_and_valid_fields():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "plain")
            err = await c.request("f", type="push", to_user=c.user_id, message_id="p")
            assert err == {"type": "error", "code": "forbidden", "message": "push needs an admin token",
                           "request_id": "f", "message_id": "p"}
            admin = await Client.open(server, "admin-qa")
            target = user_id_for_token("nobody-yet")
            cases = [
                ({}, "missing_field", "to_user"),
                ({"to_user": "nobody-yet"}, "bad_field", "to_user"),  # a token is not a user id
                ({"to_user": target}, "missing_field", "message_id"),
                ({"to_user": target, "message_id": ""}, "bad_field", "message_id"),
                ({"to_user": target, "message_id": "m", "priority": "urgent"}, "bad_field", "priority"),
                ({"to_user": target, "message_id": "m", "ttl_s": 0}, "bad_field", "ttl_s"),
                ({"to_user": target, "message_id": "m", "ttl_s": "1"}, "bad_field", "ttl_s"),
                ({"to_user": target, "message_id": "m", "content": 5}, "bad_field", "content"),
            ]
            for i, (fields, code, name) in enumerate(cases):
                err = await admin.request(i, type="push", **fields)
                assert err["type"] == "error" and err["code"] == code, (fields, err)
                assert f"'{name}'" in err["message"], err
            assert "session_started.user_id" in (await admin.request("u", type="push", to_user="x",
                                                                     message_id="m"))["message"]
            assert target not in server.users  # nothing created by a refused push
            await c.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_push_to_an_online_user_is_delivered_at_once_and_redelivered_on_close():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            admin = await Client.open(server, "admin-qa")
            a = await Client.open(server, "carol")
            b = await Client.open(server, "carol")  # most recently opened: gets the push
            result = await push(admin, 1, b.user_id, "p1", content="hello", priority="high")
            assert result == {"type": "push_result", "message_id": "p1", "to_user": b.user_id,
                              "status": "delivered", "delivery_id": result["delivery_id"],
                              "offline_size": 1, "request_id": 1}
            (pm,) = await b.wait_type("pushed_message")
            assert pm == {"type": "pushed_message", "message_id": "p1", "content": "hello",
                          "priority": "high", "from_user": admin.user_id,
                          "delivery_id": result["delivery_id"], "queued_at": pm["queued_at"],
                          "redelivered": False}
            assert 0 < pm["queued_at"] <= time.time_ns()
            qs = await admin.request("q", type="get_queue_state", user_id=b.user_id)
            assert (qs["user_id"], qs["offline_size"], qs["offline_unacked"]) == (b.user_id, 0, 1)
            # b goes away without acking: the push goes to a at once, marked redelivered
            await gone(server, b)
            (again,) = await a.wait_type("pushed_message")
            assert again == {**pm, "redelivered": True}
            await a.send(type="ack", delivery_ids=[again["delivery_id"]])
            qs = await a.request("q2", type="get_queue_state")
            assert (qs["offline_unacked"], qs["offline_delivered_total"], qs["offline_redelivered_total"]) == (0, 1, 1)
            await a.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_push_to_an_offline_user_then_reconnect_in_priority_order_ack_and_redelivery():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            admin = await Client.open(server, "admin-qa")
            uid = user_id_for_token("dave")  # never connected: created by the first push
            plan = [("N1", "normal"), ("H1", "high"), ("N2", "normal"), ("C", "critical"),
                    ("L", "low"), ("H2", "high"), ("N3", "normal")]
            for i, (mid, priority) in enumerate(plan):
                r = await push(admin, i, uid, mid, priority=priority, content=f"c-{mid}")
                assert (r["status"], r["offline_size"]) == ("queued", i + 1)
                assert "evicted_message_id" not in r and "reason" not in r
            qs = await admin.request("q", type="get_queue_state", user_id=uid)
            assert (qs["offline_size"], qs["offline_queued_total"]) == (7, 7)
            stats = await admin.request("s", type="get_server_stats")
            assert stats["offline_held"] == 7

            d = await Client.open(server, "dave")
            ss = d.frames[0]
            assert (ss["resumed"], ss["queued"]) == (False, 7)
            got = await d.wait_type("pushed_message", 7)
            assert d.frames[1:8] == got  # right after session_started
            assert [f["message_id"] for f in got] == ["C", "H1", "H2", "N1", "N2", "N3", "L"]
            assert all(f["redelivered"] is False and f["from_user"] == admin.user_id for f in got)
            assert len({f["delivery_id"] for f in got}) == 7
            assert [f["queued_at"] for f in got[3:6]] == sorted(f["queued_at"] for f in got[3:6])
            state = await d.request("st", type="get_agent_state")
            assert state["memory_usage"]["total_objects"] == 7  # the unacked entries

            await d.send(type="ack", delivery_ids=[f["delivery_id"] for f in got[:3]])
            await gone(server, d)  # the other four were never acked
            d2 = await Client.open(server, "dave")
            assert (d2.frames[0]["resumed"], d2.frames[0]["queued"]) == (True, 4)
            again = await d2.wait_type("pushed_message", 4)
            assert again == [{**f, "redelivered": True} for f in got[3:]]
            await d2.send(type="ack", delivery_ids=[f["delivery_id"] for f in again])
            qs = await d2.request("q2", type="get_queue_state")
            assert (qs["offline_size"], qs["offline_unacked"], qs["offline_delivered_total"],
                    qs["offline_redelivered_total"]) == (0, 0, 7, 4)
            await gone(server, d2)
            d3 = await Client.open(server, "dave")
            assert d3.frames[0]["queued"] == 0
            await d3.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_overflow_policies_over_the_wire():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            admin = await Client.open(server, "admin-qa")
            e = await Client.open(server, "erin")
            await e.request("c", type="configure_session", offline_capacity=3, overflow_policy="drop_oldest")
            await gone(server, e)
            uid = e.user_id
            for i, (mid, priority) in enumerate([("C", "critical"), ("N1", "normal"), ("N2", "normal")]):
                await push(admin, i, uid, mid, priority=priority)
            r = await push(admin, "h", uid, "H", priority="high")
            assert (r["status"], r["evicted_message_id"], r["offline_size"]) == ("queued", "N1", 3)
            r = await push(admin, "l", uid, "L", priority="low")
            assert r["status"] == "dropped" and "delivery_id" not in r and "evicted_message_id" not in r
            assert r["reason"].startswith("offline queue full (3 of 3, policy drop_oldest)")
            e2 = await Client.open(server, "erin")
            got = await e2.wait_type("pushed_message", 3)
            assert [f["message_id"] for f in got] == ["C", "H", "N2"]
            await e2.request("c2", type="configure_session", overflow_policy="reject")
            await gone(server, e2)  # the three unacked entries go back: still full
            r = await push(admin, "r", uid, "R", priority="critical")
            assert r == {"type": "push_result", "message_id": "R", "to_user": uid, "status": "rejected",
                         "offline_size": 3, "reason": "offline queue full (3 of 3, policy reject)",
                         "request_id": "r"}
            qs = await admin.request("q", type="get_queue_state", user_id=uid)
            assert (qs["offline_dropped_total"], qs["offline_rejected_total"], qs["offline_size"]) == (2, 1, 3)
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_offline_expiry_runs_on_a_timer():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            admin = await Client.open(server, "admin-qa")
            uid = user_id_for_token("frank")
            await push(admin, 1, uid, "short", ttl_s=0.2)
            await push(admin, 2, uid, "long")
            offline = server.users[uid].core.offline
            # Nobody touches frank's queue: only the server's timer can expire the entry.
            await poll(lambda: offline.expired_total == 1, timeout=3, what="timer expiry")
            assert offline.held == 1
            qs = await admin.request("q", type="get_queue_state", user_id=uid)
            assert (qs["offline_size"], qs["offline_expired_total"], qs["offline_ttl_s"]) == (1, 1, 300.0)
            f = await Client.open(server, "frank")
            assert f.frames[0]["queued"] == 1
            (pm,) = await f.wait_type("pushed_message")
            assert pm["message_id"] == "long"
            await f.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_get_queue_state_of_another_user_is_admin_only():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            g = await Client.open(server, "gina")
            other = user_id_for_token("someone")
            err = await g.request(1, type="get_queue_state", user_id=other)
            assert err["code"] == "forbidden" and "admin" in err["message"]
            own = await g.request(2, type="get_queue_state", user_id=g.user_id)
            assert own["type"] == "queue_state" and own["user_id"] == g.user_id
            assert (await g.request(3, type="get_queue_state", user_id=5))["code"] == "bad_field"
            admin = await Client.open(server, "admin-qa")
            qs = await admin.request(4, type="get_queue_state", user_id=other)
            assert qs["user_id"] == other and qs["offline_size"] == 0 and qs["offline_capacity"] == 100
            assert other not in server.users  # reading does not create the user
            mine = await admin.request(5, type="get_queue_state")
            assert mine["user_id"] == admin.user_id
            await g.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_throughput_response_for_an_absent_user_is_dropped_and_counted():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            h = await Client.open(server, "hank")
            await h.request(0, type="configure_session", throughput_processing_ms=200)
            await h.send(type="throughput_test", message_id="t1")
            await gone(server, h)
            core = server.users[h.user_id].core
            await poll(lambda: core.throughput_dropped_total == 1, what="throughput drop")
            h2 = await Client.open(server, "hank")
            assert h2.frames[0]["queued"] == 0
            qs = await h2.request(1, type="get_queue_state")
            assert qs["throughput_dropped_total"] == 1 and qs["offline_queued_total"] == 0
            await h2.close()
        finally:
            await server.stop()

    run(scenario())


def test_offline_faults_over_the_wire():
    async def scenario():
        server = await started(F.LOSE_OFFLINE, processing_ms=0)
        server2 = await started(F.DUPLICATE_DELIVERY, processing_ms=0)
        try:
            for srv in (server, server2):
                admin = await Client.open(srv, "admin-qa")
                uid = user_id_for_token("ivy")
                await push(admin, 1, uid, "a", priority="low")
                await push(admin, 2, uid, "b", priority="high")
                ivy = await Client.open(srv, "ivy")
                assert ivy.frames[0]["queued"] == 2
                # replies on a connection come after the deliveries sent on connect
                await ivy.request("q", type="get_queue_state")
                got = [f["message_id"] for f in ivy.of_type("pushed_message")]
                assert got == ([] if srv is server else ["b", "b", "a"])
                await ivy.close()
                await admin.close()
        finally:
            await server.stop()
            await server2.stop()

    run(scenario())


def test_fault_slow_delays_offline_deliveries_but_not_session_started():
    async def scenario():
        server = await started(F.SLOW, processing_ms=0)
        try:
            admin = await Client.open(server, "admin-qa")
            await push(admin, 1, user_id_for_token("jill"), "p")
            t0 = time.monotonic()
            j = await Client.open(server, "jill")
            assert time.monotonic() - t0 < F.SLOW_DELAY_S / 2 and j.frames[0]["queued"] == 1
            await j.request("q", type="get_queue_state")  # not delayed, and nothing before it
            assert not j.of_type("pushed_message")
            await j.wait_type("pushed_message", timeout=F.SLOW_DELAY_S + 2)
            assert time.monotonic() - t0 >= F.SLOW_DELAY_S - 0.05
            await j.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_slow_reconnect_delays_the_second_handshake_only():
    async def scenario():
        server = await started(F.SLOW_RECONNECT)
        try:
            t0 = time.monotonic()
            k = await Client.open(server, "kim")
            first = time.monotonic() - t0
            await gone(server, k)
            t1 = time.monotonic()
            k2 = await Client.open(server, "kim")
            second = time.monotonic() - t1
            t2 = time.monotonic()
            other = await Client.open(server, "someone-new")
            fresh = time.monotonic() - t2
            # a delayed handshake takes >= SLOW_RECONNECT_S; the others clearly less
            assert first < F.SLOW_RECONNECT_S - 0.1 and fresh < F.SLOW_RECONNECT_S - 0.1
            assert second >= F.SLOW_RECONNECT_S - 0.02
            assert k2.frames[0]["resumed"] is True
            await k2.close()
            await other.close()
        finally:
            await server.stop()

    run(scenario())


def test_mock_server_rejects_bad_settings():
    with pytest.raises(ValueError, match="overflow_policy must be one of"):
        MockServer(overflow_policy="drop_all")
    with pytest.raises(ValueError, match="offline_ttl_s must be a number > 0"):
        MockServer(offline_ttl_s=0)
    with pytest.raises(ValueError, match="unknown operation.*teleport"):
        MockServer(without=["teleport"])


def test_without_answers_the_named_test_control_operations_unsupported():
    async def scenario():
        server = await started(without=["push", "configure_session"])
        try:
            user = await Client.open(server, "tok")
            admin = await Client.open(server, "admin-x")
            refused = await admin.request("p1", type="push", to_user=user.user_id, message_id="m1")
            assert refused["type"] == "error" and refused["code"] == "unsupported"
            assert "--without push" in refused["message"]
            refused = await user.request("c1", type="configure_session", processing_ms=5)
            assert refused["code"] == "unsupported"
            assert (await user.request("q1", type="get_queue_state"))["type"] == "queue_state"
            await user.close()
            await admin.close()
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
                await poll(lambda core=core: core.in_flight is not None, what="in flight")
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


def _first_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """The CLI's start-up line, or fail after ``timeout`` (never hang on a silent process)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"apex-mock printed no start-up line within {timeout} s")
    return proc.stdout.readline()


@contextmanager
def cli_mock(*args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``apex-mock --port 0 ARGS`` started as a user would: yields the process and its start-up
    line, and kills the process afterwards if the test did not stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "apex_mock", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        yield proc, _first_line(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_unknown_fault_exits_2_with_the_names_on_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "apex_mock", "--fault", "bogus"],
        check=False, capture_output=True, text=True, env=_env(), timeout=10,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"apex-mock: Unknown mock fault 'bogus'; the faults are: {', '.join(F.FAULTS)}\n"
    assert proc.stdout == ""


def test_cli_help_lists_faults():
    proc = subprocess.run([sys.executable, "-m", "apex_mock", "--help"], check=False,
                          capture_output=True, text=True, env=_env(), timeout=10)
    assert proc.returncode == 0
    for name in F.FAULTS:
        assert name in proc.stdout


def test_cli_startup_line_health_and_sigterm(tmp_path):
    log_file = tmp_path / "mock.log"
    with cli_mock("--fault", "reorder", "--log-file", str(log_file)) as (proc, line):
        assert line.startswith("apex-mock listening on ws://127.0.0.1:") and line.endswith("/ws\n")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        assert port > 0
        assert _http_get(f"http://127.0.0.1:{port}/health") == (200, "ok")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""
        log_text = log_file.read_text()
        assert "server_started" in log_text and '"fault":"reorder"' in log_text


def test_cli_offline_flags_set_the_defaults(tmp_path):
    with cli_mock("--offline-capacity", "7", "--overflow-policy", "reject", "--offline-ttl-s", "12.5") as (proc, line):
        url = line.rsplit(" ", 1)[1].strip()

        async def scenario():
            c = await Client.open(url, "cli-user")
            qs = await c.request(1, type="get_queue_state")
            await c.close()
            return qs

        qs = run(scenario())
        assert (qs["offline_capacity"], qs["overflow_policy"], qs["offline_ttl_s"]) == (7, "reject", 12.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--offline-capacity", "0", "must be >= 1"),
        ("--overflow-policy", "drop_all", "invalid choice"),
        ("--offline-ttl-s", "0", "must be a finite number > 0"),
        ("--offline-ttl-s", "inf", "must be a finite number > 0"),
    ],
)
def test_cli_rejects_bad_offline_flags(flag, value, message, capsys):
    from apex_mock.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and message in err


def test_cli_help_lists_offline_flags():
    from apex_mock.cli import build_parser

    text = build_parser().format_help()
    for flag in ("--offline-capacity", "--overflow-policy", "--offline-ttl-s"):
        assert flag in text


# --------------------------------------------------------------------------- limits


def test_oversized_fields_are_refused_over_the_wire_and_counted():
    from apex_mock.core import Limits

    async def scenario():
        server = await started(processing_ms=0, limits=Limits(max_id_length=16, max_content_length=32))
        try:
            c = await Client.open(server, "alice")
            admin = await Client.open(server, "admin-x")
            err = await c.request("r1", type="user_message", message_id="m" * 17)
            assert (err["code"], err["field"], err["limit"]) == ("too_large", "message_id", 16)
            assert "message_id" not in err
            err = await c.request("r2", type="user_message", message_id="ok", content="x" * 33)
            assert (err["code"], err["field"], err["message_id"]) == ("too_large", "content", "ok")
            err = await c.request("r3", type="latency_probe", probe_id="p" * 17, client_send_ns=1)
            assert (err["code"], err["field"]) == ("too_large", "probe_id")
            err = await admin.request("r4", type="push", to_user=c.user_id, message_id="p1", content="y" * 33)
            assert (err["code"], err["field"]) == ("too_large", "content")
            await c.send(type="get_agent_state", request_id="q" * 17)
            await poll(lambda: any(f.get("field") == "request_id" for f in c.frames), what="request_id refused")
            await c.send(type="t" * 100_000)
            await poll(lambda: any(f.get("field") == "type" for f in c.frames), what="type refused")
            assert all(len(raw) < 300 for raw in c.raw)  # no oversized value is echoed back
            ok = await c.request("r5", type="user_message", message_id="fine", content="z" * 32)
            assert ok["type"] == "ai_response"
            stats = await c.request("s", type="get_server_stats")
            assert stats["limits"]["oversized_refused"] == 6
            assert stats["limit_settings"]["max_id_length"] == 16
            await c.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_new_users_beyond_max_users_are_refused_and_known_ones_still_served():
    from apex_mock.core import Limits

    async def scenario():
        server = await started(limits=Limits(max_users=2))
        try:
            a = await Client.open(server, "a")
            admin = await Client.open(server, "admin-b")
            with pytest.raises(InvalidStatus) as exc:
                await Client.open(server, "c")
            assert exc.value.response.status_code == 503
            assert b"too many users" in exc.value.response.body and b"--max-users" in exc.value.response.body
            err = await admin.request("p", type="push", to_user=user_id_for_token("d"), message_id="m1")
            assert err["code"] == "too_many_users"
            ok = await admin.request("p2", type="push", to_user=a.user_id, message_id="m2")
            assert ok["type"] == "push_result"
            again = await Client.open(server, "a")  # a known user reconnects
            stats = await again.request("s", type="get_server_stats")
            assert stats["known_users"] == 2 and stats["limits"]["users_refused"] == 2
            for client in (a, admin, again):
                await client.close()
        finally:
            await server.stop()

    run(scenario())


def test_a_connection_that_does_not_read_is_cut_off_at_max_outbox_bytes():
    from apex_mock.core import Limits

    async def scenario():
        server = await started(processing_ms=0, limits=Limits(max_outbox_bytes=100_000))
        try:
            c = await Client.open(server, "reader", max_size=None)
            c.reader.cancel()  # stop reading: the server's output piles up
            big = "x" * 4_000
            for i in range(20_000):
                try:
                    await c.send(type="user_message", message_id=f"m{i}", content=big)
                except ConnectionClosed:
                    break
            other = await Client.open(server, "watcher")
            await poll(lambda: server.limit_counters.outbox_closed == 1, 10.0, "the cut-off")
            stats = await other.request("s", type="get_server_stats")
            assert stats["limits"]["outbox_closed"] == 1
            await other.close()
        finally:
            await server.stop()

    run(scenario(), timeout=30.0)


# --------------------------------------------------------------------------- closing connections


class _StubWebSocket:
    """Just what a Conn reads of its WebSocket: the protocol state and the peer."""

    remote_address = ("127.0.0.1", 1)

    def __init__(self, state):
        self.state = state


def test_a_connection_whose_close_handshake_began_is_not_online():
    """Between the client's close frame and the handler's clean-up a connection is still listed;
    a push or reply sent to it then would die unread and come back flagged ``redelivered`` to a
    user who never saw it. ``online()`` (which push and reply routing use) skips it."""
    from apex_mock.server import Conn, UserRuntime
    from websockets.protocol import State

    user = UserRuntime(core=None)
    older = Conn(_StubWebSocket(State.OPEN), user, 1, False)
    closing = Conn(_StubWebSocket(State.CLOSING), user, 2, False)
    user.connections = [older, closing]
    assert user.online() is older
    older.ws.state = State.CLOSED
    assert user.online() is None
    user.connections = [Conn(_StubWebSocket(State.OPEN), user, 3, False)]
    user.connections[0].open = False  # the handler has begun its clean-up
    assert user.online() is None
