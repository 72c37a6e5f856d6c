"""A WebSocket session: one connection, one reader task, every frame into the History.

The reader task is the only code that reads the socket. It timestamps and records each frame,
resolves the pending request whose ``request_id`` it echoes, and wakes whoever waits for a
condition. So a state query can never steal a chat reply (the original suites' bare ``recv()``
race): replies are routed by ``request_id``, everything else is looked up in the History.

All coroutines here run on the library's loop thread. Nothing here logs to Robot.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .health import (
    DEFAULT_BEHIND_THRESHOLD_S,
    DEFAULT_LATE_THRESHOLD_S,
    DEFAULT_MAX_LATE_FRACTION,
    FlowConnection,
    GeneratorHealth,
    LagProbe,
    SendClock,
    waits_on_peer,
)
from ..dialects import ApexDialect, Codec, Dialect, SessionOpenError
from ..dialects.base import parse_frame as _parse, redacted, send_soon, shown_url
from .history import History
from .trust import COUNT_GRACE_S

#: Frames larger than this are refused by the server (and by us): 1 MiB.
MAX_FRAME_BYTES = 2**20
#: How long a close or drop right after connecting waits for ``session_started`` at most.
GREETING_WAIT_S = 0.5


class SessionError(RuntimeError):
    """A connection could not be opened or was unusable."""

    ROBOT_SUPPRESS_NAME = True


class ConnectionLost(AssertionError):
    """The connection closed while a keyword waited on it."""

    ROBOT_SUPPRESS_NAME = True


class WaitTimeout(AssertionError):
    """A condition did not become true within its timeout."""

    ROBOT_SUPPRESS_NAME = True


class ServerError(RuntimeError):
    """The server answered a request with ``error``."""

    def __init__(self, frame: dict[str, Any]) -> None:
        self.code = str(frame.get("code"))
        self.frame = frame
        super().__init__(f"server answered error '{self.code}': {frame.get('message', '')}")


@dataclass
class SendReport:
    """What an open-loop send did: when, and how late against its schedule."""

    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    lateness_ns: list[int] = field(default_factory=list)
    #: How the sender kept its schedule (engine.health.GeneratorHealth), set when the send ends.
    health: Any = None

    @property
    def duration_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.count else 0.0

    @property
    def max_lateness_s(self) -> float:
        return max(self.lateness_ns, default=0) / 1e9

    @property
    def mean_lateness_s(self) -> float:
        return sum(self.lateness_ns) / len(self.lateness_ns) / 1e9 if self.lateness_ns else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "sent": self.count,
            "duration_s": round(self.duration_s, 6),
            "max_lateness_s": round(self.max_lateness_s, 6),
            "mean_lateness_s": round(self.mean_lateness_s, 6),
        }


@dataclass
class HealthStats:
    """What the health monitor saw: pings, round-trips, disconnections."""

    pings: int = 0
    pongs: int = 0
    missed: int = 0
    rtt_ns: list[int] = field(default_factory=list)

    @property
    def max_rtt_s(self) -> float:
        return max(self.rtt_ns, default=0) / 1e9

    @property
    def mean_rtt_s(self) -> float:
        return sum(self.rtt_ns) / len(self.rtt_ns) / 1e9 if self.rtt_ns else 0.0


def describe_open_error(url: str, error: BaseException) -> str:
    """A specific, token-free explanation of why a connection did not open."""
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        body = bytes(error.response.body or b"").decode("utf-8", "replace").strip()[:200]
        hint = " Check the token: the server refused it." if status in (401, 403) else ""
        return f"Server at {url} refused the WebSocket handshake with HTTP {status}{': ' + body if body else ''}.{hint}"
    if isinstance(error, InvalidURI):
        return f"'{url}' is not a valid WebSocket URL (expected ws://host:port/path or wss://...)."
    if isinstance(error, ConnectionRefusedError):
        return f"Cannot connect to {url}: connection refused (is the server running on that port?)."
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return f"Connecting to {url} timed out (no completed WebSocket handshake)."
    if isinstance(error, InvalidHandshake):
        return f"WebSocket handshake with {url} failed: {error}."
    if isinstance(error, OSError):
        return f"Cannot connect to {url}: {error.strerror or error}."
    return f"Cannot connect to {url}: {type(error).__name__}: {error}."


class Session:
    """One WebSocket connection under an alias."""

    def __init__(
        self,
        alias: str,
        url: str,
        history: History,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        ping_interval: float | None = 20.0,
        dialect: Dialect | None = None,
        authenticate: bool = True,
        user_key: str | None = None,
    ) -> None:
        self.alias = alias
        #: The wire protocol (MessagingLibrary.dialects); apex unless told.
        self.dialect = dialect or ApexDialect()
        #: Whether the token is sent at all (``authenticate=False``: no credentials).
        self.authenticate = authenticate
        #: Who this connection's user is, as the client knows it (same key: same user). Never logged.
        self.user_key = user_key or (token if token is not None else f"anonymous:{alias}")
        #: The current connection's codec (a fresh one per connect).
        self.codec: Codec = self.dialect.codec(self.user_key)
        #: The user's token, kept to reconnect or open a second connection as the same user.
        #: Never logged, never part of a message.
        self.token = token
        self.url = url
        self.history = history
        #: History index when this alias's Session was created: older events on the same alias
        #: belong to an earlier connection that happened to use the same alias.
        self.first_mark = history.mark()
        self._headers = dict(headers or {})
        self._ping_interval = ping_interval
        self.ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._request_ids = itertools.count(1)
        self.counts: Counter[str] = Counter()
        #: History indexes of received frames, by type and by message_id (for cheap waits).
        self.by_type: dict[str, list[int]] = {}
        self.by_message: dict[str, list[tuple[str, int]]] = {}
        self.session_started: dict[str, Any] | None = None
        #: The user's id as the server named it in ``session_started`` (kept across reconnects).
        self.user_id: str | None = None
        #: History index of the latest connect event, and when that connect attempt started.
        self.epoch_mark = 0
        self.connect_started_ns = 0
        #: Offline-queue deliveries (frames with ``delivery_id``) of the current connection.
        self.epoch_deliveries: dict[str, int] = {}
        #: Acknowledge deliveries as they arrive (the default), or only on request.
        self.auto_ack = True
        self.unacked: dict[str, None] = {}
        #: Deliveries left unacknowledged when the previous connection ended (the server owes
        #: them again, flagged ``redelivered``).
        self.unacked_before: dict[str, None] = {}
        self._ack_task: asyncio.Task[None] | None = None
        self.closing_by_us = False
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.unexpected_closes = 0
        self.health = HealthStats()
        self.connects = 0
        #: Called with (session, event) for every frame sent or received and every connection
        #: event (the trust checker, engine.trust).
        self.observer: Callable[[Session, Any], None] | None = None
        self._dropping = False
        self.session_started_ns = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self._reader is not None and not self._reader.done()

    async def open(self, timeout: float) -> float:
        """Open the connection; return how long the handshake took in seconds."""
        if self.is_open:
            raise SessionError(f"Connection '{self.alias}' is already open.")
        started = time.perf_counter_ns()
        args = self.dialect.connect_args(self.url, self.token if self.authenticate else None)
        codec = self.dialect.codec(self.user_key)
        try:
            self.ws = await connect(
                args.url,
                additional_headers={**self._headers, **args.headers},
                subprotocols=args.subprotocols,
                open_timeout=timeout,
                compression=None,
                proxy=None,
                max_size=MAX_FRAME_BYTES,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_interval,
                close_timeout=2,
                create_connection=FlowConnection,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError, asyncio.TimeoutError) as error:
            raise SessionError(describe_open_error(shown_url(self.url), error)) from None
        opening_ns = time.perf_counter_ns()
        try:
            early = await codec.open(self.ws, max(0.1, timeout - (opening_ns - started) / 1e9))
        except (SessionOpenError, ConnectionClosed, TimeoutError, asyncio.TimeoutError) as error:
            self.ws.transport.abort()
            reason = error if isinstance(error, SessionOpenError) else describe_session_open(self.ws, error)
            raise SessionError(f"Connected to {shown_url(self.url)} but the session did not open ({self.dialect.describe()}): {reason}") from None
        self.codec = codec
        elapsed_ns = time.perf_counter_ns() - started
        self.closing_by_us = False
        self._dropping = False
        self.session_started_ns = 0
        self.close_code, self.close_reason = None, ""
        self.connects += 1
        self.session_started = None
        self.epoch_deliveries = {}
        self.unacked_before, self.unacked = self.unacked, {}
        self.connect_started_ns = started
        event = self.history.record_connection(
            self.alias, "opened" if self.connects == 1 else "reconnected", handshake_ns=elapsed_ns, started_ns=started
        )
        self._observe(event)
        self.epoch_mark = event.index
        for frame in early:
            self._on_frame(frame, time.perf_counter_ns())
        self._reader = asyncio.create_task(self._read(), name=f"reader-{self.alias}")
        return elapsed_ns / 1e9

    async def close(self, timeout: float = 5.0) -> None:
        """Close cleanly (close frame and handshake), after sending the automatic acks still due."""
        if self.is_open:
            await self._settle_greeting()
            await self._settle_deliveries()
            try:
                await asyncio.wait_for(self._flush_acks(), timeout)
            except (asyncio.TimeoutError, TimeoutError, ConnectionLost):
                pass
        self.closing_by_us = True
        await self._stop_monitor()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                self._dropping = True  # not a clean close: frames the server wrote may be unread
                self.ws.transport.abort()
        await self._join_reader(timeout)

    async def _settle_deliveries(self) -> None:
        """Before a clean close: if fewer deliveries arrived than ``session_started.queued``
        announced, give the rest until ``COUNT_GRACE_S`` after it (a slow server sends them
        late). Costs nothing when the count is right; the trust checker judges the count then.
        """
        queued = (self.session_started or {}).get("queued")
        if not isinstance(queued, int) or len(self.epoch_deliveries) >= queued or not self.is_open:
            return
        left = COUNT_GRACE_S - (time.perf_counter_ns() - self.session_started_ns) / 1e9
        if left > 0:
            try:
                await self.wait_until(lambda: len(self.epoch_deliveries) >= queued, left, lambda: "")
            except (WaitTimeout, ConnectionLost):
                pass

    async def _settle_greeting(self, limit: float = GREETING_WAIT_S) -> None:
        """Give ``session_started`` (sent right after the handshake) a moment to arrive.

        Closing right after connecting would otherwise race it, and the user's id (which
        pushes are addressed to) would stay unknown. Bounded: a server that sends no
        ``session_started`` costs at most ``limit`` once per connection.
        """
        if self.session_started is None and self.is_open:
            try:
                await self.wait_until(lambda: self.session_started is not None, limit, lambda: "")
            except (WaitTimeout, ConnectionLost):
                pass

    async def drop(self) -> None:
        """Drop abruptly: abort the TCP connection with no close frame."""
        await self._settle_greeting()
        self.closing_by_us = True
        self._dropping = True
        await self._stop_monitor()
        if self.ws is not None:
            self.ws.transport.abort()
        await self._join_reader(5.0)
        self._observe(self.history.record_connection(self.alias, "dropped"))

    async def _join_reader(self, timeout: float) -> None:
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                self._reader.cancel()

    # -- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self.ws is not None
        ws = self.ws
        try:
            async for raw in ws:
                self._on_frame(_parse(raw), time.perf_counter_ns())
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason or ""
            if not self.closing_by_us:
                self.unexpected_closes += 1
                self._observe(
                    self.history.record_connection(self.alias, "lost", code=self.close_code, reason=self.close_reason)
                )
            else:
                closed = self.history.record_connection(self.alias, "closed", code=self.close_code)
                if not self._dropping:
                    self._observe(closed)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost(self.closed_description("waiting for a reply")))
            self._pending.clear()
            self._notify()

    def _on_frame(self, wire: dict[str, Any], ts_ns: int) -> None:
        """Record one received frame (canonical beside raw), route it, wake the waiters."""
        codec = self.codec
        if codec.identity:
            frame, raw = wire, None
        else:
            frame = codec.classify(wire)
            raw = redacted(wire) if frame is not wire else None
            answer = codec.reply_to_client(frame)
            if answer is not None and self.ws is not None:
                send_soon(self._send_quietly(answer))
        event = self.history.record_received(self.alias, frame, ts_ns, raw)
        self.counts[event.type] += 1
        self.by_type.setdefault(event.type, []).append(event.index)
        message_id = frame.get("message_id")
        if isinstance(message_id, str):
            self.by_message.setdefault(message_id, []).append((event.type, event.index))
        if event.type == "session_started" and self.session_started is None:
            self.session_started = frame
            self.session_started_ns = ts_ns
            if isinstance(frame.get("user_id"), str):
                self.user_id = frame["user_id"]
        elif event.type == "connection_established" and self.user_id is None and isinstance(frame.get("user_id"), str):
            self.user_id = frame["user_id"]
        delivery_id = frame.get("delivery_id")
        if isinstance(delivery_id, str):
            self._on_delivery(delivery_id)
        request_id = frame.get("request_id")
        if request_id is not None:
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(frame)
        if self.observer is not None:
            self.observer(self, event)
        self._notify()

    def _observe(self, event: Any) -> None:
        if self.observer is not None:
            self.observer(self, event)

    async def _send_quietly(self, frame: dict[str, Any]) -> None:
        """A keep-alive answer the dialect asked for: sent as is, recorded, never raising."""
        try:
            if self.ws is not None:
                self.history.record_sent(self.alias, {"type": "keepalive", "what": frame.get("type")}, raw=frame)
                await self.ws.send(orjson.dumps(frame), text=True)
        except ConnectionClosed:
            pass

    def _on_delivery(self, delivery_id: str) -> None:
        self.epoch_deliveries[delivery_id] = self.epoch_deliveries.get(delivery_id, 0) + 1
        self.unacked[delivery_id] = None
        if self.auto_ack and (self._ack_task is None or self._ack_task.done()):
            self._ack_task = asyncio.create_task(self.acknowledge(), name=f"ack-{self.alias}")

    async def acknowledge(self, delivery_ids: Sequence[str] | None = None) -> list[str]:
        """Send one ``ack`` for ``delivery_ids`` (default: every delivery not yet acknowledged)."""
        ids = list(self.unacked) if delivery_ids is None else list(delivery_ids)
        if not ids or not self.is_open:
            return []
        for delivery_id in ids:
            self.unacked.pop(delivery_id, None)
        try:
            await self.send({"type": "ack", "delivery_ids": ids})
        except ConnectionLost:
            return []  # the server keeps them unacknowledged and delivers them again
        return ids

    async def _flush_acks(self) -> None:
        """Before a request or a clean close: send the automatic acks still due, so the server sees them first."""
        if self._ack_task is not None and not self._ack_task.done():
            await asyncio.gather(self._ack_task, return_exceptions=True)
        if self.auto_ack and self.unacked:
            await self.acknowledge()

    def count_since(self, kind: str, mark: int) -> int:
        """How many frames of type ``kind`` arrived on this connection at History index >= ``mark``."""
        indexes = self.by_type.get(kind, [])
        return len(indexes) - bisect.bisect_left(indexes, mark)

    def replies_since(self, message_id: str, mark: int, kinds: frozenset[str] | set[str]) -> int:
        """How many frames of the given types about ``message_id`` arrived at index >= ``mark``."""
        return sum(1 for kind, index in self.by_message.get(message_id, ()) if index >= mark and kind in kinds)

    def _notify(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def closed_description(self, doing: str) -> str:
        who = "we closed it" if self.closing_by_us else "closed by the server or the network"
        reason = f", reason '{self.close_reason}'" if self.close_reason else ""
        return f"Connection '{self.alias}' closed ({who}, code {self.close_code}{reason}) while {doing}."

    async def wait_until(self, condition: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
        """Wait until ``condition()`` is true, re-checking after every frame.

        Raises :class:`WaitTimeout` (with ``describe()``) when ``timeout`` passes and
        :class:`ConnectionLost` if the connection closes first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            tick = self._tick
            if condition():
                return
            if not self.is_open:
                raise ConnectionLost(self.closed_description(describe()))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeout(f"Timed out after {timeout:g} s {describe()} on connection '{self.alias}'.")
            try:
                await asyncio.wait_for(tick.wait(), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                continue

    # -- sending -----------------------------------------------------------------------------

    def _require_open(self, doing: str) -> ClientConnection:
        if not self.is_open or self.ws is None:
            if self.close_code is not None or self.closing_by_us:
                raise ConnectionLost(self.closed_description(doing))
            raise SessionError(f"Connection '{self.alias}' is not open while {doing}.")
        return self.ws

    async def send(self, frame: dict[str, Any], intended_ns: int | None = None) -> int:
        """Send one frame; record it in the History; return the send timestamp (ns)."""
        ws = self._require_open(f"sending {frame.get('type')}")
        codec = self.codec
        wire = frame if codec.identity else codec.encode(frame)
        data = orjson.dumps(wire)
        ts_ns = time.perf_counter_ns()
        event = self.history.record_sent(self.alias, frame, ts_ns, intended_ns, None if wire is frame else redacted(wire))
        if self.observer is not None:
            self.observer(self, event)
        try:
            await ws.send(data, text=True)
        except ConnectionClosed:
            raise ConnectionLost(self.closed_description(f"sending {frame.get('type')}")) from None
        return ts_ns

    async def send_raw(self, data: str | bytes) -> None:
        """Send a frame exactly as given (for protocol-robustness checks)."""
        ws = self._require_open("sending a raw frame")
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        self.history.record_sent(self.alias, {"type": "<raw>", "raw": text[:500]})
        await ws.send(data)

    async def send_scheduled(
        self,
        frames: Sequence[dict[str, Any]],
        offsets_ns: Sequence[int],
        lead_ns: int = 2_000_000,
        *,
        late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S,
        behind_threshold_s: float = DEFAULT_BEHIND_THRESHOLD_S,
        max_late_fraction: float = DEFAULT_MAX_LATE_FRACTION,
    ) -> SendReport:
        """Send ``frames[i]`` at start + ``offsets_ns[i]``: an open-loop schedule.

        The schedule is fixed before the first send; a send that could not happen on time is
        sent as soon as possible and its lateness recorded, never silently re-timed. The
        History keeps each frame's intended time, so latency is measured from it. The
        sender judges itself as the load engine does (``report.health``, engine.health):
        lateness, writes that waited on the server, event-loop lag, client CPU.
        """
        if len(frames) != len(offsets_ns):
            raise ValueError("frames and offsets_ns differ in length")
        report = SendReport()
        clock, probe = SendClock(late_threshold_s, behind_threshold_s), LagProbe()
        probe.start()
        start = time.perf_counter_ns() + lead_ns
        try:
            for frame, offset in zip(frames, offsets_ns, strict=True):
                intended = start + offset
                delay = intended - time.perf_counter_ns()
                if delay > 0:
                    await asyncio.sleep(delay / 1e9)
                ws = self.ws
                paused, pauses = waits_on_peer(ws)
                clock.before(intended, time.perf_counter_ns())
                ts = await self.send(frame, intended_ns=intended)
                clock.after(time.perf_counter_ns() - ts, paused or getattr(ws, "pauses", 0) != pauses)
                if report.count == 0:
                    report.first_ns = ts
                report.last_ns = ts
                report.count += 1
                report.lateness_ns.append(max(0, ts - intended))
        finally:
            await probe.stop()
            report.health = GeneratorHealth.of(f"{self.alias} schedule", clock, probe, max_late_fraction)
        return report

    async def request(self, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a request with a fresh ``request_id`` and wait for the reply echoing it."""
        request_id = f"{self.alias}-r{next(self._request_ids)}"
        frame = {**frame, "request_id": request_id}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._flush_acks()
            await self.send(frame)
            # asyncio.timeout, not wait_for: in 3.11 wait_for wakes this task one loop turn later
            async with asyncio.timeout(timeout):
                reply = await future
        except (asyncio.TimeoutError, TimeoutError):
            raise WaitTimeout(
                f"No reply to {frame['type']} (request_id {request_id}) within {timeout:g} s on connection '{self.alias}'."
            ) from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("type") == "error":
            raise ServerError(reply)
        return reply

    # -- health monitor ----------------------------------------------------------------------

    def start_monitor(self, interval: float, timeout: float) -> None:
        if self._monitor is not None and not self._monitor.done():
            return
        self.health = HealthStats()
        self._monitor = asyncio.create_task(self._monitor_loop(interval, timeout), name=f"health-{self.alias}")

    async def _monitor_loop(self, interval: float, timeout: float) -> None:
        while self.is_open and self.ws is not None:
            self.health.pings += 1
            started = time.perf_counter_ns()
            try:
                pong = await self.ws.ping()
                await asyncio.wait_for(pong, timeout)
                self.health.pongs += 1
                self.health.rtt_ns.append(time.perf_counter_ns() - started)
            except (asyncio.TimeoutError, TimeoutError):
                self.health.missed += 1
            except ConnectionClosed:
                return
            await asyncio.sleep(interval)

    async def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None


def describe_session_open(ws: ClientConnection, error: BaseException) -> str:
    """Why the session-opening exchange failed, without any token."""
    if isinstance(error, ConnectionClosed):
        code = ws.close_code
        hint = {1008: " (policy: the server refused the credentials)", 1003: " (no acceptable subprotocol)"}.get(code or 0, "")
        return f"the server closed the connection with code {code}{hint}" + (f", reason '{ws.close_reason}'" if ws.close_reason else "")
    return f"timed out ({type(error).__name__})"




def jittered_offsets(count: int, max_jitter_ns: int, seed: int) -> list[int]:
    """``count`` send offsets drawn uniformly from [0, max_jitter_ns], sorted; seeded."""
    rng = random.Random(seed)
    return sorted(rng.randint(0, max_jitter_ns) for _ in range(count))
