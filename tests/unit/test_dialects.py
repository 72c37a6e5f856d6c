"""The dialect seam: the loader, the apex identity, and the netra codec (hand-written frames, a fake
connection for the handshake, and the real ``apex-mock --dialect netra`` over WebSockets)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import jwt
import orjson
import pytest
from MessagingLibrary.dialects import (
    ApexDialect,
    Codec,
    Dialect,
    DialectError,
    SessionOpenError,
    load_dialect,
)
from MessagingLibrary.dialects.base import OPERATIONS
from MessagingLibrary.dialects.netra import NetraCodec, NetraDialect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from fakes import run

DEV_SECRET = "apex-acceptance-development-secret"


# --------------------------------------------------------------------------- the loader


def test_built_in_names_load():
    assert isinstance(load_dialect("apex"), ApexDialect)
    assert isinstance(load_dialect(None), ApexDialect)
    netra = load_dialect(" NETRA ")
    assert isinstance(netra, NetraDialect)
    assert netra.auth_in == "subprotocol"
    assert load_dialect("netra", auth_in="query").auth_in == "query"


def test_a_misspelt_name_suggests_the_right_one():
    with pytest.raises(DialectError, match=r"Unknown dialect 'netar'.*Did you mean 'netra'\?"):
        load_dialect("netar")


def test_an_auth_placement_the_dialect_lacks_is_refused():
    with pytest.raises(DialectError, match=r"cannot put the token in 'cookie'.*subprotocol, header, query"):
        load_dialect("netra", auth_in="cookie")
    with pytest.raises(DialectError, match=r"supports: header"):
        load_dialect("apex", auth_in="query")


@pytest.fixture
def temp_module(tmp_path, monkeypatch):
    """Write a module into a directory on sys.path; return a function that names it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created = []

    def write(source: str) -> str:
        name = f"tmp_dialect_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(source)
        created.append(name)
        return name

    yield write
    for name in created:
        sys.modules.pop(name, None)


def test_module_colon_class_loads_a_dialect_written_elsewhere(temp_module):
    name = temp_module(
        "from MessagingLibrary.dialects import Dialect\n"
        "class Mine(Dialect):\n"
        "    name = 'mine'\n"
        "    auth_placements = ('query', 'header')\n"
    )
    dialect = load_dialect(f"{name}:Mine")
    assert dialect.name == "mine" and dialect.auth_in == "query"
    assert dialect.connect_args("ws://h/ws", "t0k").url == "ws://h/ws?token=t0k"


def test_a_class_that_is_not_a_dialect_is_refused(temp_module):
    name = temp_module("class NotOne:\n    pass\n")
    with pytest.raises(DialectError, match=r"is not a dialect: 'NotOne' must subclass"):
        load_dialect(f"{name}:NotOne")
    with pytest.raises(DialectError, match=r"has no 'Missing'"):
        load_dialect(f"{name}:Missing")


def test_an_import_error_is_named(temp_module):
    name = temp_module("import no_such_module_anywhere\n")
    with pytest.raises(DialectError, match=r"importing '.*' failed: ModuleNotFoundError.*no_such_module_anywhere"):
        load_dialect(f"{name}:Whatever")
    with pytest.raises(DialectError, match=r"importing 'not_a_module_xyz' failed"):
        load_dialect("not_a_module_xyz:Dialect")


# --------------------------------------------------------------------------- apex


def test_the_apex_codec_is_the_identity():
    dialect = ApexDialect()
    codec = dialect.codec("user")
    assert codec.identity is True
    frame = {"type": "user_message", "message_id": "m1", "content": "hi"}
    assert codec.encode(frame) is frame
    assert codec.classify(frame) is frame
    assert codec.reply_to_client({"type": "keepalive", "what": "heartbeat"}) is None
    assert run(codec.open(object(), 1.0)) == []
    args = dialect.connect_args("ws://h:1/ws", "tok")
    assert args.headers == {"Authorization": "Bearer tok"} and args.subprotocols is None
    assert dialect.connect_args("ws://h:1/ws", None).headers == {}


# --------------------------------------------------------------------------- netra: connect and encode


