"""The netra dialect of the mock (``apex-mock --dialect netra``): a per-connection codec at the edge.

The core (``core.py``, ``offline.py``, ``faults.py``) and the rest of ``server.py`` keep
speaking the apex protocol. This module translates at the edge of each connection, so every
fault mode, ``--without``, the limits and the offline queue work unchanged in this dialect:

* **Connect**: the token is a JWT (HS256, :class:`NetraDialect` holds the secret), taken from a
  subprotocol (``jwt.<token>``, ``jwt-auth.<token>``, ``bearer.<token>``, ``jwt.<env>.<token>``,
  ``staging-auth.<token>``; the one used is echoed), else ``Authorization: Bearer <token>``,
  else a query parameter (``token``, ``jwt``, ``auth_token``, ``access_token``). The upgrade is
  always accepted; a missing or bad token gets ``error_message AUTH_FAILED`` and close 1008,
  subprotocols offered of which none is a token form get close 1003. The user id is the JWT's
  ``sub`` (the core keys the user by ``user_id_for_token(sub)``; the codec maps user ids both
  ways); a ``permissions`` claim containing ``"admin"`` makes an admin connection.
* **Open**: ``connection_established`` and ``handshake_response`` at once; after the client's
  ``handshake_acknowledged`` (same ``thread_id``) and ``handshake_delay_ms``,
  ``handshake_complete``, then the core's session start (``apex.session_started`` and the
  offline deliveries). Frames other than ``handshake_acknowledged``/``ping``/``heartbeat`` that
  arrive before ``handshake_complete`` are lost, counted (``apex.server_stats`` data
  ``lost_before_handshake``) and logged, as on the real server.
* **Inbound** (:meth:`NetraCodec.on_frame`): ``user_message`` (and its aliases, and
  ``start_agent``) -> apex ``user_message``; ``apex.<op>`` -> the apex operation;
  ``ping``/``heartbeat`` answered at once; anything else (and an ``apex.<op>`` removed with
  ``--without``) answered ``ack``. The apex frame goes straight to the server's
  ``_dispatch_frame``.
* **Outbound** (:meth:`NetraCodec.outgoing` at ``Conn.send`` time, :meth:`NetraDialect.run_sender`
  at write time): a live ``ai_response`` becomes the platform's five golden-path events, an
  offline one ``agent_completed`` only; with agent streams on (docs/protocol.md §4.9) each
  ``agent_progress`` becomes the platform's flat event (``answer_chunk``: ``agent_response_chunk``)
  and the streamed final ``agent_completed`` only; ``error`` becomes ``error_message``, every
  other apex frame ``apex.<type>``. Replies that the server may re-route (live ``ai_response`` and
  ``throughput_response``) stay apex bytes in the outbox, so re-routing and the offline queue see
  apex frames, and are translated when written; everything else is translated when sent (it
  needs the inbound frame's run and thread).
* **Keep-alive**: ``heartbeat`` after ``heartbeat_s`` with nothing written on the connection.

docs/protocol.md §13 is the reference.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jwt
import orjson
from websockets.exceptions import ConnectionClosed

from .core import error_frame, is_scalar, user_id_for_token

if TYPE_CHECKING:  # pragma: no cover
    from websockets.asyncio.server import ServerConnection

    from .server import Conn, MockServer

#: The secret used when neither ``--jwt-secret`` nor ``APEX_JWT_SECRET`` is given. Public: it
#: is for local development and the built-in mock only, never for a real server.
DEV_JWT_SECRET = "apex-acceptance-development-secret"
JWT_SECRET_ENV = "APEX_JWT_SECRET"
DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_HANDSHAKE_DELAY_MS = 20.0
DICT_PAYLOAD_BYTES = 256  # as server.DICT_PAYLOAD_BYTES: what a dict in an outbox counts
#: Runs (message_id -> run_id, thread_id) remembered per user, for the events of later replies
#: (an offline delivery may come much later); the oldest is forgotten first.
MAX_RUNS_PER_USER = 20_000

CLOSE_UNSUPPORTED_DATA = 1003  # offered subprotocols, none acceptable
CLOSE_POLICY = 1008  # authentication, handshake
SUBPROTOCOL_PREFIXES = ("jwt-auth.", "bearer.", "staging-auth.", "jwt.")
QUERY_TOKEN_NAMES = ("token", "jwt", "auth_token", "access_token")
CHAT_TYPES = frozenset({"user_message", "message", "chat_message", "user_input", "start_agent"})
#: Client operations reachable as ``apex.<op>`` (every apex operation except user_message).
EXT_OPERATIONS = frozenset(
    {
        "throughput_test",
        "get_agent_state",
        "get_queue_state",
        "get_all_agent_states",
        "get_server_stats",
        "configure_agents",
        "latency_probe",
        "configure_session",
        "push",
        "ack",
    }
)
#: Chat fields copied from a netra payload into the apex user_message (when present).
CHAT_FIELDS = ("content", "sequence_id", "priority", "target_agents", "shared_state_key", "end_of_conversation")
#: Fields of apex frames that hold a user id (mapped to the JWT sub on the way out).
USER_ID_FIELDS = ("user_id", "to_user", "from_user")
OPEN_BEFORE_HANDSHAKE = frozenset({"handshake_acknowledged", "ping", "heartbeat"})
DEFAULT_AGENT = "apex_mock_agent"
TOOL_NAME = "apex_lookup"
RESPONSE_PREFIX = "Response to: "
#: Error codes of apex that have their own netra name (the rest are upper-cased).
ERROR_CODES = {"invalid_json": "JSON_PARSE_ERROR"}

log = logging.getLogger("apex_mock")

AWAIT_ACK, COMPLETING, OPEN, CLOSING = range(4)


def _event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, "%s", orjson.dumps({"event": event, **fields}, default=repr).decode())


def iso_now() -> str:
    """UTC ISO 8601 with microseconds: ``2026-12-02T18:00:00.123456+00:00``."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def resolve_jwt_secret(secret: str | None) -> tuple[str, str]:
    """(secret, where it came from: ``--jwt-secret`` / ``APEX_JWT_SECRET`` / ``development default``)."""
    if secret:
        return secret, "--jwt-secret"
    env = os.environ.get(JWT_SECRET_ENV, "").strip()
    if env:
        return env, JWT_SECRET_ENV
    return DEV_JWT_SECRET, "development default"


