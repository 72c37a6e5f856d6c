"""The netra dialect: the real platform's wire protocol (Netra Apex), plus our EXT frames.

What the platform's public code shows, what is our extension, and the contract with
``apex-mock --dialect netra`` are in ``docs/protocol.md`` §13. In short:

- **Connect**: a JWT, as the subprotocol ``jwt.<token>`` (the platform's preference, the
  default), as ``Authorization: Bearer`` or as the query parameter ``token``.
- **Open** (version B, staging): ``connection_established``, then ``handshake_response``
  (``thread_id``) -> ``handshake_acknowledged`` -> ``handshake_complete``; only then may chat
  messages go out. Version A (no handshake) is tolerated.
- **Chat**: ``user_message {payload: {content, thread_id, run_id, ...}}`` with
  ``run_id`` = the canonical ``message_id``; the answer is a stream of agent events
  (``agent_started`` ... ``agent_completed``), read back as ``agent_progress`` frames and one
  ``ai_response``.
- **EXT**: every other canonical operation is ``apex.<op> {payload, request_id}``, answered
  ``apex.<reply> {data, request_id}``. A server without the operation answers
  ``ack {received_type}``, which becomes ``error unsupported`` for the waiting request.

Replies are matched to messages by ``data.message_id`` when the server echoes it, else by
``run_id``, else by the oldest unanswered message of the thread (:attr:`Codec.correlation`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, ClassVar

import orjson
from websockets.exceptions import ConnectionClosed

from .base import OPERATIONS, Codec, ConnectArgs, Dialect, DialectError, SessionOpenError, parse_frame, with_query

#: Canonical fields of a chat message sent inside ``payload`` as our EXT fields (when present).
EXT_MESSAGE_FIELDS = ("message_id", "sequence_id", "priority", "target_agents", "shared_state_key", "end_of_conversation")
#: EXT fields of ``agent_completed`` (under ``data``; also read from the top level).
EXT_ANSWER_FIELDS = (
    "sequence_id",
    "priority",
    "contributing_agents",
    "processed_at_ns",
    "delivery_id",
    "queued_at",
    "redelivered",
)
#: Legacy envelopes: ``{"type": <one of these>, "data": {"event": <event type>, ...}}``.
ENVELOPES = frozenset({"system_message", "agent_progress", "agent_response_complete"})
#: Progress events of a run (the golden path before ``agent_completed``).
PROGRESS_EVENTS = frozenset({"agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_response_chunk"})
#: Events that stream part of the answer -> the canonical progress event (``text``: the part).
#: ``agent_response_chunk`` is the name the platform's test handler uses (the public platform
#: streams no tokens; ``apex-mock --dialect netra`` sends it when a session asks for chunks).
CHUNK_EVENTS = {"agent_response_chunk": "answer_chunk", "answer_chunk": "answer_chunk"}
#: Chat message types of the platform (an ``ack`` naming one: the server did not take it as chat).
CHAT_TYPES = frozenset({"user_message", "message", "chat_message", "user_input", "start_agent"})
#: Our keep-alive answers: a server that acknowledges them (``ack``) says nothing to the checks.
KEEPALIVE_ANSWERS = frozenset({"heartbeat_ack", "pong"})
#: Platform error codes whose canonical (apex) name is not simply the lower-cased code.
ERROR_CODES = {"JSON_PARSE_ERROR": "bad_json", "BAD_JSON": "bad_json", "AUTH_FAILED": "auth"}
#: ``connection_established`` data fields only version A (no handshake) sends.
VERSION_A_HALLMARKS = ("mode", "features", "golden_path_events")
#: How long after ``connection_established`` a handshake_response may take before the server
#: is taken for version A (the platform sends it within 2 s).
VERSION_A_WAIT_S = 2.5
#: Bound on the run_id -> message_id map kept per user (oldest forgotten first).
MAX_RUNS = 100_000

ECHO, RUN, THREAD = "message_id echo", "run_id", "thread_id"
_EMPTY: dict[str, Any] = {}
_APEX_OPS = {op: "apex." + op for op in OPERATIONS if op != "user_message"}


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


_parse = parse_frame


class _User:
    """What the codecs of one test user share: the thread, the runs, the unanswered messages."""

    __slots__ = ("answered_last", "runs", "thread", "unanswered")

    def __init__(self) -> None:
        #: The first handshake's thread_id: every later chat message of the user goes to it.
        self.thread: str | None = None
        #: run_id -> message_id of the chat messages sent (run_id = message_id, but a server may
        #: map them): kept after the answer, so a duplicate answer still names its message.
        self.runs: dict[Any, str] = {}
        #: thread -> unanswered message_ids (oldest first) -> copies sent.
        self.unanswered: dict[Any, dict[str, int]] = {}
        #: thread -> the message last answered by thread correlation (for a duplicate final).
        self.answered_last: dict[Any, str] = {}

    def sent(self, message_id: str) -> None:
        runs = self.runs
        runs[message_id] = message_id
        if len(runs) > MAX_RUNS:
            del runs[next(iter(runs))]
        fifo = self.unanswered.setdefault(self.thread, {})
        fifo[message_id] = fifo.get(message_id, 0) + 1

    def fifo(self, thread: Any) -> dict[str, int] | None:
        fifo = self.unanswered.get(thread)
        if fifo is None and len(self.unanswered) == 1:
            # The server named a thread we never sent (version A makes its own): one is all we have.
            fifo = next(iter(self.unanswered.values()))
        return fifo

    def answered(self, message_id: str, thread: Any) -> None:
        """``message_id`` got its final outcome: it leaves its thread's FIFO (one copy)."""
        fifo = self.fifo(thread)
        if fifo is None or message_id not in fifo:
            fifo = next((f for f in self.unanswered.values() if message_id in f), None)
            if fifo is None:
                return
        left = fifo[message_id] - 1
        if left:
            fifo[message_id] = left
        else:
            del fifo[message_id]


