"""WebSocket transport of the Apex mock (websockets asyncio API).

Structure:

* ``_process_request`` -- HTTP before the upgrade: ``/health``, 404, 401 (and the
  ``slow_reconnect`` delay);
* ``_handler``        -- one per connection: announces and sends the user's offline
  deliveries, then reads frames and answers them synchronously (never awaits while
  handling a frame), so the reader never blocks; it yields to the loop every
  READER_YIELD_EVERY frames; on close, returns the connection's unacked offline
  deliveries to the queue;
* ``Conn.run_sender`` -- the single sender path of a connection: frames go out
  in the order they were produced;
* ``_worker``         -- one task per busy user: processes the user's inbound
  queue in admission order, ``processing_ms`` per user_message and
  ``throughput_processing_ms`` per throughput_test, on a schedule; a job that is
  already due is processed without an ``await`` (the lean throughput path), with a
  yield to the loop every WORKER_YIELD_EVERY such jobs;
* ``_start_run`` / ``_run_agent`` -- agent runs that stream events (agents.py, docs/protocol.md
  §4.9): with ``agent_stream`` on, a processed user_message starts a run (the worker first
  waits for one of the user's ``max_concurrent_runs`` slots) that sends ``agent_progress``
  events on its plan's schedule (``_deliver_event``: never re-routed, never queued offline),
  then its final ``ai_response`` through ``_emit_response`` like any reply;
* ``_deliver``        -- where a finished reply goes (origin connection, another
  open connection of the user, or the user's offline queue);
* ``_push`` / ``_arm_expiry`` -- admin push into a user's offline queue, and the
  per-user timer that keeps offline expiry continuous.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self

import orjson
import psutil
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from . import faults as F
from .agents import AGENT_NAME, AgentRuns, RunPlan, normalize_stream
from .core import (
    DEFAULT_LIMITS,
    TOKEN_RE,
    LimitCounters,
    Limits,
    ProtocolError,
    Settings,
    UserCore,
    check_sizes,
    clip,
    error_frame,
    is_scalar,
    reply,
    settings_problems,
    user_id_for_token,
    validate_push,
    validate_user_id,
)
from .netra import DEFAULT_HANDSHAKE_DELAY_MS, DEFAULT_HEARTBEAT_S, NetraCodec, NetraDialect
from .offline import DELIVERED, Outcome

#: Wire protocols the mock speaks (``--dialect``): apex (docs/protocol.md) or the platform's (§13).
DIALECTS = ("apex", "netra")
#: Operations the mock can be told to lack (``--without``): the test-control operations and
#: the state queries, none of which the public platform has (``--without all``: every one of them).
WITHOUT_CHOICES = frozenset({
    "push", "configure_session", "configure_agents",
    "get_agent_state", "get_all_agent_states", "get_queue_state", "get_server_stats", "latency_probe",
})
MAX_FRAME_BYTES = 2**20  # bigger frames close the connection with 1009
EXPIRY_TIMER_SLACK_S = 0.001  # fire the expiry timer just after the due time, never before
WORKER_YIELD_EVERY = 64  # due jobs a worker processes back to back before yielding to the loop
READER_YIELD_EVERY = 64  # frames a reader handles back to back before yielding (lets workers run)
WORKER_CATCH_UP_S = 0.05  # lateness a worker may make up by processing faster than scheduled
DICT_PAYLOAD_BYTES = 256  # what an outbox entry stamped at send time (latency_response) counts
WS_PATH = "/ws"
HEALTH_PATH = "/health"

log = logging.getLogger("apex_mock")
_BEARER_RE = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(\S*) *")
_PROCESS = psutil.Process()


def rss_bytes() -> int:
    return _PROCESS.memory_info().rss


def cpu_seconds() -> float:
    """User + system CPU time of the server process so far."""
    times = _PROCESS.cpu_times()
    return round(times.user + times.system, 3)


def _event(event: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, "%s", orjson.dumps({"event": event, **fields}, default=repr).decode(),
                exc_info=exc_info)


def parse_authorization(values: list[str]) -> tuple[str | None, str]:
    """Return (token, "") or (None, reason). Never includes the token in the reason."""
    if not values:
        return None, "missing Authorization header: expected 'Authorization: Bearer <token>'\n"
    if len(values) > 1:
        return None, "malformed Authorization header: more than one Authorization header\n"
    m = _BEARER_RE.fullmatch(values[0].strip())
    if m is None or not TOKEN_RE.fullmatch(m.group(1)):
        return None, (
            "malformed Authorization header: expected 'Bearer <token>' "
            "with a token matching [A-Za-z0-9._~-]{1,200}\n"
        )
    return m.group(1), ""


# --------------------------------------------------------------------------- connection


class Conn:
    """One open WebSocket. ``send`` never blocks; ``run_sender`` writes in order.

    The outbox is bounded by bytes (``max_outbox_bytes``): a client that does not read its
    output is cut off (``on_overflow``) instead of growing the server without bound.
    """

    __slots__ = ("codec", "conn_id", "frames", "is_admin", "max_outbox_bytes", "on_overflow", "open", "outbox",
                 "outbox_bytes", "overflowed", "peer", "user", "wake", "ws")

    def __init__(self, ws: ServerConnection, user: UserRuntime, conn_id: int, is_admin: bool,
                 max_outbox_bytes: int = DEFAULT_LIMITS.max_outbox_bytes,
                 on_overflow: Callable[[Conn], None] | None = None):
        #: the dialect's per-connection codec (netra.NetraCodec); None in the apex dialect
        self.codec: NetraCodec | None = None
        self.ws = ws
        self.user = user
        self.conn_id = conn_id
        self.is_admin = is_admin
        # (payload, reroutable): payload is bytes, or a dict stamped at send time
        self.outbox: deque[tuple[Any, bool]] = deque()
        self.wake = asyncio.Event()
        self.open = True
        self.peer = str(ws.remote_address)
        self.frames = 0  # inbound frames handled (the disconnect_every fault counts them)
        self.outbox_bytes = 0  # bytes in the outbox, not yet written
        self.max_outbox_bytes = max_outbox_bytes
        self.on_overflow = on_overflow
        self.overflowed = False

    @property
    def readable(self) -> bool:
        """The client can still read what is sent here: the close handshake has not begun.

        Between the client's close frame and the handler's clean-up the connection is still
        listed; a delivery written then dies unread (the client has closed), so it must
        not count as delivered.
        """
        return self.open and self.ws.state is State.OPEN

    def send(self, payload: Any, reroutable: bool = False) -> None:
        if self.codec is not None:  # netra: translated now, or when written (re-routable replies)
            payload = self.codec.outgoing(payload, reroutable)
        self.outbox.append((payload, reroutable))
        self.outbox_bytes += len(payload) if isinstance(payload, bytes) else DICT_PAYLOAD_BYTES
        if self.outbox_bytes > self.max_outbox_bytes and not self.overflowed:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow(self)
        self.wake.set()

    async def run_sender(self) -> None:
        outbox, ws = self.outbox, self.ws
        while True:
            if not outbox:
                self.wake.clear()
                await self.wake.wait()
                continue
            payload, reroutable = outbox.popleft()
            if isinstance(payload, dict):  # latency_response: stamp as late as possible
                self.outbox_bytes -= DICT_PAYLOAD_BYTES
                payload["server_send_ns"] = time.monotonic_ns()
                data = orjson.dumps(payload)
            else:
                self.outbox_bytes -= len(payload)
                data = payload
            try:
                await ws.send(data, text=True)
            except ConnectionClosed:
                outbox.appendleft((payload, reroutable))  # not written: let close re-route it
                self.outbox_bytes += len(data) if isinstance(payload, bytes) else DICT_PAYLOAD_BYTES
                return


class UserRuntime:
    """Server-side companions of a UserCore: connections, worker, fault timers."""

    __slots__ = (
        "connections",
        "core",
        "delayed",
        "delayed_task",
        "ever_connected",
        "expiry_due",
        "expiry_timer",
        "reorder_timer",
        "worker",
    )

    def __init__(self, core: UserCore):
        self.core = core
        self.connections: list[Conn] = []  # open ones, oldest first
        self.worker: asyncio.Task | None = None
        # `slow` fault: (due, data, origin, offline delivery?)
        self.delayed: deque[tuple[float, bytes, Conn | None, bool]] = deque()
        self.delayed_task: asyncio.Task | None = None
        self.reorder_timer: asyncio.TimerHandle | None = None
        self.ever_connected = False
        self.expiry_timer: asyncio.TimerHandle | None = None
        self.expiry_due: float | None = None  # offline-queue clock (monotonic) of expiry_timer

    def online(self) -> Conn | None:
        """The newest connection the client can still read (:attr:`Conn.readable`), or None."""
        for conn in reversed(self.connections):
            if conn.readable:
                return conn
        return None


# --------------------------------------------------------------------------- server


class MockServer:
    """The Apex mock. ``await start(host, port)`` then ``await stop()``."""

    def __init__(
        self,
        faults: Iterable[str] = (),
        *,
        processing_ms: int = 10,
        throughput_processing_ms: float = 0.0,
        queue_capacity: int = 500,
        duplicate_window_s: float = 300.0,
        offline_capacity: int = 100,
        overflow_policy: str = "drop_oldest",
        offline_ttl_s: float = 300.0,
        without: Iterable[str] = (),
        limits: Limits = DEFAULT_LIMITS,
        dialect: str = "apex",
        jwt_secret: str | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        handshake_delay_ms: float = DEFAULT_HANDSHAKE_DELAY_MS,
        agent_stream: dict | None = None,
    ):
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r} (known: {', '.join(DIALECTS)})")
        #: apex or netra; in netra every connection gets a NetraCodec (netra.py)
        self.dialect = dialect
        self._netra = (NetraDialect(self, jwt_secret, heartbeat_s, handshake_delay_ms)
                       if dialect == "netra" else None)
        self.faults = F.parse_faults(faults)
        #: What one user or client can make the server keep (``apex-mock --max-...``).
        self.limits = limits
        problems = limits.problems()
        if problems:
            raise ValueError(f"invalid MockServer limits: {problems}")
        #: How often each limit was reached (server_stats.limits), shared by every user.
        self.limit_counters = LimitCounters()
        #: Test-control operations this server pretends not to have (answered ``error
        #: unsupported``), to stand in for a production-like staging server.
        without = frozenset(without)
        self.without = WITHOUT_CHOICES | (without - {"all"}) if "all" in without else without
        unknown = sorted(self.without - WITHOUT_CHOICES)
        if unknown:
            raise ValueError(f"unknown operation(s) for 'without': {', '.join(unknown)} (known: {', '.join(sorted(WITHOUT_CHOICES))})")
        self.defaults = Settings(
            processing_ms=processing_ms,
            throughput_processing_ms=throughput_processing_ms,
            queue_capacity=queue_capacity,
            duplicate_window_s=duplicate_window_s,
            offline_capacity=offline_capacity,
            overflow_policy=overflow_policy,
            offline_ttl_s=offline_ttl_s,
            agent_stream=normalize_stream(agent_stream),
        )
        problems = settings_problems(self.defaults, limits)
        if problems:
            raise ValueError(f"invalid MockServer settings: {problems}")
        self.users: dict[str, UserRuntime] = {}
        self.connections = 0
        self.messages_total = 0
        self.frames_received = 0
        self._conn_ids = itertools.count(1)
        self._delivery_ids = itertools.count(1)
        # Server-wide faults (parameters resolved once).
        faults = self.faults
        #: throttle: seconds between completion slots (0 = off) and the next free slot (loop time)
        self._throttle_interval = 1 / faults.param(F.THROTTLE) if F.THROTTLE in faults else 0.0
        self._throttle_next = 0.0
        #: sticky_overload: engages a server-wide throttle at STICKY_RATE on the first queue_full
        self._sticky_pending = F.STICKY_OVERLOAD in faults
        #: leak: bytes kept per processed message (0 = off), and where they are kept forever
        self._leak_bytes = int(faults.param(F.LEAK)) if F.LEAK in faults else 0
        self._leaked: list[bytes] = []
        #: disconnect_every: inbound frames a connection lives (0 = off)
        self._disconnect_every = int(faults.param(F.DISCONNECT_EVERY)) if F.DISCONNECT_EVERY in faults else 0
        #: stop_reading: inbound frames a connection is read for (0 = off)
        self._stop_reading = int(faults.param(F.STOP_READING)) if F.STOP_READING in faults else 0
        #: degrade: produced responses before every later one is delayed (0 = off), and how many so far
        self._degrade_after = int(faults.param(F.DEGRADE)) if F.DEGRADE in faults else 0
        self._produced = 0
        #: Agent runs that stream events (agents.py), with the stream faults (and cross_talk's
        #: every N-th run) that their plans apply.
        self.runs = AgentRuns({name: faults.param(name) for name in (*F.STREAM_FAULTS, F.CROSS_TALK) if name in faults})
        self._server: Server | None = None
        self._started = time.monotonic()
        self.host = "127.0.0.1"
        self.port = 0
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await serve(
            self._handler,
            host,
            port,
            process_request=self._process_request,
            select_subprotocol=self._netra.select_subprotocol if self._netra is not None else None,
            compression=None,
            max_size=MAX_FRAME_BYTES,
            ping_interval=None,
            backlog=1024,  # many simultaneous connects must not overflow the accept queue
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        extra: dict[str, Any] = {}
        if self._netra is not None:
            extra = {"jwt_secret_from": self._netra.secret_source, "heartbeat_s": self._netra.heartbeat_s,
                     "handshake_delay_ms": self._netra.handshake_delay_s * 1000}
        _event("server_started", host=host, port=self.port, dialect=self.dialect, faults=self.faults.labels(),
               defaults=self.defaults.as_dict(), **extra)
        for name in sorted(self.faults):
            extra = {"value": self.faults.params[name]} if name in self.faults.params else {}
            _event("fault_active", fault=name, description=F.FAULTS[name].description, **extra)
        return self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{WS_PATH}"

    async def stop(self) -> None:
        for user in self.users.values():
            for timer in (user.reorder_timer, user.expiry_timer):
                if timer is not None:
                    timer.cancel()
            for task in (user.worker, user.delayed_task):
                if task is not None:
                    task.cancel()
        # Cancelled now, with the workers, so that no run starts or emits while the server closes.
        runs = self.runs.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        pending = [t for u in self.users.values() for t in (u.worker, u.delayed_task) if t] + runs
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        _event("server_stopped")

    async def __aenter__(self) -> Self:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ HTTP

    def _process_request(self, connection: ServerConnection, request: Any):
        path = request.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            return connection.respond(200, "ok")
        if self._netra is not None:  # any path; the token is checked after the upgrade
            return self._netra.process_request(connection, request)
        if path != WS_PATH:
            return connection.respond(404, "not found: the WebSocket endpoint is /ws\n")
        token, why = parse_authorization(request.headers.get_all("Authorization"))
        if token is None:
            _event("auth_refused", level=logging.WARNING, peer=str(connection.remote_address),
                   reason=why.strip())
            return connection.respond(401, why)
        if self._user_refused(user_id_for_token(token)):
            _event("user_refused", level=logging.WARNING, peer=str(connection.remote_address),
                   known_users=len(self.users))
            return connection.respond(503, self._too_many_users() + "\n")
        self._user(user_id_for_token(token))  # kept from now on: concurrent handshakes count it
        if F.SLOW_RECONNECT in self.faults:
            user = self.users.get(user_id_for_token(token))
            if user is not None and user.ever_connected:
                return self._slow_upgrade()  # websockets awaits a coroutine result
        return None

    async def _slow_upgrade(self) -> None:
        """``slow_reconnect``: hold a returning user's upgrade for SLOW_RECONNECT_S."""
        await asyncio.sleep(F.SLOW_RECONNECT_S)

    # ------------------------------------------------------------------ users

    def _new_core(self, user_id: str) -> UserCore:
        return UserCore(user_id, self.defaults, self.faults, rss=rss_bytes,
                        delivery_ids=self._next_delivery_id, limits=self.limits,
                        counters=self.limit_counters)

    def _next_delivery_id(self) -> str:
        return f"dlv-{next(self._delivery_ids)}"

    def _user_refused(self, user_id: str) -> bool:
        """A new user beyond ``max_users`` (counted): the server keeps every user it saw."""
        if user_id in self.users or len(self.users) < self.limits.max_users:
            return False
        self.limit_counters.users_refused += 1
        return True

    def _too_many_users(self) -> str:
        limit = self.limits.max_users
        return f"too many users: the server keeps {limit} users and knows {len(self.users)} (apex-mock --max-users)"

    def _user(self, user_id: str) -> UserRuntime:
        user = self.users.get(user_id)
        if user is None:
            user = UserRuntime(self._new_core(user_id))
            self.users[user_id] = user
        return user

    # ------------------------------------------------------------------ connection handler

    async def _handler(self, ws: ServerConnection) -> None:
        netra = self._netra
        if netra is not None:
            # netra: authenticated after the upgrade; the session opens when the codec's
            # handshake completes (NetraCodec._complete_handshake -> _open_session).
            conn = await netra.accept(ws, lambda user, admin: Conn(
                ws, user, next(self._conn_ids), admin, self.limits.max_outbox_bytes, self._on_outbox_overflow))
            if conn is None:
                return
            user = conn.user
            user_id = user.core.user_id
            sender = asyncio.create_task(netra.run_sender(conn))
        else:
            token, _ = parse_authorization(ws.request.headers.get_all("Authorization"))
            assert token is not None  # checked in _process_request
            user_id = user_id_for_token(token)
            user = self._user(user_id)
            conn = Conn(ws, user, next(self._conn_ids), token.startswith("admin-"),
                        self.limits.max_outbox_bytes, self._on_outbox_overflow)
            # Synchronous up to the sender task: nothing can be offered in between.
            self._open_session(conn)
            self.connections += 1
            sender = asyncio.create_task(conn.run_sender())
        disconnect_every = self._disconnect_every
        stop_reading = self._stop_reading
        try:
            async for raw in ws:
                recv_ns = time.monotonic_ns()
                self.frames_received += 1
                try:
                    self._on_frame(conn, raw, recv_ns)
                except Exception as exc:  # noqa: BLE001 - a bug must not kill the connection or server
                    _event("handler_error", logging.ERROR, True, conn=conn.conn_id, error=repr(exc))
                    conn.send(orjson.dumps(error_frame("internal", f"internal error: {exc!r}")))
                conn.frames += 1
                if disconnect_every and conn.frames % disconnect_every == 0:
                    # disconnect_every: TCP abort, no close frame; no later frame is handled.
                    _event("fault_disconnect", logging.WARNING, conn=conn.conn_id, user=user_id,
                           frames=conn.frames)
                    ws.transport.abort()
                    break
                if stop_reading and conn.frames >= stop_reading:
                    # stop_reading: read nothing more; websockets stops reading the socket once
                    # its queue is full, so the client's writes end up waiting (TCP backpressure).
                    _event("fault_stop_reading", logging.WARNING, conn=conn.conn_id, user=user_id, frames=conn.frames)
                    await ws.wait_closed()
                    break
                if conn.frames % READER_YIELD_EVERY == 0:
                    # Frames already buffered are read without suspending: give the workers
                    # (and senders) a turn, or a pipelined burst would fill the queue
                    # however fast it is processed.
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            conn.open = False
            if conn.codec is not None:
                conn.codec.close()
            if conn in user.connections:
                user.connections.remove(conn)
            self.connections -= 1
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001, S110 - closing anyway
                pass
            leftovers = [p for p, rr in conn.outbox if rr]
            conn.outbox.clear()
            # Offline deliveries this connection did not get acked wait again (redelivery).
            returned = user.core.offline.release(conn)
            other = user.online() if returned else None
            if other is not None:
                self._send_offline(user, other, user.core.offline.take_for_delivery(other))
            for data in leftovers:
                self._deliver(user, data, None)
            self._arm_expiry(user)
            _event("conn_close", conn=conn.conn_id, user=user_id, code=ws.close_code,
                   reason=ws.close_reason, rerouted=len(leftovers), offline_returned=len(returned))

    def _open_session(self, conn: Conn) -> None:
        """``session_started``, then the user's offline deliveries, then the connection takes
        replies. Synchronous: nothing can be offered in between. (netra: after the handshake.)"""
        user = conn.user
        user_id = user.core.user_id
        resumed = user.ever_connected
        user.ever_connected = True
        offline = user.core.offline.connect(conn)
        conn.send(
            orjson.dumps(
                {
                    "type": "session_started",
                    "user_id": user_id,
                    "resumed": resumed,
                    "queued": offline.queued,
                    "server_time_ns": time.time_ns(),
                }
            )
        )
        self._send_offline(user, conn, offline.frames, on_connect=True)
        user.connections.append(conn)
        self._arm_expiry(user)
        _event("conn_open", conn=conn.conn_id, user=user_id, peer=conn.peer, admin=conn.is_admin,
               resumed=resumed, offline_queued=offline.queued, offline_frames=len(offline.frames),
               dialect=self.dialect)

    # ------------------------------------------------------------------ frames

    def _on_frame(self, conn: Conn, raw: Any, recv_ns: int) -> None:
        if conn.codec is not None:  # netra: the codec translates and calls _dispatch_frame
            conn.codec.on_frame(raw, recv_ns)
            return
        if not isinstance(raw, str):
            self._error(conn, "bad_json", "binary frames are not accepted: send UTF-8 JSON text")
            return
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._error(conn, "bad_json", f"frame is not valid JSON: {exc}")
            return
        if not isinstance(frame, dict):
            self._error(conn, "bad_json", "frame must be a JSON object")
            return
        if "request_id" in frame and not is_scalar(frame["request_id"]):
            frame.pop("request_id")
            self._error(conn, "bad_field", "field 'request_id' must be a JSON scalar", frame)
            return
        t = frame.get("type")
        if t is None:
            self._error(conn, "missing_field", "missing required field 'type'", frame)
            return
        if not isinstance(t, str):
            self._error(conn, "bad_field", "field 'type' must be a string", frame)
            return

        try:
            self._dispatch_frame(conn, t, frame, recv_ns)
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the connection, the user or the server
            _event("handler_error", logging.ERROR, True, conn=conn.conn_id, type=t, error=repr(exc))
            conn.send(orjson.dumps(error_frame("internal", f"internal error: {exc!r}", frame)))

    def _dispatch_frame(self, conn: Conn, t: str, frame: dict, recv_ns: int) -> None:
        user = conn.user
        if t in self.without:
            self._error(conn, "unsupported", f"{t} is not supported by this server (started with --without {t})", frame)
            return
        if t == "get_queue_state" and frame.get("user_id") is not None:
            self._queue_state_of(conn, frame)
            return
        if t in UserCore.HANDLED_TYPES:
            replies, job = user.core.handle(frame, conn)
            if t == "configure_session" and user.worker is not None:
                self.runs.wake(user.core.user_id)  # a worker waiting for a run slot checks the new settings
            for r in replies:
                if r["type"] == "error":
                    _event("protocol_error", conn=conn.conn_id, code=r["code"], detail=r["message"])
                elif r["type"] == "queue_full" and self._sticky_pending:
                    self._engage_sticky_overload()
                conn.send(orjson.dumps(r))
            if job is not None:
                self._ensure_worker(user)
            return
        try:
            check_sizes(frame, self.limits)
        except ProtocolError as exc:
            return self._refuse(conn, exc, frame)
        handler = self._SERVER_TYPES.get(t)
        if handler is None:
            self._error(conn, "unknown_type", f"unknown type {clip(t)}", frame)
            return
        handler(self, conn, frame, recv_ns)

    def _on_outbox_overflow(self, conn: Conn) -> None:
        """``max_outbox_bytes``: the client does not read; cut it off (TCP abort, as no close
        frame could get through). Its undelivered replies are re-routed as on any close."""
        self.limit_counters.outbox_closed += 1
        _event("outbox_overflow", logging.WARNING, conn=conn.conn_id, user=conn.user.core.user_id,
               outbox_bytes=conn.outbox_bytes, outbox_frames=len(conn.outbox),
               limit=self.limits.max_outbox_bytes)
        conn.ws.transport.abort()

    def _engage_sticky_overload(self) -> None:
        """``sticky_overload``: from the first queue_full on, the server never recovers its rate."""
        self._sticky_pending = False
        interval = 1 / F.STICKY_RATE
        self._throttle_interval = max(self._throttle_interval, interval)
        _event("fault_sticky_overload", logging.WARNING, rate=F.STICKY_RATE)

    def _refuse(self, conn: Conn, exc: ProtocolError, frame: dict) -> None:
        if exc.code == "too_large":
            self.limit_counters.oversized_refused += 1
        _event("protocol_error", conn=conn.conn_id, code=exc.code, detail=exc.message)
        conn.send(orjson.dumps(exc.frame(frame)))

    def _error(self, conn: Conn, code: str, message: str, frame: dict | None = None) -> None:
        _event("protocol_error", conn=conn.conn_id, code=code, detail=message)
        conn.send(orjson.dumps(error_frame(code, message, frame)))

    def _latency_probe(self, conn: Conn, frame: dict, recv_ns: int) -> None:
        if frame.get("probe_id") is None:
            return self._error(conn, "missing_field", "missing required field 'probe_id'", frame)
        if not is_scalar(frame["probe_id"]):
            return self._error(conn, "bad_field", "field 'probe_id' must be a JSON scalar", frame)
        cns = frame.get("client_send_ns")
        if cns is None:
            return self._error(conn, "missing_field", "missing required field 'client_send_ns'", frame)
        if not isinstance(cns, int) or isinstance(cns, bool):
            return self._error(conn, "bad_field", "field 'client_send_ns' must be an integer", frame)
        # server_*_ns: time.monotonic_ns() (CLOCK_MONOTONIC); server_send_ns stamped by the sender.
        conn.send(
            reply(
                "latency_response",
                frame,
                probe_id=frame["probe_id"],
                client_send_ns=cns,
                server_receive_ns=recv_ns,
                server_send_ns=None,
            )
        )

    def _server_stats(self, conn: Conn, frame: dict, recv_ns: int) -> None:
        conn.send(
            orjson.dumps(
                reply(
                    "server_stats",
                    frame,
                    connections=self.connections,
                    users=sum(1 for u in self.users.values() if u.connections),
                    known_users=len(self.users),
                    messages_total=self.messages_total,
                    frames_received=self.frames_received,
                    rss_bytes=rss_bytes(),
                    uptime_s=round(time.monotonic() - self._started, 3),
                    queue_depth=sum(u.core.waiting for u in self.users.values()),
                    offline_held=sum(u.core.offline_held() for u in self.users.values()),
                    faults=self.faults.labels(),
                    cpu_seconds=cpu_seconds(),
                    processed_total=sum(u.core.processed_total for u in self.users.values()),
                    limits=self.limit_counters.as_dict(),
                    limit_settings=self.limits.as_dict(),
                    agent_runs=self.runs.stats(),
                )
            )
        )

    def _queue_state_of(self, conn: Conn, frame: dict) -> None:
        """get_queue_state with ``user_id``: an admin may read any user's queue state."""
        try:
            user_id = validate_user_id(frame, "user_id")
        except ProtocolError as exc:
            return self._error(conn, exc.code, exc.message, frame)
        if user_id == conn.user.core.user_id:
            core = conn.user.core
        elif not conn.is_admin:
            return self._error(
                conn, "forbidden", "get_queue_state for another user_id needs an admin token", frame
            )
        else:
            known = self.users.get(user_id)
            # A user never seen has the defaults and nothing held; reading does not create it.
            core = known.core if known is not None else self._new_core(user_id)
        conn.send(orjson.dumps(core.queue_state(frame)))
        return None

    def _push(self, conn: Conn, frame: dict, recv_ns: int) -> None:
        if not conn.is_admin:
            return self._error(conn, "forbidden", "push needs an admin token", frame)
        try:
            push = validate_push(frame)
        except ProtocolError as exc:
            return self._error(conn, exc.code, exc.message, frame)
        if self._user_refused(push.to_user):
            return self._error(conn, "too_many_users", self._too_many_users(), frame)
        target = self._user(push.to_user)  # created lazily
        online = target.online()
        body = {
            "type": "pushed_message",
            "message_id": push.message_id,
            "content": push.content,
            "priority": push.priority,
            "from_user": conn.user.core.user_id,
        }
        queue = target.core.offline
        outcome = queue.offer(push.message_id, push.priority, "push", body,
                              ttl_s=push.ttl_s, owner=online)
        if outcome.status == DELIVERED:
            assert online is not None and outcome.frame is not None
            online.send(orjson.dumps(outcome.frame))
        result: dict[str, Any] = {
            "message_id": push.message_id,
            "to_user": push.to_user,
            "status": outcome.status,
        }
        if outcome.entry is not None:
            result["delivery_id"] = outcome.entry.delivery_id
        if outcome.evicted is not None:
            result["evicted_message_id"] = outcome.evicted.message_id
        result["offline_size"] = queue.held
        if outcome.reason is not None:
            result["reason"] = outcome.reason
        conn.send(orjson.dumps(reply("push_result", frame, **result)))
        self._arm_expiry(target)
        self._log_offer("push", target, outcome, from_conn=conn.conn_id)
        return None

    _SERVER_TYPES: ClassVar[dict[str, Callable[..., None]]] = {
        "latency_probe": _latency_probe,
        "get_server_stats": _server_stats,
        "push": _push,
    }

    # ------------------------------------------------------------------ offline queue

    def _send_offline(self, user: UserRuntime, conn: Conn, frames: list[dict],
                      on_connect: bool = False) -> None:
        """Send offline deliveries on ``conn``. Not reroutable: if the connection closes
        before they are acked, ``release`` returns them to the queue (redelivery)."""
        if not frames:
            return
        if on_connect and F.SLOW in self.faults:
            due = asyncio.get_running_loop().time() + F.SLOW_DELAY_S
            for f in frames:
                user.delayed.append((due, orjson.dumps(f), conn, True))
            self._ensure_delayed_sender(user)
            return
        for f in frames:
            conn.send(orjson.dumps(f))

    def _arm_expiry(self, user: UserRuntime) -> None:
        """Keep a timer at the user's next offline expiry, so expiry is continuous
        (totals update and memory is freed even when nobody touches the queue)."""
        queue = user.core.offline
        due = queue.next_expiry()
        if due is None:
            if user.expiry_timer is not None:
                user.expiry_timer.cancel()
                user.expiry_timer = user.expiry_due = None
            return
        if user.expiry_timer is not None:
            if user.expiry_due is not None and user.expiry_due <= due:
                return  # fires first; it re-arms for the rest
            user.expiry_timer.cancel()
        delay = max(0.0, due - queue.clock()) + EXPIRY_TIMER_SLACK_S
        user.expiry_due = due
        user.expiry_timer = asyncio.get_running_loop().call_later(delay, self._on_expiry_timer, user)

    def _on_expiry_timer(self, user: UserRuntime) -> None:
        user.expiry_timer = user.expiry_due = None
        expired = user.core.offline.sweep()
        if expired:
            _event("offline_expired", user=user.core.user_id, expired=expired,
                   held=user.core.offline.held)
        self._arm_expiry(user)

    def _log_offer(self, what: str, user: UserRuntime, outcome: Outcome, **extra: Any) -> None:
        level = logging.INFO if outcome.status in ("delivered", "queued") else logging.WARNING
        fields: dict[str, Any] = {"user": user.core.user_id, "status": outcome.status, **extra}
        if outcome.entry is not None:
            fields["delivery_id"] = outcome.entry.delivery_id
            fields["message_id"] = outcome.entry.message_id
        if outcome.evicted is not None:
            fields["evicted_message_id"] = outcome.evicted.message_id
        if outcome.reason is not None:
            fields["reason"] = outcome.reason
        _event("offline_" + what, level, **fields)

    # ------------------------------------------------------------------ processing

    def _ensure_worker(self, user: UserRuntime) -> None:
        if user.worker is None:
            user.worker = asyncio.create_task(self._worker(user))

    async def _worker(self, user: UserRuntime) -> None:
        loop = asyncio.get_running_loop()
        core = user.core
        target = loop.time()
        back_to_back = 0  # due jobs processed since the last await
        try:
            while True:
                stream = core.settings.agent_stream
                if (stream is not None and core.queue and core.queue[0].kind == "user_message"
                        and not self.runs.has_slot(core.user_id, stream["max_concurrent_runs"])):
                    # Streaming: the message would start a run, and the user has max_concurrent_runs
                    # active. Wait for a free slot BEFORE taking the job, so it and every later
                    # message wait in the inbound queue (queue_capacity and queue_full apply).
                    await self.runs.slot_freed(core.user_id)
                    continue
                job = core.next_job()
                if job is None:
                    return  # no await before finally: no admission can slip in between
                if job.kind != "user_message":
                    stream = None
                # Pace on a schedule so per-message overshoot does not accumulate (and
                # fractional milliseconds work on average).
                now = loop.time()
                target = max(target, now - WORKER_CATCH_UP_S) + core.processing_s(job)
                if self._throttle_interval:
                    # throttle: one server-wide completion slot per 1/RATE s; a slot at most
                    # THROTTLE_CATCH_UP_S in the past is still used, so timer overshoot does
                    # not lower the rate, and an idle server does not bank slots.
                    slot = max(now - F.THROTTLE_CATCH_UP_S, self._throttle_next)
                    self._throttle_next = slot + self._throttle_interval
                    target = max(target, slot)
                if target > now:
                    while (delay := target - loop.time()) > 0:  # never finish before the target
                        await asyncio.sleep(delay)
                    back_to_back = 0
                elif back_to_back >= WORKER_YIELD_EVERY:
                    await asyncio.sleep(0)  # let readers and senders run
                    back_to_back = 0
                else:
                    back_to_back += 1  # due already: process it now, without an await
                try:
                    frame = core.complete(job)
                except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
                    core.in_flight = None
                    _event("processing_error", logging.ERROR, True, user=core.user_id, error=repr(exc))
                    continue
                self.messages_total += 1
                if self._leak_bytes:
                    self._leaked.append(b"\x01" * self._leak_bytes)  # touched, so resident
                if stream is not None and frame.get("type") == "ai_response":
                    try:
                        self._start_run(user, frame, job.origin, stream)
                    except Exception as exc:  # noqa: BLE001 - a bug must not stop the worker: answer unstreamed
                        _event("agent_run_error", logging.ERROR, True, user=core.user_id, error=repr(exc))
                        self._emit_response(user, frame, job.origin)
                else:
                    self._emit_response(user, frame, job.origin)
        finally:
            user.worker = None

    def _start_run(self, user: UserRuntime, frame: dict, origin: Conn | None, stream: dict) -> None:
        """The message was processed and the user has a free run slot: run #n starts now."""
        user_id = user.core.user_id
        message_id = frame.get("message_id")
        agents = frame.get("contributing_agents") or ()
        first = agents[0] if agents else None
        agent = first["agent"] if isinstance(first, dict) and first.get("agent") else AGENT_NAME
        n = self.runs.started + 1  # the number begin() gives it, known before (the plan needs it)
        plan = self.runs.plan(stream, message_id, str(frame.get("content", "")), n, agent)
        self.runs.begin(user_id)  # from here on the run holds a slot until it ends
        # The fields every frame of the run carries besides the event's own.
        head: dict[str, Any] = {"message_id": message_id, "run_id": f"r-{n}"}
        if self._netra is not None:
            # netra: the run is the one the client named (its run_id and thread_id), and every
            # flat event names the agent and the run's user (a cross_talk copy too); the codec
            # reads these (they never reach the apex wire).
            known = self._netra.run_of(user_id, message_id)
            if known is not None:
                head["run_id"], head["thread_id"] = known[0], known[1]
            head["agent"] = agent
            head["user_id"] = user_id
        self.runs.spawn(self._run_agent(user, frame, origin, plan, n, head, asyncio.get_running_loop().time()))

    async def _run_agent(self, user: UserRuntime, frame: dict, origin: Conn | None, plan: RunPlan, n: int,
                         head: dict[str, Any], start: float) -> None:
        """Run #n: its agent_progress events on the plan's schedule from ``start`` (loop time), then
        the final ai_response through the usual reply path (docs/protocol.md §4.9). The plan
        already holds what the faults change. The run keeps its slot until its last frame."""
        user_id = user.core.user_id
        completed = False
        loop = asyncio.get_running_loop()
        echo = {"request_id": frame["request_id"]} if "request_id" in frame else {}
        try:
            due = start
            seq = 0
            for event, wait in zip(plan.events, plan.waits_s, strict=False):
                due += wait
                while (delay := due - loop.time()) > 0:  # never early; lateness does not accumulate
                    await asyncio.sleep(delay)
                seq += 1
                data = self._progress_frame(event, head, seq, echo)
                self._deliver_event(user, data, origin)
                if plan.cross_talk:
                    self._copy_to_stranger(user, data, n)
            if not plan.final:
                _event("fault_truncate_stream", logging.WARNING, user=user_id, run=n, events=seq)
                return
            due += plan.waits_s[len(plan.events)]
            while (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            final = {**frame, "content": plan.answer, "run_id": head["run_id"]}
            if "thread_id" in head:
                final["thread_id"] = head["thread_id"]
            final["events"] = seq  # the agent_progress frames of the run before it
            self._emit_response(user, final, origin, twice=plan.duplicate_final)
            completed = True
            if plan.after_final is not None:
                await asyncio.sleep(plan.after_final_s)
                seq += 1
                self._deliver_event(user, self._progress_frame(plan.after_final, head, seq, echo), origin)
                _event("fault_event_after_final", logging.WARNING, user=user_id, run=n)
        except Exception as exc:  # noqa: BLE001 - one broken run must not stop the others
            _event("agent_run_error", logging.ERROR, True, user=user_id, run=n, error=repr(exc))
        finally:
            self.runs.end(user_id, completed)

    @staticmethod
    def _progress_frame(event: dict, head: dict[str, Any], seq: int, echo: dict) -> bytes:
        """``{"type":"agent_progress","event":...,"message_id":...,"run_id":...,"seq":...,<fields>}``."""
        out: dict[str, Any] = {"type": "agent_progress", "event": event["event"], "message_id": head["message_id"],
                               "run_id": head["run_id"], "seq": seq}
        for key, value in event.items():
            if key != "event":
                out[key] = value
        for key in ("thread_id", "agent", "user_id"):  # netra only
            if key in head and key not in out:
                out[key] = head[key]
        out.update(echo)
        return orjson.dumps(out)

    def _deliver_event(self, user: UserRuntime, data: bytes, origin: Conn | None) -> None:
        """A run's progress event: to the origin connection if the client can still read it, else
        the user's newest readable connection, else nowhere. Not re-routable and never queued
        offline: a progress event is only worth something while the client waits for the run."""
        if origin is not None and origin.readable:
            origin.send(data)
        elif (online := user.online()) is not None:
            online.send(data)

    def _copy_to_stranger(self, user: UserRuntime, data: bytes, n: int) -> None:
        """``cross_talk`` on run #n: a copy of the event to another user's newest readable connection
        (when another user is connected); the owner got its own."""
        stranger = max((c for u in self.users.values() if u is not user for c in u.connections if c.readable),
                       key=lambda c: c.conn_id, default=None)
        if stranger is not None:
            stranger.send(data)
            _event("fault_cross_talk", logging.WARNING, user=user.core.user_id, run=n,
                   to_user=stranger.user.core.user_id, conn=stranger.conn_id)

    def _emit_response(self, user: UserRuntime, frame: dict, origin: Conn | None, twice: bool = False) -> None:
        """A produced response through the response-stream faults to :meth:`_dispatch`. ``twice``
        (``duplicate_final``): wherever the response goes, an identical copy follows it at once."""
        responses = user.core.responses
        before = responses.held_token
        data = orjson.dumps(frame)
        items = responses.on_produced((data, origin))
        if twice:
            items = [copy for item in items for copy in ((item, item) if item[0] is data else (item,))]
        token = responses.held_token
        if token is not None and token != before:
            if user.reorder_timer is not None:
                user.reorder_timer.cancel()
            user.reorder_timer = asyncio.get_running_loop().call_later(
                F.REORDER_FLUSH_S, self._flush_held, user, token
            )
        self._dispatch(user, items)

    def _flush_held(self, user: UserRuntime, token: int) -> None:
        user.reorder_timer = None
        self._dispatch(user, user.core.responses.flush_held(token))

    def _dispatch(self, user: UserRuntime, items: list[tuple[bytes, Conn | None]]) -> None:
        if not items:
            return
        if F.CROSS_TALK in self.faults:
            # cross_talk: every N-th ai_response dispatched, all users together, is also sent (a
            # copy, never re-routed) to the newest open connection of another user, if any. The
            # count is kept on the server, created here on first use.
            every = int(self.faults.param(F.CROSS_TALK))
            for data, _origin in items:
                if not data.startswith(F.AI_RESPONSE_PREFIX):
                    continue
                self._cross_talk_count = getattr(self, "_cross_talk_count", 0) + 1
                if self._cross_talk_count % every:
                    continue
                stranger = max((c for u in self.users.values() if u is not user for c in u.connections),
                               key=lambda c: c.conn_id, default=None)
                if stranger is not None:
                    stranger.send(data)
                    _event("fault_cross_talk", logging.WARNING, user=user.core.user_id,
                           to_user=stranger.user.core.user_id, conn=stranger.conn_id)
        delay = F.SLOW_DELAY_S if F.SLOW in self.faults else 0.0
        if self._degrade_after:
            self._produced += len(items)
            if self._produced > self._degrade_after:
                delay += F.DEGRADE_DELAY_S
        if delay:
            due = asyncio.get_running_loop().time() + delay
            for data, origin in items:
                user.delayed.append((due, data, origin, False))
            self._ensure_delayed_sender(user)
            return
        for data, origin in items:
            self._deliver(user, data, origin)

    def _ensure_delayed_sender(self, user: UserRuntime) -> None:
        if user.delayed_task is None:
            user.delayed_task = asyncio.create_task(self._delayed_sender(user))

    async def _delayed_sender(self, user: UserRuntime) -> None:
        loop = asyncio.get_running_loop()
        try:
            while user.delayed:
                due = user.delayed[0][0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = loop.time()
                while user.delayed and user.delayed[0][0] <= now:
                    _, data, origin, offline = user.delayed.popleft()
                    if not offline:
                        self._deliver(user, data, origin)
                    elif origin is not None and origin.open:
                        origin.send(data)
                    # else: the connection closed first; release() returned the entry
        finally:
            user.delayed_task = None

    def _deliver(self, user: UserRuntime, data: bytes, origin: Conn | None) -> None:
        """Where a finished reply goes: the origin connection if still open, else the
        user's most recently opened open connection, else the user's offline queue
        (an ai_response; a throughput_response is dropped and counted)."""
        if origin is not None and origin.open:
            origin.send(data, reroutable=True)
        elif (online := user.online()) is not None:
            online.send(data, reroutable=True)
        else:
            frame = orjson.loads(data)  # rare path: the user is away
            outcome = user.core.store_undeliverable(frame)
            if outcome is None:
                _event("throughput_response_dropped", logging.WARNING, user=user.core.user_id,
                       message_id=frame.get("message_id"))
                return
            self._arm_expiry(user)
            self._log_offer("reply", user, outcome)