def token_from_subprotocol(subprotocol: str) -> str | None:
    """The token in one offered subprotocol, or None if it is not one of the token forms."""
    for prefix in SUBPROTOCOL_PREFIXES:
        if subprotocol.startswith(prefix):
            rest = subprotocol[len(prefix):]
            if not rest:
                return None
            if prefix == "jwt.":
                parts = rest.split(".")
                if len(parts) > 3:  # jwt.<env>.<token>: the first part is the environment
                    rest = ".".join(parts[1:])
            return rest
    return None


def offered_subprotocols(headers: Any) -> list[str]:
    offered: list[str] = []
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        offered += [p.strip() for p in value.split(",") if p.strip()]
    return offered


class Auth:
    """The outcome of authenticating one upgrade request."""

    __slots__ = ("admin", "close_code", "problem", "sub", "where")

    def __init__(self, sub: str | None = None, admin: bool = False, where: str = "",
                 problem: str = "", close_code: int = 0):
        self.sub = sub
        self.admin = admin
        self.where = where  # subprotocol / header / query
        self.problem = problem  # never contains the token
        self.close_code = close_code


class _Close:
    """Outbox sentinel: close the connection with ``code`` once what is before it is written."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason


# --------------------------------------------------------------------------- server-wide part


class NetraDialect:
    """Server-wide state of the netra dialect: the JWT secret, timings, run memory, counters."""

    name = "netra"

    def __init__(self, server: MockServer, jwt_secret: str | None = None,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                 handshake_delay_ms: float = DEFAULT_HANDSHAKE_DELAY_MS):
        if not heartbeat_s > 0 or heartbeat_s == float("inf"):
            raise ValueError(f"invalid heartbeat_s: must be a finite number > 0: {heartbeat_s}")
        if not 0 <= handshake_delay_ms <= 60_000:
            raise ValueError(f"invalid handshake_delay_ms: must be in 0..60000: {handshake_delay_ms}")
        self.server = server
        self._secret, self.secret_source = resolve_jwt_secret(jwt_secret)
        self.heartbeat_s = float(heartbeat_s)
        self.handshake_delay_s = handshake_delay_ms / 1000.0
        self.lost_before_handshake = 0
        #: internal (core) user id -> the JWT sub it stands for
        self.subs: dict[str, str] = {}
        #: internal user id -> {message_id: (run_id, thread_id, admitted at, monotonic)}
        self.runs: dict[str, OrderedDict[str, tuple[Any, Any, float]]] = {}
        self._run_ids = itertools.count(1)

    def __repr__(self) -> str:  # never shows the secret
        return f"NetraDialect(secret from {self.secret_source}, heartbeat_s={self.heartbeat_s})"

    # ------------------------------------------------------------------ ids

    def internal_id(self, sub: str) -> str:
        internal = user_id_for_token(sub)
        self.subs.setdefault(internal, sub)
        return internal

    def sub_of(self, internal: Any) -> Any:
        return self.subs.get(internal, internal) if isinstance(internal, str) else internal

    def new_run_id(self) -> str:
        return f"run-{next(self._run_ids)}"

    def remember_run(self, internal: str, message_id: str, run_id: Any, thread_id: Any) -> None:
        runs = self.runs.get(internal)
        if runs is None:
            runs = self.runs[internal] = OrderedDict()
        elif message_id in runs:
            runs.move_to_end(message_id)
        runs[message_id] = (run_id, thread_id, time.monotonic())
        if len(runs) > MAX_RUNS_PER_USER:
            runs.popitem(last=False)

    def run_of(self, internal: str, message_id: Any) -> tuple[Any, Any, float] | None:
        runs = self.runs.get(internal)
        if runs is None or not isinstance(message_id, str):
            return None
        return runs.get(message_id)

    # ------------------------------------------------------------------ authentication

    def select_subprotocol(self, connection: Any, offered: Any) -> str | None:
        """Echo exactly the first offered subprotocol that carries a token (else none)."""
        for subprotocol in offered:
            if token_from_subprotocol(subprotocol) is not None:
                return subprotocol
        return None

    def authenticate(self, request: Any) -> Auth:
        """Find the token (subprotocol, header, query, in that order) and verify it."""
        headers = request.headers
        offered = offered_subprotocols(headers)
        token: str | None = None
        where = ""
        if offered:
            for subprotocol in offered:
                token = token_from_subprotocol(subprotocol)
                if token is not None:
                    where = "subprotocol"
                    break
            else:
                return Auth(problem="none of the offered subprotocols carries a token "
                                    "(jwt.<token>, jwt-auth.<token>, bearer.<token>, staging-auth.<token>)",
                            close_code=CLOSE_UNSUPPORTED_DATA)
        if token is None:
            values = headers.get_all("Authorization")
            if values:
                if len(values) > 1:
                    return Auth(problem="more than one Authorization header", close_code=CLOSE_POLICY)
                scheme, _, value = values[0].strip().partition(" ")
                if scheme.lower() != "bearer" or not value.strip():
                    return Auth(problem="malformed Authorization header: expected 'Bearer <token>'",
                                close_code=CLOSE_POLICY)
                token, where = value.strip(), "header"
        if token is None:
            query = request.path.partition("?")[2]
            if query:
                params = dict(parse_qsl(query, keep_blank_values=True))
                for name in QUERY_TOKEN_NAMES:
                    if params.get(name):
                        token, where = params[name], "query"
                        break
        if token is None:
            return Auth(problem="no token: send a JWT as subprotocol jwt.<token>, "
                                "'Authorization: Bearer <token>' or query parameter token",
                        close_code=CLOSE_POLICY)
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"],
                                options={"require": ["sub"], "verify_exp": True})
        except jwt.InvalidTokenError as exc:
            return Auth(problem=f"invalid token ({type(exc).__name__}: {exc})", where=where,
                        close_code=CLOSE_POLICY)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            return Auth(problem="invalid token: 'sub' must be a non-empty string", where=where,
                        close_code=CLOSE_POLICY)
        permissions = claims.get("permissions")
        admin = isinstance(permissions, (list, tuple)) and "admin" in permissions
        return Auth(sub=sub, admin=admin, where=where)

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        """Before the upgrade: any path is a WebSocket endpoint; ``slow_reconnect`` holds a
        returning user's upgrade. Authentication problems are answered after the upgrade."""
        from . import faults as F

        server = self.server
        if F.SLOW_RECONNECT in server.faults:
            auth = self.authenticate(request)
            if auth.sub is not None:
                user = server.users.get(user_id_for_token(auth.sub))
                if user is not None and user.ever_connected:
                    return server._slow_upgrade()
        return None

    async def accept(self, ws: ServerConnection, conn_factory: Any) -> Conn | None:
        """After the upgrade: authenticate, make the connection, start the handshake.
        None if the connection was refused (and closed)."""
        server = self.server
        auth = self.authenticate(ws.request)
        peer = str(ws.remote_address)
        if auth.close_code == CLOSE_UNSUPPORTED_DATA:
            _event("auth_refused", logging.WARNING, peer=peer, dialect="netra", close_code=1003,
                   reason=auth.problem)
            await ws.close(CLOSE_UNSUPPORTED_DATA, "no acceptable subprotocol")
            return None
        if auth.sub is None:
            _event("auth_refused", logging.WARNING, peer=peer, dialect="netra", where=auth.where,
                   reason=auth.problem)
            await self._refuse(ws, "AUTH_FAILED", f"authentication failed: {auth.problem}")
            return None
        internal = user_id_for_token(auth.sub)
        if server._user_refused(internal):
            _event("user_refused", logging.WARNING, peer=peer, known_users=len(server.users))
            await self._refuse(ws, "TOO_MANY_USERS", server._too_many_users())
            return None
        self.subs[internal] = auth.sub
        user = server._user(internal)
        conn = conn_factory(user, auth.admin)
        codec = NetraCodec(self, conn, auth.sub)
        conn.codec = codec
        server.connections += 1
        codec.start()
        return conn

    async def _refuse(self, ws: ServerConnection, code: str, message: str) -> None:
        frame = {"type": "error_message", "error_code": code, "error_message": message,
                 "details": {}, "timestamp": iso_now(), "recovery_suggestions": []}
        try:
            await ws.send(orjson.dumps(frame).decode())
            await ws.close(CLOSE_POLICY, code.lower())
        except ConnectionClosed:
            pass

    # ------------------------------------------------------------------ sender

    async def run_sender(self, conn: Conn) -> None:
        """The netra connection's single sender: translates re-routable replies and stamped
        dicts when written, writes pre-translated frames as they are, and closes on a _Close."""
        outbox, ws, codec = conn.outbox, conn.ws, conn.codec
        assert codec is not None
        while True:
            if not outbox:
                conn.wake.clear()
                await conn.wake.wait()
                continue
            payload, reroutable = outbox.popleft()
            if isinstance(payload, bytes):
                conn.outbox_bytes -= len(payload)
                frames = codec.translate_late(payload) if reroutable else payload.split(b"\n")
            elif isinstance(payload, dict):  # latency_response: stamp as late as possible
                conn.outbox_bytes -= DICT_PAYLOAD_BYTES
                payload["server_send_ns"] = time.monotonic_ns()
                frames = codec.translate(payload)
            else:  # _Close
                conn.outbox_bytes -= DICT_PAYLOAD_BYTES
                try:
                    await ws.close(payload.code, payload.reason)
                except ConnectionClosed:
                    pass
                return
            try:
                for data in frames:
                    await ws.send(data, text=True)
            except ConnectionClosed:
                outbox.appendleft((payload, reroutable))  # not written: let close re-route it
                conn.outbox_bytes += len(payload) if isinstance(payload, bytes) else DICT_PAYLOAD_BYTES
                return
            codec.last_sent = time.monotonic()


