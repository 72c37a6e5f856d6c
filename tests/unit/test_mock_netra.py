"""apex-mock --dialect netra: in-process MockServer(dialect="netra") on port 0, real WebSockets."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import jwt
import orjson
import pytest
from apex_mock import MockServer
from apex_mock.netra import DEV_JWT_SECRET, token_from_subprotocol
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
import fakes
from fakes import poll

SECRET = "unit-test-secret-never-logged-7f3a"


def run(coro, timeout: float = 15.0):
    return fakes.run(coro, timeout)


def token(sub: str = "alice", secret: str = SECRET, **claims) -> str:
    return jwt.encode({"sub": sub, **claims}, secret, algorithm="HS256")


async def started(*faults, **kw) -> MockServer:
    kw.setdefault("jwt_secret", SECRET)
    kw.setdefault("handshake_delay_ms", 5)
    server = MockServer(faults, dialect="netra", **kw)
    await server.start("127.0.0.1", 0)
    return server


class Netra:
    """A netra test client: a reader task collects every frame; tests poll the list."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[dict] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, server: MockServer, tok: str | None = None, *, where: str = "subprotocol",
                      subprotocols: list[str] | None = None, path: str = "/ws", handshake: bool = True,
                      **kw) -> Netra:
        url = f"ws://127.0.0.1:{server.port}{path}"
        tok = token() if tok is None else tok
        if subprotocols is None and where == "subprotocol":
            subprotocols = [f"jwt.{tok}"]
        if where == "header":
            kw["additional_headers"] = {"Authorization": f"Bearer {tok}"}
        elif where.startswith("query"):
            name = where.partition(":")[2] or "token"
            url += f"?{name}={tok}"
        ws = await connect(url, subprotocols=subprotocols, **kw)
        client = cls(ws)
        if handshake:
            await client.handshake()
        return client

    async def handshake(self) -> dict:
        hs = (await self.wait_type("handshake_response"))[0]
        await self.send(type="handshake_acknowledged", thread_id=hs["thread_id"],
                        timestamp=datetime.now().astimezone().isoformat())
        await self.wait_type("handshake_complete")
        return (await self.wait_type("apex.session_started"))[0]

    async def _read(self):
        try:
            async for raw in self.ws:
                self.frames.append(orjson.loads(raw))
        except ConnectionClosed:
            pass

    async def send(self, **frame):
        await self.ws.send(orjson.dumps(frame).decode())

    def of_type(self, t: str) -> list[dict]:
        return [f for f in self.frames if f["type"] == t]

    async def wait_type(self, t: str, count: int = 1, timeout: float = 3.0) -> list[dict]:
        def enough():
            got = self.of_type(t)
            return got if len(got) >= count else None

        return await poll(enough, timeout, f"{count} x {t}")

    async def request(self, op: str, rid, timeout: float = 3.0, **payload) -> dict:
        await self.send(type=f"apex.{op}", payload=payload, request_id=rid)
        found = await poll(lambda: [f for f in self.frames if f.get("request_id") == rid], timeout,
                           f"reply to {rid}")
        return found[0]

    async def chat(self, content: str, message_id: str | None = None, **payload) -> None:
        body = {"content": content, "thread_id": payload.pop("thread_id", "th-1"),
                "run_id": payload.pop("run_id", message_id), "timestamp": "2026-01-01T00:00:00+00:00",
                "client_environment": None, **payload}
        if message_id is not None:
            body["message_id"] = message_id
        await self.send(type="user_message", payload=body)

    async def closed(self, timeout: float = 3.0) -> tuple[int | None, str | None]:
        await asyncio.wait_for(self.reader, timeout)
        return self.ws.close_code, self.ws.close_reason

    async def close(self):
        await self.ws.close()
        await self.reader


def is_iso(ts) -> bool:
    parsed = datetime.fromisoformat(ts)
    return parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("form", ["jwt.{t}", "jwt-auth.{t}", "bearer.{t}", "jwt.staging.{t}", "staging-auth.{t}"])