def test_netra_connect_args_in_each_placement():
    assert NetraDialect.auth_placements[0] == "subprotocol" and NetraDialect.token_kind == "jwt"
    sub = NetraDialect().connect_args("ws://h/ws", "a.b.c")
    assert sub.subprotocols == ["jwt.a.b.c"] and sub.headers == {} and sub.url == "ws://h/ws"
    header = NetraDialect("header").connect_args("ws://h/ws", "a.b.c")
    assert header.headers == {"Authorization": "Bearer a.b.c"} and header.subprotocols is None
    query = NetraDialect("query").connect_args("ws://h/ws?x=1", "a.b.c")
    assert query.url == "ws://h/ws?x=1&token=a.b.c"
    assert NetraDialect().connect_args("ws://h/ws", None).subprotocols is None
    assert "netra" in NetraDialect().describe()


def codec_with_thread(thread: str = "thread-u-1", user: str = "user-a") -> tuple[NetraDialect, NetraCodec]:
    dialect = NetraDialect()
    codec = dialect.codec(user)
    assert isinstance(codec, NetraCodec)
    codec.user.thread = thread
    return dialect, codec


def test_encode_user_message():
    _, codec = codec_with_thread()
    wire = codec.encode(
        {
            "type": "user_message",
            "message_id": "m1",
            "content": "hello",
            "sequence_id": 3,
            "priority": "high",
            "target_agents": ["a"],
            "shared_state_key": "k",
            "end_of_conversation": True,
            "request_id": "r9",
        }
    )
    assert wire["type"] == "user_message" and wire["request_id"] == "r9"
    payload = wire["payload"]
    assert payload["content"] == "hello" and payload["thread_id"] == "thread-u-1" and payload["run_id"] == "m1"
    assert payload["client_environment"] is None
    assert payload["timestamp"].endswith("+00:00") and "T" in payload["timestamp"]
    for key, value in {"message_id": "m1", "sequence_id": 3, "priority": "high", "target_agents": ["a"],
                       "shared_state_key": "k", "end_of_conversation": True}.items():
        assert payload[key] == value
    assert "request_id" not in payload
    # Absent EXT fields stay absent.
    bare = codec.encode({"type": "user_message", "message_id": "m2", "content": "x"})["payload"]
    assert "sequence_id" not in bare and "priority" not in bare and "request_id" not in codec.encode(
        {"type": "user_message", "message_id": "m3"}
    )


@pytest.mark.parametrize("op", sorted(OPERATIONS - {"user_message"}))
def test_encode_every_other_operation_as_an_apex_frame(op):
    _, codec = codec_with_thread()
    frame = {"type": op, "request_id": f"r-{op}", "a": 1, "b": [2]}
    wire = codec.encode(frame)
    assert wire == {"type": f"apex.{op}", "payload": {"a": 1, "b": [2]}, "request_id": f"r-{op}"}
    no_request = codec.encode({"type": op, "x": None})
    assert no_request == {"type": f"apex.{op}", "payload": {"x": None}}


def test_encode_leaves_a_frame_that_is_no_operation_alone():
    _, codec = codec_with_thread()
    frame = {"type": "something_else", "x": 1}
    assert codec.encode(frame) is frame


def test_later_connections_of_a_user_send_the_first_thread():
    dialect, first = codec_with_thread("thread-first")
    second = dialect.codec("user-a")
    assert second.encode({"type": "user_message", "message_id": "m1"})["payload"]["thread_id"] == "thread-first"
    other = dialect.codec("user-b")
    assert other.encode({"type": "user_message", "message_id": "m2"})["payload"]["thread_id"] is None
    assert dialect.codec(None).user is not dialect.codec(None).user


# --------------------------------------------------------------------------- netra: classify


def golden_path(run_id: str, thread: str, **completed_data):
    base = {"run_id": run_id, "thread_id": thread, "user_id": "u", "agent_name": "apex_mock_agent", "timestamp": "t"}
    return [
        {"type": "agent_started", **base, "data": {"status": "started", "message": "Processing"}},
        {"type": "agent_thinking", **base, "data": {"reasoning": "…", "step_number": 1, "progress_percentage": 50}},
        {"type": "tool_executing", **base, "tool_name": "apex_lookup", "data": {"parameters": {}}},
        {"type": "tool_completed", **base, "tool_name": "apex_lookup", "status": "success", "results": {},
         "data": {"result": {}, "execution_time_ms": 1}},
        {"type": "agent_completed", **base, "result": "Response to: hi", "data": {"execution_time_ms": 1, **completed_data}},
    ]


