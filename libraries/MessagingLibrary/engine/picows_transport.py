"""The load engine's picows transport: :class:`PicowsLoadConnection` (``LoadPlan(transport="picows")``).

The same connection as :class:`~.load.LoadConnection` (same counters, same frame handling,
same reconnects, same backpressure accounting) on `picows <https://github.com/tarasko/picows>`_
instead of websockets' asyncio client. What changes is only how bytes move:

* **Receiving** is a callback, not a reader task: picows calls ``on_ws_frame`` from the
  transport's ``data_received``; the frame is timestamped on arrival, parsed with orjson
  straight from picows' buffer and handed to the same ``_handle`` as the websockets path (no
  queue, no task switch per frame). Fragmented messages are reassembled (bounded by
  ``MAX_FRAME_BYTES``); a CLOSE frame is answered and the connection closed, as websockets does.
* **Sending** is synchronous (``WSTransport.send`` writes to the socket buffer). What
  websockets' ``await send`` does on a full buffer (wait in ``drain`` until the peer reads) is
  done here explicitly: after a write that finds the connection paused (the transport passed
  its high-water mark: TCP backpressure), the send waits for ``resume_writing``, bounded by the
  plan's ``stall_timeout_s`` for scheduled sends. Pauses are counted on the listener
  (``paused``/``pauses``, what :func:`.health.waits_on_peer` reads), so the generator's health
  excuses the same waits.
* **Opening**: the dialect's session-opening exchange (``Codec.open``) is written against a
  websockets-like connection (async ``send``/``recv``); :class:`_OpeningAdapter` gives it one
  while frames are queued, then the listener switches to direct callbacks (frames queued after
  the exchange are handled first, in order).

The client never pings (no keep-alive), sends no compression extension, and refuses frames
larger than ``MAX_FRAME_BYTES``, like the websockets path. The write buffer limits are
websockets' defaults (high 32 KiB, low 8 KiB) so both transports see backpressure alike.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson
from picows import WSCloseCode, WSError, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from ..dialects import SessionOpenError
from ..dialects.base import send_soon, shown_url
from .load import LoadConnection
from .session import MAX_FRAME_BYTES, describe_session_open

#: websockets' default write limits (``write_limit=2**15``; low: asyncio's high // 4).
WRITE_LIMIT_HIGH = 2**15
WRITE_LIMIT_LOW = WRITE_LIMIT_HIGH // 4
#: The read buffer each connection starts with (picows' default is 16 KiB, most of a
#: connection's memory at 10,000 connections); load frames are small, and it grows when one is not.
READ_BUFFER_BYTES = 1024
#: How long close() waits for the server's close frame and TCP close, then for the callback
#: (websockets' close_timeout and the reader join of the websockets path).
CLOSE_TIMEOUT_S = 2.0
#: Close codes as websockets reports them: no close frame (1006), a close frame without code (1005).
ABNORMAL_CLOSURE = 1006
NO_STATUS_RCVD = 1005

#: The (never appended) queue of a live listener: an empty deque is 600 bytes, per connection.
_NO_FRAMES: Any = ()
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_JSONDecodeError = orjson.JSONDecodeError


def describe_picows_open_error(url: str, error: BaseException) -> str:
    """Why ``ws_connect`` failed, worded like :func:`.session.describe_open_error` (never a token)."""
    response = getattr(error, "response", None)
    status = getattr(response, "status", None)
    if status is not None and int(status) != 101:
        raw = getattr(response, "body", None) or getattr(error, "raw_body", None) or b""
        body = bytes(raw).decode("utf-8", "replace").strip()[:200]
        hint = " Check the token: the server refused it." if int(status) in (401, 403) else ""
        return f"Server at {url} refused the WebSocket handshake with HTTP {int(status)}{': ' + body if body else ''}.{hint}"
    if type(error).__name__ == "WSInvalidURL":
        return f"'{url}' is not a valid WebSocket URL (expected ws://host:port/path or wss://...)."
    if isinstance(error, ConnectionRefusedError):
        return f"Cannot connect to {url}: connection refused (is the server running on that port?)."
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return f"Connecting to {url} timed out (no completed WebSocket handshake)."
    if isinstance(error, WSError):
        return f"WebSocket handshake with {url} failed: {error}."
    if isinstance(error, OSError):
        return f"Cannot connect to {url}: {error.strerror or error}."
    return f"Cannot connect to {url}: {type(error).__name__}: {error}."


class _Listener(WSListener):
    """picows' callbacks for one connection: frames, flow control, disconnection.

    Until :meth:`go_live` frames are queued for the opening exchange (:class:`_OpeningAdapter`);
    after it each frame is parsed and handled as it arrives.
    """

    def __init__(self, connection: PicowsLoadConnection) -> None:
        super().__init__()
        self.connection = connection
        self.transport: WSTransport | None = None
        #: The transport is past its high-water mark (set by pause_writing), and how often it was.
        self.paused = False
        self.pauses = 0
        #: False once a close frame was sent or the connection aborted/lost: a send would be lost.
        self.writable = True
        self.disconnected = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.live = False
        #: Frames (payload, is_text, arrival ns) read before go_live, and the opening's waiter.
        self.queued: deque[tuple[bytes, bool, int]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.fragments: bytearray | None = None
        self.fragments_text = True
        self.lost = asyncio.get_running_loop().create_future()
        # the hot path's references (set by go_live)
        self._engine: Any = None
        self._handle: Any = None
        self._codec: Any = None
        self._identity = True

    # -- picows callbacks ----------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.underlying_transport.set_write_buffer_limits(high=WRITE_LIMIT_HIGH, low=WRITE_LIMIT_LOW)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        ts = time.perf_counter_ns()
        kind = frame.msg_type
        if (kind is _TEXT or kind is _BINARY) and frame.fin and self.fragments is None:
            if self.live:
                self.receive(frame.get_payload_as_memoryview(), ts, kind is _TEXT)
            else:
                self._queue(frame.get_payload_as_bytes(), kind is _TEXT, ts)
            return
        if kind is _CLOSE:
            self._on_close_frame(transport, frame)
            return
        if kind is _TEXT or kind is _BINARY or kind is _CONTINUATION:
            self._fragment(transport, frame, ts)
        # PING is answered by picows (auto pong); PONG: the client never pings.

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drains(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        self.writable = False
        self.paused = False
        handshake = transport.close_handshake
        received = handshake.recv if handshake is not None else None
        if received is None:
            self.close_code, self.close_reason = ABNORMAL_CLOSURE, ""
        else:
            code = _code(received.code)
            self.close_code = NO_STATUS_RCVD if code == 0 else code
            self.close_reason = received.reason or ""
        closed = self.closed_error()
        self._wake_drains(closed)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)
        if self.live:
            self.connection._lost(self)

    # -- frames --------------------------------------------------------------------------------

    def receive(self, payload: Any, ts: int, text: bool) -> None:
        """One whole message, live: what the websockets path's reader does with it."""
        try:
            frame = orjson.loads(payload)
        except _JSONDecodeError:
            if text and not _valid_utf8(payload):
                self._fail(WSCloseCode.INVALID_TEXT, "invalid UTF-8")  # websockets fails the connection: 1007
                return
            self._engine.unparseable += 1
            return
        if type(frame) is not dict:
            self._engine.unparseable += 1
            return
        if not self._identity:
            codec = self._codec
            frame = codec.classify(frame)
            answer = codec.reply_to_client(frame)
            if answer is not None:
                send_soon(self.connection._send_frame(answer, encode=False))
        self._handle(frame, ts)

    def _queue(self, payload: bytes, text: bool, ts: int) -> None:
        self.queued.append((payload, text, ts))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fragment(self, transport: WSTransport, frame: WSFrame, ts: int) -> None:
        kind = frame.msg_type
        if kind is _CONTINUATION:
            if self.fragments is None:
                self._fail(WSCloseCode.PROTOCOL_ERROR, "unexpected continuation frame")
                return
        elif self.fragments is not None:
            self._fail(WSCloseCode.PROTOCOL_ERROR, "expected a continuation frame")
            return
        else:
            self.fragments = bytearray()
            self.fragments_text = kind is _TEXT
        self.fragments += frame.get_payload_as_memoryview()
        if len(self.fragments) > MAX_FRAME_BYTES:
            self.fragments = None
            self._fail(WSCloseCode.MESSAGE_TOO_BIG, f"message over {MAX_FRAME_BYTES} bytes")
            return
        if frame.fin:
            whole, self.fragments = bytes(self.fragments), None
            if self.live:
                self.receive(whole, ts, self.fragments_text)
            else:
                self._queue(whole, self.fragments_text, ts)

    def _on_close_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """The server closes: answer its close frame (echoing the code) and close the TCP connection."""
        if self.writable:
            code = frame.get_close_code()
            transport.send_close(WSCloseCode.OK if _code(code) in (0, NO_STATUS_RCVD) else code, frame.get_close_message())
        self.writable = False
        transport.disconnect()

    def _fail(self, code: WSCloseCode, reason: str) -> None:
        """Fail the connection as websockets would on a protocol error: send a close frame and close."""
        if self.transport is None:
            return
        if self.writable:
            self.transport.send_close(code, reason.encode())
            self.writable = False
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.transport.disconnect, False)

    # -- lifecycle -----------------------------------------------------------------------------

    def go_live(self) -> list[tuple[bytes, bool, int]]:
        """Switch to direct handling; return the frames queued meanwhile (to be handled first)."""
        connection = self.connection
        self._engine = connection.engine
        self._handle = connection._handle
        self._codec = connection.codec
        self._identity = connection.codec.identity
        self.live = True
        left, self.queued = list(self.queued), _NO_FRAMES  # nothing is queued once live (no deque each)
        return left

    def closed_error(self) -> ConnectionClosed:
        """The websockets exception for this connection's close (what Codec.open expects)."""
        if self.close_code is None or self.close_code == ABNORMAL_CLOSURE:
            return ConnectionClosed(None, None)
        return ConnectionClosed(Close(self.close_code, self.close_reason), None)

    def abort(self) -> None:
        self.writable = False
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the transport is below its low-water mark (``resume_writing``).

        ``TimeoutError`` after ``timeout``; ``ConnectionClosed`` if the connection is lost meanwhile.
        """
        if not self.paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self.drain_waiters.append(waiter)
        try:
            if timeout is None:
                await waiter
            else:
                await asyncio.wait_for(waiter, timeout)
        finally:
            self.drain_waiters.remove(waiter)

    def _wake_drains(self, error: BaseException | None) -> None:
        for waiter in self.drain_waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)


def _code(code: Any) -> int:
    return int(getattr(code, "value", code))


def _valid_utf8(payload: Any) -> bool:
    try:
        bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _OpeningAdapter:
    """What ``Codec.open`` needs of a websockets connection, over a listener still queueing frames."""

    def __init__(self, listener: _Listener, transport: WSTransport, subprotocol: str | None) -> None:
        self.listener = listener
        self.transport = transport
        self.subprotocol = subprotocol

    @property
    def close_code(self) -> int | None:
        return self.listener.close_code

    @property
    def close_reason(self) -> str:
        return self.listener.close_reason

    async def recv(self) -> str | bytes:
        listener = self.listener
        while not listener.queued:
            if listener.disconnected:
                raise listener.closed_error()
            listener.waiter = asyncio.get_running_loop().create_future()
            try:
                await listener.waiter
            finally:
                listener.waiter = None
        payload, text, _ = listener.queued.popleft()
        return payload.decode("utf-8") if text else payload

    async def send(self, message: str | bytes, text: bool | None = None) -> None:
        listener = self.listener
        if not listener.writable:
            raise listener.closed_error()
        if isinstance(message, str):
            data, is_text = message.encode("utf-8"), text is not False
        else:
            data, is_text = bytes(message), bool(text)
        self.transport.send(_TEXT if is_text else _BINARY, data)
        await listener.drain()


class PicowsLoadConnection(LoadConnection):
    """A :class:`~.load.LoadConnection` on picows (see the module's docstring for what differs)."""

    def __init__(self, engine: Any, index: int) -> None:
        super().__init__(engine, index)
        self.ws: WSTransport | None = None  # type: ignore[assignment]
        self.listener: _Listener | None = None

    @property
    def local_address(self) -> Any:
        """This end's (host, port), as websockets' ``local_address``; None while not connected."""
        return self.ws.underlying_transport.get_extra_info("sockname") if self.ws is not None else None

    @property
    def is_open(self) -> bool:
        listener = self.listener
        return self.ws is not None and listener is not None and listener.live and not listener.disconnected

    async def open(self, timeout: float) -> None:
        plan = self.engine.plan
        started = time.perf_counter_ns()
        args = plan.dialect.connect_args(plan.url, self.token)
        codec = plan.dialect.codec(self.token)
        headers = dict(args.headers)
        if args.subprotocols:
            headers["Sec-WebSocket-Protocol"] = ", ".join(args.subprotocols)
        listener = _Listener(self)
        try:
            transport, _ = await asyncio.wait_for(
                ws_connect(
                    lambda: listener,
                    args.url,
                    websocket_handshake_timeout=timeout,
                    enable_auto_ping=False,
                    enable_auto_pong=True,
                    max_frame_size=MAX_FRAME_BYTES,
                    extra_headers=headers,
                    read_buffer_init_size=READ_BUFFER_BYTES,
                ),
                timeout,
            )
        except (OSError, WSError, TimeoutError, ValueError) as error:
            self.open_error = describe_picows_open_error(shown_url(plan.url), error)
            raise ConnectionError(self.open_error) from None
        subprotocol = transport.response.headers.get("Sec-WebSocket-Protocol") if args.subprotocols else None
        if args.subprotocols and subprotocol is not None and subprotocol not in args.subprotocols:
            transport.disconnect(graceful=False)
            self.open_error = f"WebSocket handshake with {shown_url(plan.url)} failed: unsupported subprotocol: {subprotocol}."
            raise ConnectionError(self.open_error)
        adapter = _OpeningAdapter(listener, transport, subprotocol)
        try:
            early = await codec.open(adapter, max(0.1, timeout - (time.perf_counter_ns() - started) / 1e9))
        except (SessionOpenError, ConnectionClosed, TimeoutError) as error:
            listener.abort()
            reason = error if isinstance(error, SessionOpenError) else describe_session_open(adapter, error)  # type: ignore[arg-type]
            self.open_error = f"Connected to {shown_url(plan.url)} but the session did not open ({plan.dialect.describe()}): {reason}"
            raise ConnectionError(self.open_error) from None
        self.ws = transport
        self.listener = listener
        self._session_opened(codec, started, early)
        for payload, text, ts in listener.go_live():
            listener.receive(payload, ts, text)
        if listener.disconnected:  # lost while opening: what the reader would have found at once
            self._lost(listener)

    # -- reading -------------------------------------------------------------------------------

    def _lost(self, listener: _Listener) -> None:
        """The connection is gone (the websockets path's reader ``finally``)."""
        if listener is not self.listener:
            return
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"connection {self.name} closed"))
        self.pending.clear()
        self.progress.set()
        if not self.closing:
            self._on_lost(listener)  # type: ignore[arg-type]

    # -- sending -------------------------------------------------------------------------------

    async def _send_frame(self, frame: dict[str, Any], encode: bool = True) -> None:
        listener = self.listener
        if self.ws is None or listener is None or not listener.writable:
            raise listener.closed_error() if listener is not None else ConnectionClosed(None, None)
        wire = frame if (not encode or self.codec.identity) else self.codec.encode(frame)
        self.ws.send(_TEXT, orjson.dumps(wire))
        if listener.paused:
            await listener.drain()

    async def _write_backlog(self, data: bytes) -> None:
        listener = self.listener
        if self.ws is None or listener is None or not listener.writable:
            raise ConnectionError(f"connection {self.name} closed")
        self.ws.send(_TEXT, data)
        if listener.paused:
            try:
                await listener.drain()
            except ConnectionClosed:
                raise ConnectionError(f"connection {self.name} closed") from None

    async def _write_scheduled(self, data: bytes, ts: int) -> bool:
        """The write never blocks; when it leaves the connection paused (a full socket buffer)
        the send waits for the server to read, at most ``stall_timeout_s``, then the connection
        counts as stalled (see LoadConnection._write_scheduled)."""
        listener, ws = self.listener, self.ws  # open: send_scheduled checked
        engine = self.engine
        clock = engine.clock
        paused, pauses = listener.paused, listener.pauses
        if not listener.writable:  # closing (websockets: ConnectionClosed)
            clock.after(time.perf_counter_ns() - ts, paused)
            return False
        ws.send(_TEXT, data)
        if listener.paused:
            # The socket buffer is full: wait for the server to read, bounded, so a server that
            # stops reading cannot hold the whole run.
            try:
                await listener.drain(engine.plan.stall_timeout_s)
            except ConnectionClosed:
                clock.after(time.perf_counter_ns() - ts, True)
                return False
            except TimeoutError:
                # The frame is in the transport's buffer; the server has not read for the stall
                # timeout. Later messages of this connection are not sent.
                self.stalled = True
                engine.note_stall(self.name)
            clock.after(time.perf_counter_ns() - ts, True)
        elif paused or listener.pauses != pauses:
            clock.after(time.perf_counter_ns() - ts, True)
        return True

    def _abort(self) -> None:
        self.listener.abort()  # type: ignore[union-attr]

    # -- closing -------------------------------------------------------------------------------

    async def _close_transport(self) -> None:
        """The close handshake (at most ``CLOSE_TIMEOUT_S``, then a disconnect), then the TCP close."""
        listener, ws = self.listener, self.ws
        if listener is None or ws is None or listener.disconnected:
            return
        if listener.writable:
            listener.writable = False
            ws.send_close(WSCloseCode.OK)
        try:
            # the server answers the close frame; on_ws_frame then closes the TCP connection
            await asyncio.wait_for(asyncio.shield(listener.lost), CLOSE_TIMEOUT_S)
        except TimeoutError:
            ws.disconnect(graceful=False)
            try:
                await asyncio.wait_for(asyncio.shield(listener.lost), CLOSE_TIMEOUT_S)
            except TimeoutError:
                pass