def test_every_subprotocol_form_authenticates_and_is_echoed(form):
    async def scenario():
        server = await started()
        try:
            sub = form.format(t=token("sp-user"))
            c = await Netra.connect(server, subprotocols=["something-else", sub])
            assert c.ws.subprotocol == sub  # exactly the one used
            assert c.of_type("apex.session_started")[0]["data"]["user_id"] == "sp-user"
            await c.close()
        finally:
            await server.stop()

    run(scenario())


@pytest.mark.parametrize("where", ["header", "query", "query:jwt", "query:auth_token", "query:access_token"])
def test_header_and_query_placements_authenticate(where):
    async def scenario():
        server = await started()
        try:
            c = await Netra.connect(server, token("bob"), where=where, path="/ws/anything")
            assert c.ws.subprotocol is None
            est = c.of_type("connection_established")[0]
            assert est["data"]["user_id"] == "bob" and est["data"]["connection_id"].startswith("conn-")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_subprotocol_is_preferred_over_header():
    async def scenario():
        server = await started()
        try:
            c = await Netra.connect(server, subprotocols=[f"jwt.{token('from-subprotocol')}"],
                                    additional_headers={"Authorization": f"Bearer {token('from-header')}"})
            assert c.of_type("apex.session_started")[0]["data"]["user_id"] == "from-subprotocol"
            await c.close()
        finally:
            await server.stop()

    run(scenario())


@pytest.mark.parametrize(
    "bad",
    [
        token(secret="another-secret-of-thirty-two-bytes-or-more"),  # bad signature
        token(exp=int(time.time()) - 60),  # expired
        jwt.encode({"sub": "mallory"}, key=None, algorithm="none"),  # unsigned
        jwt.encode({"name": "no subject"}, SECRET, algorithm="HS256"),  # no sub
        "not-a-jwt",
        None,  # no token at all
    ],
    ids=["bad-signature", "expired", "unsigned", "no-sub", "not-a-jwt", "missing"],
)
def test_bad_tokens_get_auth_failed_and_1008(bad):
    async def scenario():
        server = await started()
        try:
            if bad is None:
                c = await Netra.connect(server, "", where="none", handshake=False)
            else:
                c = await Netra.connect(server, bad, handshake=False)
            code, _ = await c.closed()
            assert code == 1008
            assert [f["type"] for f in c.frames] == ["error_message"]
            err = c.frames[0]
            assert err["error_code"] == "AUTH_FAILED" and is_iso(err["timestamp"])
            if bad is not None:
                assert bad not in orjson.dumps(err).decode()
            assert server.connections == 0
        finally:
            await server.stop()

    run(scenario())


def test_header_auth_with_a_bad_token_is_refused_too():
    async def scenario():
        server = await started()
        try:
            c = await Netra.connect(server, token(secret="a-wrong-secret-of-thirty-two-bytes-or-more"), where="header", handshake=False)
            assert (await c.closed())[0] == 1008
            assert c.frames[0]["error_code"] == "AUTH_FAILED"
        finally:
            await server.stop()

    run(scenario())


def test_no_acceptable_subprotocol_closes_1003():
    async def scenario():
        server = await started()
        try:
            c = await Netra.connect(server, subprotocols=["chat", "graphql-ws"], handshake=False,
                                    additional_headers={"Authorization": f"Bearer {token()}"})
            assert c.ws.subprotocol is None
            assert (await c.closed())[0] == 1003
            assert c.frames == []
        finally:
            await server.stop()

    run(scenario())


def test_default_secret_is_the_development_secret(monkeypatch):
    monkeypatch.delenv("APEX_JWT_SECRET", raising=False)

    async def scenario():
        server = MockServer(dialect="netra", handshake_delay_ms=0)
        await server.start("127.0.0.1", 0)
        try:
            c = await Netra.connect(server, token("dev", secret=DEV_JWT_SECRET))
            await c.close()
            assert server._netra is not None and DEV_JWT_SECRET not in repr(server._netra)
        finally:
            await server.stop()

    run(scenario())