def test_the_golden_path_with_message_id_echo():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1", "content": "hi", "sequence_id": 4})
    data = {"message_id": "m1", "sequence_id": 4, "priority": "normal", "contributing_agents": [],
            "processed_at_ns": 123}
    out = [codec.classify(f) for f in golden_path("m1", "th", **data)]
    assert [o["type"] for o in out] == ["agent_progress"] * 4 + ["ai_response"]
    assert [o["event"] for o in out[:4]] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    assert all(o["message_id"] == "m1" and o["run_id"] == "m1" and o["thread_id"] == "th" for o in out)
    assert out[2]["tool_name"] == "apex_lookup" and "tool_name" not in out[0]
    answer = out[4]
    assert answer == {"type": "ai_response", "message_id": "m1", "content": "Response to: hi", "sequence_id": 4,
                      "priority": "normal", "contributing_agents": [], "processed_at_ns": 123,
                      "run_id": "m1", "thread_id": "th"}
    assert codec.correlation == "message_id echo"
    assert codec.user.unanswered["th"] == {}


def test_fields_the_server_does_not_send_stay_absent():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    answer = codec.classify({"type": "agent_completed", "run_id": "m1", "thread_id": "th", "response": "r"})
    assert answer["content"] == "r" and answer["message_id"] == "m1"
    for key in ("sequence_id", "priority", "contributing_agents", "delivery_id", "redelivered", "request_id"):
        assert key not in answer
    final = codec.classify({"type": "agent_completed", "run_id": "m1", "thread_id": "th", "final_response": "f"})
    assert final["content"] == "f"


def test_an_offline_delivery_and_a_request_id():
    _, codec = codec_with_thread("th")
    answer = codec.classify({"type": "agent_completed", "run_id": "m9", "thread_id": "th", "result": "x",
                             "request_id": "r1",
                             "data": {"message_id": "m9", "delivery_id": "dlv-1", "queued_at": 5, "redelivered": True}})
    assert answer["delivery_id"] == "dlv-1" and answer["queued_at"] == 5 and answer["redelivered"] is True
    assert answer["request_id"] == "r1" and answer["message_id"] == "m9"


def test_correlation_by_run_id():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    codec.encode({"type": "user_message", "message_id": "m2"})
    out = [codec.classify(f) for f in golden_path("m2", "th") + golden_path("m1", "th")]
    assert [o["message_id"] for o in out] == ["m2"] * 5 + ["m1"] * 5
    assert codec.correlation == "run_id"
    assert codec.user.unanswered["th"] == {}
    # A duplicate final still names the message it answers (the checks see a double answer).
    again = codec.classify(golden_path("m1", "th")[-1])
    assert again["type"] == "ai_response" and again["message_id"] == "m1"


def test_correlation_by_thread_oldest_unanswered_first():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    codec.encode({"type": "user_message", "message_id": "m2"})
    out = [codec.classify(f) for f in golden_path("server-run-1", "th") + golden_path("server-run-2", "th")]
    assert [o["message_id"] for o in out] == ["m1"] * 5 + ["m2"] * 5
    assert codec.correlation == "thread_id"
    # Nothing unanswered: a duplicate final names the message last answered on the thread.
    assert codec.classify(golden_path("server-run-2", "th")[-1])["message_id"] == "m2"


def test_thread_correlation_when_the_server_names_its_own_thread():
    dialect = NetraDialect()
    codec = dialect.codec("u")  # version A: no handshake, no thread
    codec.encode({"type": "user_message", "message_id": "m1"})
    answer = codec.classify({"type": "agent_completed", "run_id": "r", "thread_id": "server-thread", "result": "x"})
    assert answer["message_id"] == "m1" and codec.correlation == "thread_id"


def test_correlation_mixed_is_reported():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    codec.encode({"type": "user_message", "message_id": "m2"})
    codec.classify({"type": "agent_completed", "run_id": "m1", "thread_id": "th", "result": "x"})
    codec.classify({"type": "agent_completed", "run_id": "x", "thread_id": "th", "result": "x",
                    "data": {"message_id": "m2"}})
    assert codec.correlation == "mixed: message_id echo, run_id"