class NetraCodec(Codec):
    """One netra connection's translator; the user's thread and runs are shared (``_User``)."""

    def __init__(self, dialect: Dialect, user: _User, user_key: str | None = None) -> None:
        super().__init__(dialect)
        self.user = user
        self._user_key = user_key  # only to keep it out of a failure's reason
        #: ids of keep-alive frames answered while opening (the session replays them: answer once).
        self._answered_ids: set[int] = set()
        #: op -> request_ids sent and not yet answered (oldest first), and request_id -> op.
        self._requests: dict[str, dict[Any, None]] = {}
        self._request_op: dict[Any, str] = {}
        #: throughput_test message_ids sent and not yet answered (oldest first) -> copies.
        self._throughput: dict[str, int] = {}
        self._modes: set[str] = set()
        self._last_mode: str | None = None
        self._dispatch = {
            "agent_completed": self._completed,
            "agent_error": self._agent_error,
            "agent_started": self._progress,
            "agent_thinking": self._progress,
            "tool_executing": self._progress,
            "tool_completed": self._progress,
            "agent_response_chunk": self._progress,
            "error_message": self._error_message,
            "error": self._plain_error,
            "ack": self._ack,
            "heartbeat": self._keepalive,
            "heartbeat_ack": self._keepalive,
            "pong": self._keepalive,
            "ping": self._keepalive,
            "connection_established": self._established,
            "handshake_response": self._handshake,
            "handshake_complete": self._handshake,
            "handshake_acknowledged": self._handshake,
        }

    # -- opening -----------------------------------------------------------------------------

    async def open(self, ws: Any, timeout: float) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        version_a_at: float | None = None  # set by connection_established: give up waiting then
        thread: str | None = None  # the handshake_response's thread, once acknowledged
        frames: list[Any] = []
        while True:
            greeted_only = version_a_at is not None and thread is None
            remaining = (version_a_at if greeted_only else deadline) - loop.time()  # type: ignore[operator]
            if remaining <= 0:
                if greeted_only:
                    return frames  # version A: a greeting and no handshake
                raise SessionOpenError(self._timed_out(timeout, thread, frames))
            try:
                raw = await asyncio.wait_for(ws.recv(), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                continue
            except ConnectionClosed as error:
                raise SessionOpenError(self._closed(error, frames)) from None
            frame = _parse(raw)
            frames.append(frame)
            kind = frame.get("type")
            if kind == "connection_established":
                data = frame.get("data")
                if isinstance(data, dict) and any(key in data for key in VERSION_A_HALLMARKS):
                    return frames
                if version_a_at is None and thread is None:
                    version_a_at = loop.time() + min(VERSION_A_WAIT_S, timeout)
            elif kind == "handshake_response":
                offered = frame.get("thread_id")
                if not isinstance(offered, str) or not offered:
                    raise SessionOpenError("the server's handshake_response has no thread_id (the netra handshake needs one)")
                thread = offered
                if self.user.thread is None:
                    self.user.thread = thread
                ack = {"type": "handshake_acknowledged", "thread_id": thread, "timestamp": _now_iso()}
                try:
                    await ws.send(orjson.dumps(ack).decode())
                except ConnectionClosed as error:
                    raise SessionOpenError(self._closed(error, frames)) from None
            elif kind == "handshake_complete":
                return frames
            elif kind == "error_message":
                raise SessionOpenError(self._refused(frame))
            elif kind == "error":
                raise SessionOpenError(self._scrub(f"the server answered error: {str(frame.get('message', ''))[:300]}"))
            elif kind == "ping" or kind == "heartbeat":
                canonical = self.classify(frame)
                answer = self.reply_to_client(canonical)
                self._answered_ids.add(id(frame))  # the session replays these frames: answer once
                if answer is not None:
                    try:
                        await ws.send(orjson.dumps(answer).decode())
                    except ConnectionClosed as error:
                        raise SessionOpenError(self._closed(error, frames)) from None

    def _timed_out(self, timeout: float, thread: str | None, frames: list[Any]) -> str:
        if thread is not None:
            return f"no handshake_complete within {timeout:g} s (handshake_acknowledged was sent)"
        seen = ", ".join(dict.fromkeys(str(f.get("type")) for f in frames))
        if not seen:
            return f"no handshake_response within {timeout:g} s (nothing arrived)"
        hint = "; is the server speaking the apex protocol? (APEX_DIALECT)" if "session_started" in seen else ""
        return f"no handshake_response within {timeout:g} s (received: {seen}{hint})"

    def _closed(self, error: ConnectionClosed, frames: list[Any]) -> str:
        close = error.rcvd
        code = close.code if close is not None else None
        reason = close.reason if close is not None else ""
        hint = {
            1008: ": authentication refused: check the JWT / APEX_JWT_SECRET",
            1003: ": no acceptable subprotocol: try APEX_AUTH_IN=header",
        }.get(code or 0, "")
        text = f"the server closed the connection with code {code}{hint}"
        if reason:
            text += f" (reason '{reason[:200]}')"
        refusal = next((f for f in frames if f.get("type") == "error_message"), None)
        if refusal is not None:
            text += f"; before that: {self._refused(refusal)}"
        return self._scrub(text)

    def _refused(self, frame: dict[str, Any]) -> str:
        code = frame.get("error_code")
        text = f"the server sent error_message {code}: {str(frame.get('error_message', ''))[:300]}"
        if code == "AUTH_FAILED":
            text += " (authentication refused: check the JWT / APEX_JWT_SECRET)"
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        """Never a token in a reason: the user key may be one."""
        key = self._user_key
        return text.replace(key, "<token>") if key and len(key) >= 8 else text

    # -- sending -----------------------------------------------------------------------------

    def encode(self, frame: dict[str, Any]) -> dict[str, Any]:
        kind = frame.get("type")
        if kind == "user_message":
            user = self.user
            message_id = frame.get("message_id")
            payload: dict[str, Any] = {
                "content": frame.get("content", ""),
                "thread_id": user.thread,
                "run_id": message_id if isinstance(message_id, str) else None,
                "timestamp": _now_iso(),
                "client_environment": None,
            }
            for key in EXT_MESSAGE_FIELDS:
                if key in frame:
                    payload[key] = frame[key]
            wire = {"type": "user_message", "payload": payload}
            if "request_id" in frame:
                wire["request_id"] = frame["request_id"]
            if isinstance(message_id, str):
                user.sent(message_id)
            return wire
        wire_type = _APEX_OPS.get(kind)  # type: ignore[arg-type]
        if wire_type is None:
            return frame  # not a canonical operation: sent as it is
        wire = {"type": wire_type, "payload": {k: v for k, v in frame.items() if k != "type" and k != "request_id"}}
        if "request_id" in frame:
            request_id = wire["request_id"] = frame["request_id"]
            if request_id is not None:
                self._requests.setdefault(kind, {})[request_id] = None  # type: ignore[index]
                self._request_op[request_id] = kind  # type: ignore[assignment]
        if kind == "throughput_test":
            message_id = frame.get("message_id")
            if isinstance(message_id, str):
                self._throughput[message_id] = self._throughput.get(message_id, 0) + 1
        return wire

    def reply_to_client(self, canonical: dict[str, Any]) -> dict[str, Any] | None:
        if canonical.get("type") != "keepalive" or canonical.get("answered"):
            return None
        what = canonical.get("what")
        if what == "heartbeat":
            return {"type": "heartbeat_ack", "timestamp": _now_iso()}
        if what == "ping":
            return {"type": "pong", "timestamp": _now_iso()}
        return None

    # -- reading -----------------------------------------------------------------------------

    def classify(self, wire: dict[str, Any]) -> dict[str, Any]:
        kind = wire.get("type")
        handler = self._dispatch.get(kind)  # type: ignore[arg-type]
        if handler is not None:
            return handler(wire, kind)
        if type(kind) is str:
            if kind.startswith("apex."):
                return self._apex(wire, kind)
            if kind in ENVELOPES:
                data = wire.get("data")
                if isinstance(data, dict) and isinstance(data.get("event"), str):
                    event = {k: v for k, v in wire.items() if k != "type" and k != "data"}
                    event.update(data)
                    event["type"] = inner = data["event"]
                    handler = self._dispatch.get(inner)
                    if handler is not None and (inner in PROGRESS_EVENTS or inner in ("agent_completed", "agent_error")):
                        return handler(event, inner)
                    if event.get("run_id") is not None:
                        return self._progress(event, inner)
                    return {"type": "unclassified", "wire_type": kind, "event": inner}
            if wire.get("run_id") is not None or _has_run(wire.get("payload")):
                return self._progress(wire, kind)  # an event type we do not know, with its run
        return {"type": "unclassified", "wire_type": kind}

    def _used(self, mode: str) -> None:
        if mode is not self._last_mode:
            self._last_mode = mode
            self._modes.add(mode)
            self.correlation = mode if len(self._modes) == 1 else "mixed: " + ", ".join(sorted(self._modes))

    def _correlate(self, event: dict[str, Any], data: dict[str, Any], final: bool, by_thread: bool = True) -> str | None:
        """The message_id ``event`` is about; a ``final`` outcome also settles it.

        Only final outcomes set :attr:`correlation` (how *answers* are matched): the platform's
        progress events carry no message_id even where the answer echoes it.
        """
        user = self.user
        message_id = data.get("message_id")
        if not isinstance(message_id, str):
            message_id = event.get("message_id")
        thread = event.get("thread_id")
        if isinstance(message_id, str):
            mode = ECHO
        else:
            run = event.get("run_id")
            message_id = user.runs.get(run) if run is not None else None
            if message_id is not None:
                mode = RUN
            elif not by_thread:
                return None
            else:
                mode = THREAD
                fifo = user.fifo(thread)
                if fifo:
                    message_id = next(iter(fifo))
                    if final:
                        user.answered(message_id, thread)
                        user.answered_last[thread] = message_id
                        self._used(mode)
                    return message_id
                # Nothing unanswered: a duplicate answer names the message last answered.
                message_id = user.answered_last.get(thread)
                if message_id is None and len(user.answered_last) == 1:
                    message_id = next(iter(user.answered_last.values()))
                if final and message_id is not None:
                    self._used(mode)
                return message_id
        if final:
            self._used(mode)
            if user.unanswered:
                user.answered(message_id, thread)
        return message_id

    @staticmethod
    def _flat(event: dict[str, Any]) -> dict[str, Any]:
        payload = event.get("payload")
        if isinstance(payload, dict):
            merged = dict(payload)
            merged.update((k, v) for k, v in event.items() if k != "payload")
            return merged
        return event

    def _completed(self, event: dict[str, Any], kind: str) -> dict[str, Any]:
        event = self._flat(event)
        data = event.get("data")
        if not isinstance(data, dict):
            data = _EMPTY
        content = event.get("result")
        if content is None:
            content = event.get("response")
            if content is None:
                content = event.get("final_response")
        out: dict[str, Any] = {"type": "ai_response", "message_id": self._correlate(event, data, True), "content": content}
        for key in EXT_ANSWER_FIELDS:
            if key in data:
                out[key] = data[key]
            elif key in event:
                out[key] = event[key]
        if "request_id" in event:
            out["request_id"] = event["request_id"]
        out["run_id"] = event.get("run_id")
        out["thread_id"] = event.get("thread_id")
        return out

    def _progress(self, event: dict[str, Any], kind: str) -> dict[str, Any]:
        event = self._flat(event)
        data = event.get("data")
        if not isinstance(data, dict):
            data = _EMPTY
        out = {
            "type": "agent_progress",
            "event": CHUNK_EVENTS.get(kind, kind),
            "message_id": self._correlate(event, data, False),
            "run_id": event.get("run_id"),
            "thread_id": event.get("thread_id"),
        }
        tool = event.get("tool_name", event.get("tool"))
        if tool is not None:
            out["tool_name"] = tool
        if kind in CHUNK_EVENTS:
            text = data.get("chunk", event.get("chunk"))
            if isinstance(text, str):
                out["text"] = text
            index = data.get("chunk_index", event.get("chunk_index"))
            if index is not None:
                out["index"] = index
        return out

    def _agent_error(self, event: dict[str, Any], kind: str) -> dict[str, Any]:
        event = self._flat(event)
        data = event.get("data")
        if not isinstance(data, dict):
            data = _EMPTY
        message = data.get("error_message", event.get("error_message"))
        return {
            "type": "error",
            "code": "agent_error",
            "message": message,
            "message_id": self._correlate(event, data, True),
            "run_id": event.get("run_id"),
            "thread_id": event.get("thread_id"),
        }

    def _error_message(self, wire: dict[str, Any], kind: str) -> dict[str, Any]:
        code = wire.get("error_code")
        details = wire.get("details")
        out: dict[str, Any] = dict(details) if isinstance(details, dict) else {}
        out["type"] = "error"
        out["code"] = ERROR_CODES.get(code) or (code.lower() if isinstance(code, str) else "error")  # type: ignore[arg-type]
        out["message"] = wire.get("error_message")
        if "request_id" in wire:
            out["request_id"] = request_id = wire["request_id"]
            self._answered_request(request_id)
        if "run_id" in wire:
            out["run_id"] = wire["run_id"]
        message_id = out.get("message_id")
        if isinstance(message_id, str) or wire.get("run_id") is not None:
            message_id = self._correlate(wire, out, True, by_thread=False)
            if message_id is not None:
                out["message_id"] = message_id
                if self._throughput:
                    self._answered_throughput(message_id)
        return out

    def _plain_error(self, wire: dict[str, Any], kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": "error", "message": wire.get("message")}
        if "request_id" in wire:
            out["request_id"] = wire["request_id"]
            self._answered_request(wire["request_id"])
        if isinstance(wire.get("message_id"), str):
            out["message_id"] = wire["message_id"]
        return out

    def _apex(self, wire: dict[str, Any], kind: str) -> dict[str, Any]:
        data = wire.get("data")
        out: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
        out["type"] = canonical = kind[5:]
        if "request_id" in wire:
            out["request_id"] = request_id = wire["request_id"]
            if self._request_op:
                self._answered_request(request_id)
        if "run_id" in wire:
            out["run_id"] = wire["run_id"]
        if "thread_id" in wire:
            out["thread_id"] = wire["thread_id"]
        if canonical == "throughput_response" or canonical == "queue_full" or canonical == "duplicate_rejected":
            message_id = out.get("message_id")
            if self._throughput and isinstance(message_id, str):
                self._answered_throughput(message_id)
            if canonical != "throughput_response":
                message_id = self._correlate(wire, out, True, by_thread=False)
                if message_id is not None:
                    out["message_id"] = message_id
        return out

    def _answered_request(self, request_id: Any) -> None:
        op = self._request_op.pop(request_id, None) if request_id is not None else None
        if op is not None:
            self._requests[op].pop(request_id, None)

    def _answered_throughput(self, message_id: str) -> None:
        left = self._throughput.get(message_id)
        if left is None:
            return
        if left > 1:
            self._throughput[message_id] = left - 1
        else:
            del self._throughput[message_id]

    def _ack(self, wire: dict[str, Any], kind: str) -> dict[str, Any]:
        received = wire.get("received_type")
        if isinstance(received, str):
            op = received[5:] if received.startswith("apex.") else None
            pending = self._requests.get(op) if op is not None else None
            if pending:
                request_id = next(iter(pending))
                self._answered_request(request_id)
                return _unsupported(received, request_id=request_id)
            if op == "throughput_test" and self._throughput:
                message_id = next(iter(self._throughput))
                self._answered_throughput(message_id)
                return _unsupported(received, message_id=message_id)
            if received in CHAT_TYPES:
                fifo = self.user.fifo(self.user.thread)
                if fifo:
                    message_id = next(iter(fifo))
                    self.user.answered(message_id, self.user.thread)
                    return _unsupported(received, message_id=message_id)
            if received in KEEPALIVE_ANSWERS:
                return {"type": "keepalive", "what": "ack", "received_type": received}
        return {"type": "unclassified", "wire_type": kind, "received_type": received}

    def _keepalive(self, wire: dict[str, Any], kind: str) -> dict[str, Any]:
        if self._answered_ids and id(wire) in self._answered_ids:
            self._answered_ids.discard(id(wire))
            return {"type": "keepalive", "what": kind, "answered": "while opening the session"}
        return {"type": "keepalive", "what": kind}

    def _established(self, wire: dict[str, Any], kind: str) -> dict[str, Any]:
        data = wire.get("data")
        if not isinstance(data, dict):
            data = _EMPTY
        return {"type": "connection_established", "user_id": data.get("user_id"), "connection_id": data.get("connection_id")}

    def _handshake(self, wire: dict[str, Any], kind: str) -> dict[str, Any]:
        return {"type": "handshake", "step": kind[len("handshake_"):], "thread_id": wire.get("thread_id")}


def _has_run(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("run_id") is not None


def _unsupported(received: str, *, request_id: Any = None, message_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "error",
        "code": "unsupported",
        "message": f"the server answered '{received}' with 'ack': it has no such operation (dialect netra)",
    }
    if request_id is not None:
        out["request_id"] = request_id
    if message_id is not None:
        out["message_id"] = message_id
    return out


class NetraDialect(Dialect):
    """The real platform's protocol: a JWT, the version-B handshake, agent event streams."""

    name: ClassVar[str] = "netra"
    auth_placements: ClassVar[tuple[str, ...]] = ("subprotocol", "header", "query")
    token_kind: ClassVar[str] = "jwt"
    description: ClassVar[str] = (
        "the Netra Apex platform's protocol (a JWT, the thread handshake, agent event streams; "
        "test control as apex.<op> extension frames)"
    )
    mock_dialect: ClassVar[str | None] = "netra"

    def __init__(self, auth_in: str | None = None) -> None:
        super().__init__(auth_in)
        self._users: dict[str, _User] = {}

    def connect_args(self, url: str, token: str | None) -> ConnectArgs:
        if token is None:
            return ConnectArgs(url)
        if self.auth_in == "subprotocol":
            return ConnectArgs(url, subprotocols=[f"jwt.{token}"])
        if self.auth_in == "header":
            return ConnectArgs(url, {"Authorization": f"Bearer {token}"})
        if self.auth_in == "query":
            return ConnectArgs(with_query(url, token=token))
        raise DialectError(f"Dialect 'netra' has no auth placement '{self.auth_in}'.")  # pragma: no cover

    def codec(self, user_key: str | None = None) -> Codec:
        if user_key is None:
            user = _User()
        else:
            user = self._users.get(user_key)
            if user is None:
                user = self._users[user_key] = _User()
        return NetraCodec(self, user, user_key)