def test_subprotocol_token_forms():
    t = token()
    assert token_from_subprotocol(f"jwt.{t}") == t
    assert token_from_subprotocol(f"jwt.staging.{t}") == t
    assert token_from_subprotocol(f"jwt-auth.{t}") == t
    assert token_from_subprotocol("chat") is None
    assert token_from_subprotocol("jwt.") is None


# --------------------------------------------------------------------------- handshake


def test_handshake_frames_and_session_start():
    async def scenario():
        server = await started()
        try:
            c = await Netra.connect(server, token("hs-user"))
            types = [f["type"] for f in c.frames]
            assert types[:4] == ["connection_established", "handshake_response", "handshake_complete",
                                 "apex.session_started"]
            hs = c.of_type("handshake_response")[0]
            assert hs["thread_id"].startswith("thread-hs-user-") and hs["run_id"].startswith("run-hs-")
            assert hs["request_id"].startswith("hs-") and hs["message"] == "Handshake required"
            assert hs["session_token"] and hs["session_token"] not in orjson.dumps(c.frames[0]).decode()
            assert c.of_type("handshake_complete")[0]["thread_id"] == hs["thread_id"]
            ss = c.of_type("apex.session_started")[0]
            assert ss["data"]["user_id"] == "hs-user" and ss["data"]["resumed"] is False
            assert ss["data"]["queued"] == 0 and isinstance(ss["data"]["server_time_ns"], int)
            assert all(is_iso(f["timestamp"]) for f in c.frames)
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_wrong_thread_id_fails_the_handshake_with_1008():
    async def scenario():
        server = await started()
        try:
            c = await Netra.connect(server, handshake=False)
            await c.wait_type("handshake_response")
            await c.send(type="handshake_acknowledged", thread_id="not-the-thread")
            assert (await c.closed())[0] == 1008
            assert c.frames[-1]["type"] == "error_message"
            assert c.frames[-1]["error_code"] == "HANDSHAKE_FAILED"
        finally:
            await server.stop()

    run(scenario())


def test_frames_before_handshake_complete_are_lost_and_counted():
    async def scenario():
        # A long window: the frames sent right after handshake_acknowledged are surely inside it.
        server = await started(handshake_delay_ms=300, processing_ms=0)
        try:
            c = await Netra.connect(server, handshake=False)
            hs = (await c.wait_type("handshake_response"))[0]
            await c.chat("before the ack", "early-0")  # before handshake_acknowledged
            await c.send(type="handshake_acknowledged", thread_id=hs["thread_id"])
            await c.chat("inside the window", "early-1")  # between ack and complete
            await c.send(type="ping")  # answered, also before the handshake
            await c.wait_type("pong")
            assert not c.of_type("handshake_complete")
            await c.wait_type("apex.session_started")
            stats = await c.request("get_server_stats", "s1")
            assert stats["type"] == "apex.server_stats"
            assert stats["data"]["lost_before_handshake"] == 2
            state = await c.request("get_agent_state", "a1")
            assert state["data"]["message_count"] == 0  # neither was processed
            assert not c.of_type("agent_completed") and not c.of_type("ack")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- chat


def test_user_message_becomes_the_five_golden_path_events():
    async def scenario():
        server = await started(processing_ms=1)
        try:
            c = await Netra.connect(server, token("chatter"))
            await c.chat("what is the weather?", "m-1", run_id="run-m-1", thread_id="th-9")
            done = (await c.wait_type("agent_completed"))[0]
            events = [f for f in c.frames if f.get("run_id") == "run-m-1"]
            assert [e["type"] for e in events] == ["agent_started", "agent_thinking", "tool_executing",
                                                   "tool_completed", "agent_completed"]
            for e in events:
                assert e["thread_id"] == "th-9" and e["user_id"] == "chatter"
                assert e["agent_name"] == "apex_mock_agent" and is_iso(e["timestamp"])
            started_, thinking, executing, completed_tool, _ = events
            assert started_["data"] == {"status": "started", "message": "Processing your request"}
            assert thinking["data"]["step_number"] == 1 and "reasoning" in thinking["data"]
            assert executing["tool_name"] == "apex_lookup"
            assert executing["data"]["parameters"]["query"] == "what is the weather?"
            assert completed_tool["status"] == "success" and "execution_time_ms" in completed_tool["data"]
            assert done["result"] == "Response to: what is the weather?"  # at the top level
            assert done["data"]["message_id"] == "m-1" and done["data"]["priority"] == "normal"
            assert "delivery_id" not in done["data"] and "request_id" not in done
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_message_without_message_id_run_id_or_thread_gets_its_own():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Netra.connect(server)
            thread = c.of_type("handshake_response")[0]["thread_id"]
            for _ in range(2):
                await c.send(type="user_message", payload={"content": "same words"})
            done = await c.wait_type("agent_completed", 2)
            assert len({d["data"]["message_id"] for d in done}) == 2  # never a duplicate
            assert all(d["thread_id"] == thread and d["run_id"].startswith("run-") for d in done)
            assert not c.of_type("apex.duplicate_rejected")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