def test_a_repeated_message_id_is_two_unanswered_copies():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    codec.encode({"type": "user_message", "message_id": "m1"})
    assert codec.user.unanswered["th"] == {"m1": 2}
    codec.classify({"type": "agent_completed", "run_id": "s1", "thread_id": "th", "result": "a"})
    assert codec.user.unanswered["th"] == {"m1": 1}
    assert codec.classify({"type": "agent_completed", "run_id": "s2", "thread_id": "th", "result": "b"})["message_id"] == "m1"
    assert codec.user.unanswered["th"] == {}


@pytest.mark.parametrize("envelope", ["system_message", "agent_progress", "agent_response_complete"])
def test_each_envelope_is_unwrapped(envelope):
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    started = codec.classify({"type": envelope, "data": {"event": "agent_started", "run_id": "m1", "thread_id": "th"}})
    assert started == {"type": "agent_progress", "event": "agent_started", "message_id": "m1", "run_id": "m1",
                       "thread_id": "th"}
    tool = codec.classify({"type": envelope, "run_id": "m1",
                           "data": {"event": "tool_executing", "tool": "t1", "thread_id": "th"}})
    assert tool["tool_name"] == "t1" and tool["run_id"] == "m1"
    done = codec.classify({"type": envelope, "data": {"event": "agent_completed", "run_id": "m1", "thread_id": "th",
                                                      "result": "ok", "data": {"sequence_id": 1}}})
    assert done["type"] == "ai_response" and done["content"] == "ok" and done["message_id"] == "m1"
    assert done["sequence_id"] == 1
    failed = codec.classify({"type": envelope, "data": {"event": "agent_error", "run_id": "m1",
                                                        "error_message": "boom"}})
    assert failed["type"] == "error" and failed["code"] == "agent_error" and failed["message"] == "boom"


def test_fields_under_payload_are_read():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    progress = codec.classify({"type": "agent_thinking", "payload": {"run_id": "m1", "thread_id": "th"}})
    assert progress["message_id"] == "m1" and progress["run_id"] == "m1" and progress["event"] == "agent_thinking"
    answer = codec.classify({"type": "agent_completed",
                             "payload": {"run_id": "m1", "thread_id": "th", "result": "r", "data": {"priority": "low"}}})
    assert answer["type"] == "ai_response" and answer["content"] == "r" and answer["priority"] == "low"


def test_agent_error_is_a_final_error():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    out = codec.classify({"type": "agent_error", "run_id": "m1", "thread_id": "th", "data": {"error_message": "no"}})
    assert out["type"] == "error" and out["code"] == "agent_error" and out["message"] == "no"
    assert out["message_id"] == "m1"
    assert codec.user.unanswered["th"] == {}


def test_an_answer_chunk_is_the_canonical_answer_chunk_with_its_text():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    wire = {"type": "agent_response_chunk", "run_id": "m1", "thread_id": "th", "data": {"chunk": "Resp", "chunk_index": 0}}
    chunk = codec.classify(wire)
    assert chunk == {"type": "agent_progress", "event": "answer_chunk", "message_id": "m1", "run_id": "m1",
                     "thread_id": "th", "text": "Resp", "index": 0}


def test_an_unknown_event_with_a_run_is_progress_and_without_is_unclassified():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    thought = codec.classify({"type": "agent_reflecting", "run_id": "m1", "thread_id": "th"})
    assert thought["type"] == "agent_progress" and thought["event"] == "agent_reflecting" and thought["message_id"] == "m1"
    assert codec.classify({"type": "whatever", "x": 1}) == {"type": "unclassified", "wire_type": "whatever"}
    assert codec.classify({"type": "agent_progress", "data": {"no": "event"}})["type"] == "unclassified"


@pytest.mark.parametrize(
    ("error_code", "code"),
    [("JSON_PARSE_ERROR", "bad_json"), ("BAD_JSON", "bad_json"), ("AUTH_FAILED", "auth"),
     ("BAD_FIELD", "bad_field"), ("MISSING_FIELD", "missing_field"), ("TOO_LARGE", "too_large"),
     ("json_parse_error", "json_parse_error")],
)
def test_error_message_codes(error_code, code):
    _, codec = codec_with_thread()
    out = codec.classify({"type": "error_message", "error_code": error_code, "error_message": "why", "timestamp": "t",
                          "recovery_suggestions": []})
    assert out == {"type": "error", "code": code, "message": "why"}