# --------------------------------------------------------------------------- per connection


class _Context:
    """The inbound frame being handled: replies sent meanwhile are about it."""

    __slots__ = ("message_id", "refused", "run_id", "thread_id")

    def __init__(self, message_id: Any = None, run_id: Any = None, thread_id: Any = None):
        self.message_id = message_id
        self.run_id = run_id
        self.thread_id = thread_id
        self.refused = False


class NetraCodec:
    """One netra connection: handshake state, translation both ways, heartbeat."""

    __slots__ = ("_handshake_timer", "_heartbeat_timer", "conn", "ctx", "dialect", "last_sent",
                 "state", "sub", "thread_id")

    def __init__(self, dialect: NetraDialect, conn: Conn, sub: str):
        self.dialect = dialect
        self.conn = conn
        self.sub = sub
        self.thread_id = f"thread-{sub}-{conn.conn_id}"
        self.state = AWAIT_ACK
        self.ctx: _Context | None = None
        self.last_sent = time.monotonic()
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._heartbeat_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        n = self.conn.conn_id
        ts = iso_now()
        self._put({"type": "connection_established",
                   "data": {"connection_id": f"conn-{n}", "user_id": self.sub}, "timestamp": ts})
        self._put({"type": "handshake_response", "thread_id": self.thread_id, "run_id": f"run-hs-{n}",
                   "request_id": f"hs-{n}", "session_token": secrets.token_urlsafe(16),
                   "message": "Handshake required", "timestamp": ts})
        self._heartbeat_timer = asyncio.get_running_loop().call_later(
            self.dialect.heartbeat_s, self._on_heartbeat_timer)

    def close(self) -> None:
        """The connection closed: stop the timers."""
        self.state = CLOSING
        for timer in (self._handshake_timer, self._heartbeat_timer):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._heartbeat_timer = None

    def _put(self, frame: dict) -> None:
        """Queue one frame already in the platform's form (not translated again)."""
        conn = self.conn
        data = orjson.dumps(frame)
        conn.outbox.append((data, False))
        conn.outbox_bytes += len(data)
        if conn.outbox_bytes > conn.max_outbox_bytes and not conn.overflowed:
            conn.overflowed = True
            if conn.on_overflow is not None:
                conn.on_overflow(conn)
        conn.wake.set()

    def _put_close(self, code: int, reason: str) -> None:
        conn = self.conn
        conn.outbox.append((_Close(code, reason), False))
        conn.outbox_bytes += DICT_PAYLOAD_BYTES
        conn.wake.set()

    def _on_heartbeat_timer(self) -> None:
        self._heartbeat_timer = None
        if self.state == CLOSING or not self.conn.open:
            return
        heartbeat_s = self.dialect.heartbeat_s
        idle = time.monotonic() - self.last_sent
        if idle >= heartbeat_s and not self.conn.outbox:
            ts = iso_now()
            self._put({"type": "heartbeat",
                       "data": {"connection_id": f"conn-{self.conn.conn_id}", "timestamp": ts},
                       "timestamp": ts})
            self.last_sent = time.monotonic()  # queued now; written at once
            idle = 0.0
        self._heartbeat_timer = asyncio.get_running_loop().call_later(
            max(0.001, heartbeat_s - idle), self._on_heartbeat_timer)

    def _on_handshake_acknowledged(self, frame: dict) -> None:
        if frame.get("thread_id") != self.thread_id:
            _event("handshake_failed", logging.WARNING, conn=self.conn.conn_id,
                   reason="handshake_acknowledged without the handshake's thread_id")
            self._put(self._error_message(
                "HANDSHAKE_FAILED",
                "handshake_acknowledged must carry the thread_id of handshake_response", {}, None))
            self._put_close(CLOSE_POLICY, "handshake failed")
            self.state = CLOSING
            return
        self.state = COMPLETING
        delay = self.dialect.handshake_delay_s
        self._handshake_timer = asyncio.get_running_loop().call_later(delay, self._complete_handshake)

    def _complete_handshake(self) -> None:
        self._handshake_timer = None
        if self.state != COMPLETING or not self.conn.open:
            return
        self._put({"type": "handshake_complete", "thread_id": self.thread_id, "timestamp": iso_now()})
        self.state = OPEN
        self.dialect.server._open_session(self.conn)

    # ------------------------------------------------------------------ inbound

    def on_frame(self, raw: Any, recv_ns: int) -> None:
        server = self.dialect.server
        conn = self.conn
        state = self.state
        frame: Any = None
        if isinstance(raw, str):
            try:
                frame = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                if state == OPEN:
                    server._error(conn, "invalid_json", f"frame is not valid JSON: {exc}")
                    return
        t = frame.get("type") if isinstance(frame, dict) else None
        if t == "ping":
            self._put({"type": "pong", "timestamp": iso_now()})
            return
        if t == "heartbeat":
            self._put({"type": "heartbeat_ack", "timestamp": iso_now()})
            return
        if state != OPEN:
            if t == "handshake_acknowledged":
                if state == AWAIT_ACK:
                    self._on_handshake_acknowledged(frame)
                return  # a repeated one while completing: nothing to do
            if state != CLOSING:
                self.dialect.lost_before_handshake += 1
                _event("lost_before_handshake", logging.WARNING, conn=conn.conn_id,
                       user=conn.user.core.user_id, type=str(t)[:64] if t is not None else None)
            return
        if not isinstance(raw, str):
            server._error(conn, "bad_json", "binary frames are not accepted: send UTF-8 JSON text")
            return
        if not isinstance(frame, dict):
            server._error(conn, "bad_json", "frame must be a JSON object")
            return
        if "request_id" in frame and not is_scalar(frame["request_id"]):
            frame.pop("request_id")
            server._error(conn, "bad_field", "field 'request_id' must be a JSON scalar", frame)
            return
        if t is None:
            server._error(conn, "missing_field", "missing required field 'type'", frame)
            return
        if not isinstance(t, str):
            server._error(conn, "bad_field", "field 'type' must be a string", frame)
            return
        if t in CHAT_TYPES:
            self._chat(t, frame, recv_ns)
            return
        if t.startswith("apex."):
            op = t[5:]
            if op in EXT_OPERATIONS and op not in server.without:
                self._ext(op, frame, recv_ns)
                return
        self._put({"type": "ack", "received_type": t, "status": "acknowledged", "timestamp": iso_now()})

    def _dispatch(self, op: str, apex: dict, recv_ns: int, ctx: _Context) -> None:
        server = self.dialect.server
        self.ctx = ctx
        try:
            server._dispatch_frame(self.conn, op, apex, recv_ns)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the connection, the user or the server
            _event("handler_error", logging.ERROR, conn=self.conn.conn_id, type=op, error=repr(exc))
            self.conn.send(orjson.dumps(error_frame("internal", f"internal error: {exc!r}", apex)))
        finally:
            self.ctx = None

    def _chat(self, t: str, frame: dict, recv_ns: int) -> None:
        payload = frame.get("payload")
        src = payload if isinstance(payload, dict) else frame
        apex: dict[str, Any] = {"type": "user_message"}
        message_id = src.get("message_id")
        if message_id is None:
            message_id = frame.get("message_id")
        if message_id is None:
            message_id = f"auto-{uuid.uuid4().hex}"  # never a duplicate
        apex["message_id"] = message_id
        if t == "start_agent":
            if "user_request" in src:
                apex["content"] = src["user_request"]
            fields = CHAT_FIELDS[1:]
        else:
            fields = CHAT_FIELDS
        for name in fields:
            if name in src:
                apex[name] = src[name]
        if "request_id" in frame:
            apex["request_id"] = frame["request_id"]
        elif "request_id" in src:
            if not is_scalar(src["request_id"]):
                self.dialect.server._error(self.conn, "bad_field", "field 'request_id' must be a JSON scalar", apex)
                return
            apex["request_id"] = src["request_id"]
        run_id = src.get("run_id") or frame.get("run_id")
        if not isinstance(run_id, str):
            run_id = self.dialect.new_run_id()
        thread_id = src.get("thread_id") or frame.get("thread_id")
        if not is_scalar(thread_id) or thread_id is None:
            thread_id = self.thread_id
        ctx = _Context(message_id, run_id, thread_id)
        self._dispatch("user_message", apex, recv_ns, ctx)
        if not ctx.refused and isinstance(message_id, str):
            self.dialect.remember_run(self.conn.user.core.user_id, message_id, run_id, thread_id)

    def _ext(self, op: str, frame: dict, recv_ns: int) -> None:
        payload = frame.get("payload")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            self.dialect.server._error(self.conn, "bad_field", "field 'payload' must be an object", frame)
            return
        apex = {**payload, "type": op}
        if "request_id" in frame:
            apex["request_id"] = frame["request_id"]
        elif "request_id" in apex and not is_scalar(apex["request_id"]):
            apex.pop("request_id")
            self.dialect.server._error(self.conn, "bad_field", "field 'request_id' must be a JSON scalar", apex)
            return
        field = "to_user" if op == "push" else "user_id" if op == "get_queue_state" else None
        if field is not None:
            value = apex.get(field)
            if isinstance(value, str) and value:
                apex[field] = self.dialect.internal_id(value)
        self._dispatch(op, apex, recv_ns, _Context())

    # ------------------------------------------------------------------ outbound

    def outgoing(self, payload: Any, reroutable: bool) -> Any:
        """``Conn.send``: translate now what is not re-routable (netra frames joined by a
        newline: orjson never writes one); keep re-routable replies and dicts apex."""
        if reroutable or not isinstance(payload, bytes):
            return payload
        return b"\n".join(self.translate(orjson.loads(payload)))

    def translate_late(self, payload: bytes) -> list[bytes]:
        return self.translate(orjson.loads(payload))

    def translate(self, frame: dict) -> list[bytes]:
        """One apex frame -> the netra frames it becomes."""
        t = frame.get("type")
        if t == "throughput_response":  # the hot path of a throughput run: one frame, built directly
            out: dict[str, Any] = {
                "type": "apex.throughput_response",
                "data": {"message_id": frame.get("message_id"), "sequence_id": frame.get("sequence_id")},
            }
            if "request_id" in frame:
                out["request_id"] = frame["request_id"]
            out["timestamp"] = iso_now()
            return [orjson.dumps(out)]
        if t == "ai_response":
            return self._agent_events(frame)
        if t == "agent_progress":
            return [orjson.dumps(self._stream_event(frame))]
        if t == "error":
            details = {k: v for k, v in frame.items() if k not in ("type", "code", "message", "request_id")}
            ctx = self.ctx
            run_id = ctx.run_id if ctx is not None else None
            if ctx is not None:
                ctx.refused = True
            code = str(frame.get("code", "internal"))
            return [orjson.dumps(self._error_message(
                ERROR_CODES.get(code, code.upper()), frame.get("message", ""), details, run_id,
                request=frame))]
        data = {k: (self.dialect.sub_of(v) if k in USER_ID_FIELDS else v)
                for k, v in frame.items() if k not in ("type", "request_id")}
        if t == "server_stats":
            data["lost_before_handshake"] = self.dialect.lost_before_handshake
        out = {"type": f"apex.{t}", "data": data}
        if "request_id" in frame:
            out["request_id"] = frame["request_id"]
        if t in ("duplicate_rejected", "queue_full"):
            ctx = self.ctx
            if ctx is not None:
                ctx.refused = True
                out["run_id"], out["thread_id"] = ctx.run_id, ctx.thread_id
            else:
                run = self.dialect.run_of(self.conn.user.core.user_id, frame.get("message_id"))
                out["run_id"], out["thread_id"] = (run[0], run[1]) if run else (None, self.thread_id)
        out["timestamp"] = iso_now()
        return [orjson.dumps(out)]

    def _error_message(self, code: str, message: str, details: dict, run_id: Any,
                       request: dict | None = None) -> dict:
        out: dict[str, Any] = {"type": "error_message", "error_code": code, "error_message": message,
                               "details": details}
        if request is not None and "request_id" in request:
            out["request_id"] = request["request_id"]
        if run_id is not None:
            out["run_id"] = run_id
        out["timestamp"] = iso_now()
        out["recovery_suggestions"] = []
        return out

    def _stream_event(self, frame: dict) -> dict:
        """One event of a streamed run (apex ``agent_progress``, docs/protocol.md §4.9) as the
        platform's flat event, shaped as :meth:`_agent_events` shapes the golden path's.

        The run, thread, agent and user are the ones the server put on the frame (the client's
        run_id and thread_id, and the run's owner, so a cross_talk copy on another user's
        connection names the run and the user it belongs to). No message_id, as on the platform:
        a client correlates progress by run_id. ``answer_chunk`` becomes ``agent_response_chunk``
        (the name the platform's test handler uses; the public platform streams no tokens)."""
        event = frame.get("event")
        ts = iso_now()
        out: dict[str, Any] = {"type": "agent_response_chunk" if event == "answer_chunk" else event,
                               "run_id": frame.get("run_id"), "thread_id": frame.get("thread_id") or self.thread_id,
                               "user_id": self.dialect.sub_of(frame["user_id"]) if "user_id" in frame else self.sub,
                               "agent_name": frame.get("agent") or DEFAULT_AGENT, "timestamp": ts}
        if event == "agent_started":
            out["data"] = {"status": "started", "message": "Processing your request"}
        elif event == "agent_thinking":
            out["data"] = {"reasoning": frame.get("text", ""), "step_number": frame.get("step"),
                           "progress_percentage": None}
        elif event == "tool_executing":
            out["tool_name"] = frame.get("tool_name")
            out["data"] = {"parameters": {}}
        elif event == "tool_completed":
            out["tool_name"] = frame.get("tool_name")
            out["status"] = frame.get("status", "success")
            out["results"] = {}
            out["data"] = {"result": {}, "execution_time_ms": 0}
        elif event == "answer_chunk":
            out["data"] = {"chunk": frame.get("text", ""), "chunk_index": frame.get("index")}
        return out

    def _agent_events(self, frame: dict) -> list[bytes]:
        message_id = frame.get("message_id")
        streamed = "events" in frame  # its progress events went out already: agent_completed only
        run = self.dialect.run_of(self.conn.user.core.user_id, message_id)
        if streamed:  # the run its events named (the client's, or the server's r-<n> if forgotten)
            run = (frame.get("run_id"), frame.get("thread_id") or self.thread_id,
                   run[2] if run is not None else time.monotonic())
        if run is not None:
            run_id, thread_id, admitted = run
            elapsed_ms = max(0, int((time.monotonic() - admitted) * 1000))
        else:  # forgotten (or a reply of another user's run): a run of its own
            run_id, thread_id, elapsed_ms = self.dialect.new_run_id(), self.thread_id, 0
        agents = frame.get("contributing_agents") or []
        first = agents[0] if agents else None
        agent_name = first.get("agent") if isinstance(first, dict) and first.get("agent") else DEFAULT_AGENT
        ts = iso_now()
        common = {"run_id": run_id, "thread_id": thread_id, "user_id": self.sub, "agent_name": agent_name,
                  "timestamp": ts}
        content = frame.get("content", "")
        data = {
            "execution_time_ms": elapsed_ms,
            "message_id": message_id,
            "sequence_id": frame.get("sequence_id"),
            "priority": frame.get("priority"),
            "contributing_agents": agents,
            "processed_at_ns": frame.get("processed_at_ns"),
        }
        completed: dict[str, Any] = {"type": "agent_completed", **common, "result": content, "data": data}
        if "request_id" in frame:
            completed["request_id"] = frame["request_id"]
        if "delivery_id" in frame:  # from the offline queue: only the final event
            data["delivery_id"] = frame["delivery_id"]
            data["queued_at"] = frame.get("queued_at")
            data["redelivered"] = frame.get("redelivered")
            return [orjson.dumps(completed)]
        if streamed:
            return [orjson.dumps(completed)]
        asked = content[len(RESPONSE_PREFIX):] if isinstance(content, str) and content.startswith(RESPONSE_PREFIX) else content
        query = asked[:60] if isinstance(asked, str) else asked
        found = {"message_id": message_id, "answer_chars": len(content) if isinstance(content, str) else 0}
        dumps = orjson.dumps
        return [
            dumps({"type": "agent_started", **common,
                   "data": {"status": "started", "message": "Processing your request"}}),
            dumps({"type": "agent_thinking", **common,
                   "data": {"reasoning": f"Looking up an answer to: {query}", "step_number": 1,
                            "progress_percentage": 50}}),
            dumps({"type": "tool_executing", **common, "tool_name": TOOL_NAME,
                   "data": {"parameters": {"query": query}}}),
            dumps({"type": "tool_completed", **common, "tool_name": TOOL_NAME, "status": "success",
                   "results": found, "data": {"result": found, "execution_time_ms": 0}}),
            dumps(completed),
        ]