@pytest.mark.parametrize("alias", ["message", "chat_message", "user_input"])
def test_aliases_of_user_message(alias):
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Netra.connect(server)
            # No payload: the whole frame is read; top-level message_id and thread_id too.
            await c.send(type=alias, content="hi", message_id=f"{alias}-1", thread_id="t-top", run_id="r-top")
            done = (await c.wait_type("agent_completed"))[0]
            assert done["result"] == "Response to: hi" and done["data"]["message_id"] == f"{alias}-1"
            assert (done["run_id"], done["thread_id"]) == ("r-top", "t-top")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_start_agent_is_a_chat_message():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Netra.connect(server)
            await c.send(type="start_agent", payload={"user_request": "plan my trip", "thread_id": "t-s",
                                                      "context": {}, "settings": {}})
            done = (await c.wait_type("agent_completed"))[0]
            assert done["result"] == "Response to: plan my trip" and done["thread_id"] == "t-s"
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_ext_fields_request_id_and_agents_reach_the_core():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Netra.connect(server)
            configured = await c.request("configure_agents", "cfg", agents=["planner", "writer"])
            assert configured["type"] == "apex.agents_configured"
            assert configured["data"] == {"agents": ["planner", "writer"]}
            await c.send(type="user_message", request_id="rq-7",
                         payload={"content": "x", "message_id": "m-e", "sequence_id": 4, "priority": "high",
                                  "target_agents": ["planner", "writer"], "run_id": "m-e"})
            done = (await c.wait_type("agent_completed"))[0]
            assert done["request_id"] == "rq-7" and done["agent_name"] == "planner"
            assert done["data"]["sequence_id"] == 4 and done["data"]["priority"] == "high"
            assert [a["agent"] for a in done["data"]["contributing_agents"]] == ["planner", "writer"]
            states = await c.request("get_all_agent_states", "all")
            assert states["data"]["agents"]["planner"]["messages_processed"] == 1
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_duplicate_and_queue_full_carry_the_refused_run():
    async def scenario():
        server = await started(processing_ms=200, queue_capacity=1)
        try:
            c = await Netra.connect(server)
            await c.chat("a", "d-1", run_id="run-a", thread_id="t-1")
            core = next(iter(server.users.values())).core
            await poll(lambda: core.in_flight is not None, what="d-1 in flight")
            await c.chat("b", "d-2", run_id="run-b", thread_id="t-1")  # waits (capacity 1)
            await c.chat("c", "d-3", run_id="run-c", thread_id="t-2")  # queue_full
            full = (await c.wait_type("apex.queue_full"))[0]
            assert (full["run_id"], full["thread_id"]) == ("run-c", "t-2")
            assert full["data"]["message_id"] == "d-3" and full["data"]["capacity"] == 1
            await c.chat("a again", "d-1", run_id="run-a2", thread_id="t-3")
            dup = (await c.wait_type("apex.duplicate_rejected"))[0]
            assert (dup["run_id"], dup["thread_id"]) == ("run-a2", "t-3")
            assert dup["data"]["message_id"] == "d-1" and is_iso(dup["timestamp"])
            done = await c.wait_type("agent_completed", 2)
            assert [(d["run_id"], d["thread_id"]) for d in done] == [("run-a", "t-1"), ("run-b", "t-1")]
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- extension operations