def test_error_message_details_and_ids():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1", "content": 5})
    out = codec.classify({"type": "error_message", "error_code": "BAD_FIELD", "error_message": "content",
                          "details": {"message_id": "m1", "field": "content"}, "run_id": "m1", "request_id": "r1"})
    assert out == {"type": "error", "code": "bad_field", "message": "content", "message_id": "m1", "field": "content",
                   "request_id": "r1", "run_id": "m1"}
    assert codec.user.unanswered["th"] == {}
    # Only a run_id: the message is found through it.
    codec.encode({"type": "user_message", "message_id": "m2"})
    by_run = codec.classify({"type": "error_message", "error_code": "TOO_LARGE", "error_message": "x",
                             "details": {"limit": 1}, "run_id": "m2"})
    assert by_run["message_id"] == "m2" and by_run["limit"] == 1


def test_a_plain_error():
    _, codec = codec_with_thread()
    assert codec.classify({"type": "error", "message": "oops"}) == {"type": "error", "code": "error", "message": "oops"}


def test_apex_extension_frames():
    _, codec = codec_with_thread("th")
    state = codec.classify({"type": "apex.agent_state", "data": {"message_count": 2}, "request_id": "r1", "timestamp": "t"})
    assert state == {"type": "agent_state", "message_count": 2, "request_id": "r1"}
    started = codec.classify({"type": "apex.session_started",
                              "data": {"user_id": "u", "resumed": False, "queued": 0, "server_time_ns": 1}})
    assert started == {"type": "session_started", "user_id": "u", "resumed": False, "queued": 0, "server_time_ns": 1}
    codec.encode({"type": "user_message", "message_id": "m1"})
    refused = codec.classify({"type": "apex.duplicate_rejected", "run_id": "m1", "thread_id": "th",
                              "data": {"message_id": "m1", "sequence_id": 1, "original_sequence_id": 0}})
    assert refused == {"type": "duplicate_rejected", "message_id": "m1", "sequence_id": 1, "original_sequence_id": 0,
                       "run_id": "m1", "thread_id": "th"}
    assert codec.user.unanswered["th"] == {}
    throughput = codec.classify({"type": "apex.throughput_response", "data": {"message_id": "t1", "sequence_id": 1}})
    assert throughput == {"type": "throughput_response", "message_id": "t1", "sequence_id": 1}


def test_keepalives_and_the_answers_they_need():
    _, codec = codec_with_thread()
    for what in ("heartbeat", "pong", "heartbeat_ack", "ping"):
        assert codec.classify({"type": what, "data": {"connection_id": "c"}}) == {"type": "keepalive", "what": what}
    beat = codec.reply_to_client(codec.classify({"type": "heartbeat"}))
    assert beat["type"] == "heartbeat_ack" and beat["timestamp"].endswith("+00:00")
    assert codec.reply_to_client(codec.classify({"type": "ping"}))["type"] == "pong"
    assert codec.reply_to_client(codec.classify({"type": "pong"})) is None
    assert codec.reply_to_client({"type": "ai_response"}) is None


def test_greeting_and_handshake_frames():
    _, codec = codec_with_thread()
    hello = codec.classify({"type": "connection_established", "data": {"connection_id": "conn-1", "user_id": "u1"}})
    assert hello == {"type": "connection_established", "user_id": "u1", "connection_id": "conn-1"}
    shake = codec.classify({"type": "handshake_response", "thread_id": "t", "session_token": "secret"})
    assert shake == {"type": "handshake", "step": "response", "thread_id": "t"}
    assert codec.classify({"type": "handshake_complete", "thread_id": "t"})["step"] == "complete"


def test_an_ack_of_a_pending_operation_means_unsupported():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "get_agent_state", "request_id": "r1"})
    codec.encode({"type": "get_agent_state", "request_id": "r2"})
    codec.encode({"type": "push", "request_id": "p1", "to_user": "x"})
    ack = {"type": "ack", "received_type": "apex.get_agent_state", "status": "acknowledged"}
    first = codec.classify(ack)
    assert first == {"type": "error", "code": "unsupported", "request_id": "r1",
                     "message": "the server answered 'apex.get_agent_state' with 'ack': it has no such operation "
                                "(dialect netra)"}
    assert codec.classify(ack)["request_id"] == "r2"
    assert codec.classify(ack) == {"type": "unclassified", "wire_type": "ack", "received_type": "apex.get_agent_state"}
    # A reply settles its request: a later ack of that op finds nothing pending.
    codec.classify({"type": "apex.push_result", "data": {"status": "queued"}, "request_id": "p1"})
    assert codec.classify({"type": "ack", "received_type": "apex.push"})["type"] == "unclassified"


def test_an_ack_of_a_chat_or_throughput_message_means_unsupported():
    _, codec = codec_with_thread("th")
    codec.encode({"type": "user_message", "message_id": "m1"})
    out = codec.classify({"type": "ack", "received_type": "user_message"})
    assert out["code"] == "unsupported" and out["message_id"] == "m1" and "'user_message'" in out["message"]
    assert codec.user.unanswered["th"] == {}
    codec.encode({"type": "throughput_test", "message_id": "t1"})
    codec.encode({"type": "throughput_test", "message_id": "t2"})
    codec.classify({"type": "apex.throughput_response", "data": {"message_id": "t1"}})
    out = codec.classify({"type": "ack", "received_type": "apex.throughput_test"})
    assert out["code"] == "unsupported" and out["message_id"] == "t2"
    # Our own keep-alive answer acknowledged by the server: nothing was waiting on it.
    assert codec.classify({"type": "ack", "received_type": "heartbeat_ack"}) == {
        "type": "keepalive", "what": "ack", "received_type": "heartbeat_ack"}
    assert codec.classify({"type": "ack", "received_type": "no_such"})["type"] == "unclassified"


# --------------------------------------------------------------------------- netra: the handshake (fake connection)


class FakeWS:
    """Serves ``frames`` to ``recv`` (an exception is raised), then blocks; records ``send``."""

    def __init__(self, frames, on_send=None):
        self.incoming: asyncio.Queue = asyncio.Queue()
        for frame in frames:
            self.push(frame)
        self.sent: list[dict] = []
        self.on_send = on_send

    def push(self, frame):
        self.incoming.put_nowait(frame if isinstance(frame, BaseException) else orjson.dumps(frame).decode())

    async def recv(self):
        item = await self.incoming.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def send(self, data):
        frame = orjson.loads(data)
        self.sent.append(frame)
        if self.on_send is not None:
            self.on_send(self, frame)


def closed(code: int, reason: str = "") -> ConnectionClosed:
    return ConnectionClosed(Close(code, reason), None)


HELLO = {"type": "connection_established", "data": {"connection_id": "conn-1", "user_id": "u1"}, "timestamp": "t"}
SHAKE = {"type": "handshake_response", "thread_id": "thread-u1-1", "run_id": "run-hs-1", "request_id": "hs-1",
         "session_token": "s", "message": "Handshake required", "timestamp": "t"}


def complete_on_ack(ws, frame):
    if frame["type"] == "handshake_acknowledged":
        ws.push({"type": "handshake_complete", "thread_id": frame["thread_id"], "timestamp": "t"})


def test_the_version_b_handshake():
    async def go():
        dialect = NetraDialect()
        codec = dialect.codec("u1")
        ws = FakeWS([HELLO, SHAKE], on_send=complete_on_ack)
        frames = await codec.open(ws, 2.0)
        return dialect, codec, ws, frames

    dialect, codec, ws, frames = run(go())
    assert [f["type"] for f in frames] == ["connection_established", "handshake_response", "handshake_complete"]
    assert len(ws.sent) == 1
    ack = ws.sent[0]
    assert ack["type"] == "handshake_acknowledged" and ack["thread_id"] == "thread-u1-1"
    assert ack["timestamp"].endswith("+00:00")
    assert codec.user.thread == "thread-u1-1"
    # A second connection acknowledges its own handshake thread but chats on the user's first one.

    async def again():
        second = dialect.codec("u1")
        ws2 = FakeWS([HELLO, dict(SHAKE, thread_id="thread-u1-2")], on_send=complete_on_ack)
        await second.open(ws2, 2.0)
        return second, ws2

    second, ws2 = run(again())
    assert ws2.sent[0]["thread_id"] == "thread-u1-2"
    assert second.encode({"type": "user_message", "message_id": "m"})["payload"]["thread_id"] == "thread-u1-1"