def test_ext_operations_answer_with_request_id():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Netra.connect(server, token("ops"))
            qs = await c.request("get_queue_state", "q1")
            assert qs["type"] == "apex.queue_state" and qs["data"]["user_id"] == "ops"
            assert "request_id" not in qs["data"] and is_iso(qs["timestamp"])
            cfg = await c.request("configure_session", "c1", processing_ms=3)
            assert cfg["type"] == "apex.session_configured" and cfg["data"]["processing_ms"] == 3
            lat = await c.request("latency_probe", "l1", probe_id="p1", client_send_ns=123)
            assert lat["type"] == "apex.latency_response"
            assert lat["data"]["probe_id"] == "p1" and isinstance(lat["data"]["server_send_ns"], int)
            # request_id inside the payload works too
            await c.send(type="apex.throughput_test", payload={"message_id": "t1", "sequence_id": 1,
                                                                "request_id": "tp1"})
            tp = (await c.wait_type("apex.throughput_response"))[0]
            assert tp["request_id"] == "tp1" and tp["data"] == {"message_id": "t1", "sequence_id": 1}
            state = await c.request("get_agent_state", "a1")
            assert state["type"] == "apex.agent_state" and state["data"]["user_id"] == "ops"
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_error_message_codes():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Netra.connect(server)
            await c.ws.send("{not json")
            err = (await c.wait_type("error_message"))[0]
            assert err["error_code"] == "JSON_PARSE_ERROR" and err["recovery_suggestions"] == []
            await c.ws.send(b"\x00binary")
            await c.wait_type("error_message", 2)
            assert c.of_type("error_message")[1]["error_code"] == "BAD_JSON"
            bad = await c.request("configure_session", "e1", processing_ms="fast")
            assert bad["type"] == "error_message" and bad["error_code"] == "BAD_FIELD"
            forbidden = await c.request("push", "e2", to_user="someone", message_id="p")
            assert forbidden["error_code"] == "FORBIDDEN"
            await c.chat("x", "m-big" * 100, run_id="run-big")  # message_id over 256 characters
            big = (await c.wait_type("error_message", 5))[-1]
            assert big["error_code"] == "TOO_LARGE" and big["run_id"] == "run-big"
            assert big["details"]["field"] == "message_id" and big["details"]["limit"] == 256
            await c.send(type="user_message", payload={"message_id": "m-s", "sequence_id": "one",
                                                        "run_id": "run-s"})
            seq = await poll(lambda: [f for f in c.of_type("error_message") if f.get("run_id") == "run-s"])
            assert seq[0]["error_code"] == "BAD_FIELD" and seq[0]["details"]["message_id"] == "m-s"
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_unknown_types_and_without_operations_are_acked():
    async def scenario():
        server = await started(without=["push", "configure_session"])
        try:
            c = await Netra.connect(server, token("admin-user", permissions=["admin"]))
            for t in ("frobnicate", "apex.push", "apex.configure_session", "apex.nonsense", "apex.user_message"):
                await c.send(type=t, payload={}, request_id="never-echoed")
            acks = await c.wait_type("ack", 5)
            assert [a["received_type"] for a in acks] == ["frobnicate", "apex.push", "apex.configure_session",
                                                          "apex.nonsense", "apex.user_message"]
            for a in acks:
                assert a["status"] == "acknowledged" and "request_id" not in a and is_iso(a["timestamp"])
            assert not c.of_type("error_message")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_ping_pong_and_heartbeats():
    async def scenario():
        server = await started(heartbeat_s=0.2)
        try:
            c = await Netra.connect(server)
            await c.send(type="ping")
            await c.send(type="heartbeat")
            pong = (await c.wait_type("pong"))[0]
            ack = (await c.wait_type("heartbeat_ack"))[0]
            assert is_iso(pong["timestamp"]) and is_iso(ack["timestamp"])
            hb = (await c.wait_type("heartbeat", timeout=3.0))[0]  # the server's, after a quiet period
            assert hb["data"]["connection_id"].startswith("conn-") and is_iso(hb["data"]["timestamp"])
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- offline queue, admin