def test_the_handshake_without_a_greeting_and_with_keepalives_answered_once():
    async def go():
        codec = NetraDialect().codec("u1")
        ws = FakeWS([{"type": "heartbeat", "data": {}}, SHAKE, {"type": "ping"}], on_send=complete_on_ack)
        frames = await codec.open(ws, 2.0)
        return codec, ws, frames

    codec, ws, frames = run(go())
    assert [f["type"] for f in ws.sent] == ["heartbeat_ack", "handshake_acknowledged", "pong"]
    assert [f["type"] for f in frames] == ["heartbeat", "handshake_response", "ping", "handshake_complete"]
    # The session replays these frames through classify and reply_to_client: no second answer.
    replies = [codec.reply_to_client(codec.classify(f)) for f in frames]
    assert replies == [None, None, None, None]
    assert codec.reply_to_client(codec.classify({"type": "heartbeat"}))["type"] == "heartbeat_ack"


def test_version_a_hallmarks_skip_the_handshake():
    greeting = {"type": "connection_established",
                "data": {"connection_id": "c", "user_id": "u", "mode": "factory", "features": {}}}
    codec = NetraDialect().codec("u1")
    frames = run(codec.open(FakeWS([greeting]), 5.0))
    assert frames == [greeting] and codec.user.thread is None


def test_version_a_without_hallmarks_proceeds_when_no_handshake_follows():
    codec = NetraDialect().codec("u1")
    frames = run(codec.open(FakeWS([HELLO]), 0.2))
    assert frames == [HELLO] and codec.user.thread is None


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([closed(1008)], r"code 1008: authentication refused: check the JWT / APEX_JWT_SECRET"),
        ([closed(1003)], r"code 1003: no acceptable subprotocol: try APEX_AUTH_IN=header"),
        ([closed(1011, "not ready")], r"code 1011 \(reason 'not ready'\)"),
        ([{"type": "error_message", "error_code": "AUTH_FAILED", "error_message": "bad signature"}],
         r"error_message AUTH_FAILED: bad signature \(authentication refused"),
        ([{"type": "error", "message": "nope"}], r"error: nope"),
        ([HELLO, {"type": "handshake_response", "run_id": "r"}], r"handshake_response has no thread_id"),
        ([], r"no handshake_response within 0.2 s \(nothing arrived\)"),
        ([{"type": "session_started", "user_id": "u"}],
         r"no handshake_response within 0.2 s \(received: session_started; is the server speaking the apex protocol"),
        ([SHAKE], r"no handshake_complete within 0.2 s"),
    ],
)
def test_open_failures_say_why(frames, reason):
    codec = NetraDialect().codec("u1")
    with pytest.raises(SessionOpenError, match=reason):
        run(codec.open(FakeWS(frames), 0.2))


def test_open_failure_reasons_never_carry_the_token():
    token = "eyJhbGciOi.secret-token-value.sig"
    codec = NetraDialect().codec(token)
    frame = {"type": "error_message", "error_code": "AUTH_FAILED", "error_message": f"bad token {token}"}
    with pytest.raises(SessionOpenError) as caught:
        run(codec.open(FakeWS([frame]), 0.5))
    assert token not in str(caught.value) and "<token>" in str(caught.value)


def test_a_close_after_an_auth_error_names_both():
    codec = NetraDialect().codec("u1")
    frames = [HELLO, closed(1008, "auth")]
    with pytest.raises(SessionOpenError, match=r"code 1008.*APEX_JWT_SECRET"):
        run(codec.open(FakeWS(frames), 0.5))


def test_classify_is_cheap():
    """Not a timing assertion: the hot path allocates one dict and takes no detours."""
    _, codec = codec_with_thread("th")
    frame = {"type": "apex.throughput_response", "data": {"message_id": "t", "sequence_id": 1}, "timestamp": "t"}
    assert codec.classify(frame)["type"] == "throughput_response"
    assert isinstance(codec, Codec) and isinstance(codec.dialect, Dialect)


# --------------------------------------------------------------------------- netra: the real mock


def mint(user: str, secret: str = DEV_SECRET, **claims) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600, **claims}, secret, algorithm="HS256")


@pytest.mark.parametrize("placement", ["subprotocol", "header", "query"])
def test_a_chat_round_trip_against_apex_mock_netra(placement):
    apex_mock = pytest.importorskip("apex_mock")
    from websockets.asyncio.client import connect

    async def go():
        server = apex_mock.MockServer(dialect="netra", jwt_secret=DEV_SECRET)
        port = await server.start()
        try:
            dialect = NetraDialect(placement)
            token = mint(f"user-{placement}")
            args = dialect.connect_args(f"ws://127.0.0.1:{port}/ws", token)
            async with connect(args.url, additional_headers=args.headers, subprotocols=args.subprotocols,
                               open_timeout=5, proxy=None) as ws:
                if placement == "subprotocol":
                    assert ws.subprotocol == f"jwt.{token}"
                codec = dialect.codec(token)
                early = await codec.open(ws, 5.0)
                canonical = [codec.classify(f) for f in early]
                await ws.send(orjson.dumps(codec.encode(
                    {"type": "user_message", "message_id": "m1", "content": "hi", "sequence_id": 1})).decode())
                while not any(f["type"] == "ai_response" for f in canonical):
                    canonical.append(codec.classify(orjson.loads(await asyncio.wait_for(ws.recv(), 5))))
                # A query the mock answers, and one removed nowhere: both through apex.<op>.
                await ws.send(orjson.dumps(codec.encode({"type": "get_agent_state", "request_id": "r1"})).decode())
                while canonical[-1].get("request_id") != "r1":
                    canonical.append(codec.classify(orjson.loads(await asyncio.wait_for(ws.recv(), 5))))
                return codec, canonical
        finally:
            await server.stop()

    codec, canonical = run(go(), 20)
    kinds = [f["type"] for f in canonical]
    assert kinds[:3] == ["connection_established", "handshake", "handshake"]
    assert "session_started" in kinds
    answer = next(f for f in canonical if f["type"] == "ai_response")
    assert answer["message_id"] == "m1" and answer["content"] == "Response to: hi" and answer["sequence_id"] == 1
    progress = [f for f in canonical if f["type"] == "agent_progress"]
    assert [f["event"] for f in progress] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    assert all(f["message_id"] == "m1" for f in progress)
    assert canonical[-1]["type"] == "agent_state" and canonical[-1]["message_count"] == 1
    assert codec.correlation == "message_id echo"


def test_a_bad_jwt_against_apex_mock_netra_is_refused_clearly():
    apex_mock = pytest.importorskip("apex_mock")
    from websockets.asyncio.client import connect

    async def go():
        server = apex_mock.MockServer(dialect="netra", jwt_secret=DEV_SECRET)
        port = await server.start()
        try:
            dialect = NetraDialect("header")
            token = mint("user-x", secret="another-secret-entirely-and-long-enough-for-hs256")
            args = dialect.connect_args(f"ws://127.0.0.1:{port}/ws", token)
            async with connect(args.url, additional_headers=args.headers, open_timeout=5, proxy=None) as ws:
                with pytest.raises(SessionOpenError) as caught:
                    await dialect.codec(token).open(ws, 5.0)
                return str(caught.value), token
        finally:
            await server.stop()

    reason, token = run(go(), 20)
    assert "AUTH_FAILED" in reason and "APEX_JWT_SECRET" in reason and token not in reason


def test_a_server_without_an_operation_makes_it_unsupported():
    apex_mock = pytest.importorskip("apex_mock")
    from websockets.asyncio.client import connect

    async def go():
        server = apex_mock.MockServer(dialect="netra", jwt_secret=DEV_SECRET, without=["configure_agents"])
        port = await server.start()
        try:
            dialect = NetraDialect()
            token = mint("user-w")
            args = dialect.connect_args(f"ws://127.0.0.1:{port}/ws", token)
            async with connect(args.url, subprotocols=args.subprotocols, open_timeout=5, proxy=None) as ws:
                codec = dialect.codec(token)
                await codec.open(ws, 5.0)
                await ws.send(orjson.dumps(codec.encode({"type": "configure_agents", "agents": ["a"], "request_id": "r1"})).decode())
                while True:
                    frame = codec.classify(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
                    if frame.get("request_id") == "r1":
                        return frame
        finally:
            await server.stop()

    frame = run(go(), 20)
    assert frame["type"] == "error" and frame["code"] == "unsupported" and "apex.configure_agents" in frame["message"]