def test_offline_reply_is_delivered_as_agent_completed_with_delivery_fields():
    async def scenario():
        server = await started(processing_ms=150)
        try:
            tok = token("away-user")
            c = await Netra.connect(server, tok)
            await c.chat("while you were away", "off-1", run_id="run-off", thread_id="t-off")
            await c.close()  # the reply finishes with nobody connected: offline queue
            await poll(lambda: server.users[next(iter(server.users))].core.offline.held, what="queued reply")
            c2 = await Netra.connect(server, tok)
            ss = c2.of_type("apex.session_started")[0]
            assert ss["data"]["queued"] == 1 and ss["data"]["resumed"] is True
            done = (await c2.wait_type("agent_completed"))[0]
            assert not c2.of_type("agent_started")  # only the final event
            assert done["result"] == "Response to: while you were away"
            assert (done["run_id"], done["thread_id"]) == ("run-off", "t-off")
            assert done["data"]["delivery_id"].startswith("dlv-") and done["data"]["redelivered"] is False
            assert isinstance(done["data"]["queued_at"], int)
            await c2.close()  # not acked: delivered again
            c3 = await Netra.connect(server, tok)
            again = (await c3.wait_type("agent_completed"))[0]
            assert again["data"]["redelivered"] is True
            assert again["data"]["delivery_id"] == done["data"]["delivery_id"]
            await c3.send(type="apex.ack", payload={"delivery_ids": [again["data"]["delivery_id"]]})
            qs = await c3.request("get_queue_state", "q")
            assert qs["data"]["offline_delivered_total"] == 1
            await c3.close()
        finally:
            await server.stop()

    run(scenario())


def test_admin_push_and_queue_state_of_another_user_by_sub():
    async def scenario():
        server = await started()
        try:
            admin = await Netra.connect(server, token("ops-admin", permissions=["admin"]))
            result = await admin.request("push", "p1", to_user="target-sub", message_id="pm-1", content="hello")
            assert result["type"] == "apex.push_result"
            assert result["data"]["to_user"] == "target-sub" and result["data"]["status"] == "queued"
            qs = await admin.request("get_queue_state", "q1", user_id="target-sub")
            assert qs["data"]["user_id"] == "target-sub" and qs["data"]["offline_size"] == 1
            target = await Netra.connect(server, token("target-sub"))
            pushed = (await target.wait_type("apex.pushed_message"))[0]
            assert pushed["data"]["from_user"] == "ops-admin" and pushed["data"]["content"] == "hello"
            assert pushed["data"]["delivery_id"] == result["data"]["delivery_id"]
            await target.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- faults in netra


def test_duplicate_response_fault_repeats_the_whole_event_group():
    async def scenario():
        server = await started("duplicate_response", processing_ms=0)
        try:
            c = await Netra.connect(server)
            await c.chat("once", "dup-1", run_id="run-dup")
            done = await c.wait_type("agent_completed", 2)
            assert [d["data"]["message_id"] for d in done] == ["dup-1", "dup-1"]
            await poll(lambda: len(c.of_type("agent_started")) == 2, what="two groups")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_no_dedup_fault_processes_a_repeat():
    async def scenario():
        server = await started("no_dedup", processing_ms=0)
        try:
            c = await Netra.connect(server)
            await c.chat("one", "nd-1")
            await c.chat("one", "nd-1")
            await c.wait_type("agent_completed", 2)
            assert not c.of_type("apex.duplicate_rejected")
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_apex_dialect_is_unchanged_by_default():
    async def scenario():
        server = MockServer()
        await server.start("127.0.0.1", 0)
        try:
            ws = await connect(server.url, additional_headers={"Authorization": "Bearer plain"})
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 3))
            assert first["type"] == "session_started" and "timestamp" not in first
            await ws.close()
        finally:
            await server.stop()

    run(scenario())


def test_bad_dialect_settings_are_refused():
    with pytest.raises(ValueError, match="unknown dialect"):
        MockServer(dialect="klingon")
    with pytest.raises(ValueError, match="heartbeat_s"):
        MockServer(dialect="netra", heartbeat_s=0)
