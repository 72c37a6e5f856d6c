"""The open-loop load engine: constant-arrival-rate sends over one or many connections.

How it measures (the rules a performance engineer checks first):

* **Open loop.** Every message has an intended send time fixed by the :class:`Schedule` before
  the first send. A sender that falls behind sends late and says so (``missed_sends``: sends
  more than ``late_threshold_s`` after their slot; their lateness goes into a histogram of its
  own); it never re-times the rest of the schedule.
* **No coordinated omission.** Latency is measured from the *intended* send time to the
  matching reply, on one monotonic clock (``time.perf_counter_ns`` on the library's loop
  thread), so a stalled server cannot hide behind a sender it slowed down.
* **The generator judges itself** (:mod:`.health`). Beside the server's figures every run
  keeps its own: late sends, writes that waited on a server that did not read (TCP
  backpressure, whose lateness is excused as the server's), event-loop lag and client CPU.
  When the generator fell behind beyond its bound, the run's rate and latency cannot judge the
  server (``LoadResult.generator``; the keywords then call those assertions inconclusive).
  A connection whose send waits longer than ``stall_timeout_s`` is *stalled*: nothing more is
  sent on it, so a deaf server cannot hold the run.
* **Bounded memory.** Latencies go into HDR histograms; per connection only counters and the
  interval sets of :mod:`.tracking` are kept; intended times are recomputed from the schedule.
  Nothing grows with the length of the run (``tests/unit/test_load_engine.py`` proves it).
* **Order per connection.** Message ``k`` of the run goes to connection ``k mod C`` as that
  connection's sequence number ``k div C``; replies are matched by ``message_id``
  (``<run>-<connection>-<sequence>``), so order, gaps, duplicates and loss are judged per
  connection, in arrival order, never after sorting.

Frames bypass the History (which keeps every frame) on purpose: a load run of a million
messages must not keep a million frames.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .console import console
from .health import DEFAULT_BEHIND_THRESHOLD_S, DEFAULT_MAX_LATE_FRACTION, FlowConnection, GeneratorHealth, LagProbe, SendClock, waits_on_peer
from .metrics import LatencyHistogram
from .schedule import Phase, Schedule
from ..dialects import ApexDialect, Dialect, SessionOpenError
from ..dialects.base import send_soon, shown_url
from .session import MAX_FRAME_BYTES, describe_open_error, describe_session_open
from .streams import CROSS_TALK, ORPHAN, StreamBook
from .tracking import ConnectionTracker

#: The load path's WebSocket client unless told (LoadPlan.transport, APEX_LOAD_TRANSPORT).
DEFAULT_TRANSPORT = "picows"
#: Replies that answer a message (processed by the server).
ANSWERS = frozenset({"throughput_response", "ai_response"})
#: Replies that settle a message without answering it.
OTHER_OUTCOMES = frozenset({"duplicate_rejected", "queue_full", "error"})
MESSAGE_TYPES = ("throughput_test", "user_message")
#: The scheduler yields to the readers at least this often while catching up on due sends.
SEND_BATCH = 64
#: The scheduler's shortest sleep (event-loop timers have millisecond resolution).
MIN_SLEEP_S = 0.001
#: Failure reasons kept per run (the rest are counted).
MAX_REASONS = 5
#: The rate-over-time timeline: about this many buckets per run, none shorter than MIN_BUCKET_S.
TIMELINE_BUCKETS = 240
MIN_BUCKET_S = 0.1
#: Buckets past this index (a drain far longer than the run) are not counted: bounded memory.
MAX_BUCKET_INDEX = 4 * TIMELINE_BUCKETS + 600
#: A run planned longer than this prints its progress to the console every PROGRESS_EVERY_S.
PROGRESS_AFTER_S = 4.0
PROGRESS_EVERY_S = 2.5


@dataclass
class LoadPlan:
    """Everything a load run needs, fixed before it starts."""

    url: str
    tokens: Sequence[str]
    phases: Sequence[Phase]
    connections: int = 1
    message_type: str = "throughput_test"
    content: str = "load test message"
    #: Pad each ``user_message``'s content to this many characters (0: ``content`` as is).
    message_size: int = 0
    #: How long one send may wait for the server to read (a full socket buffer: TCP
    #: backpressure) before its connection counts as *stalled*: its later messages are not
    #: sent (counted in ``blocked_sends``, the server's doing) so the run ends on time.
    stall_timeout_s: float = 5.0
    #: One message in n is sent with priority ``high`` (spread by a hash, see is_high); 0: none.
    high_priority_every: int = 0
    drain_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    #: A send later than this after its intended time counts as a missed send.
    late_threshold_s: float = 0.010
    #: The generator fell behind (the run's rate and latency are inconclusive) when more than
    #: ``max_late_fraction`` of its sends were later than ``behind_threshold_s`` for reasons
    #: of its own (see engine.health).
    behind_threshold_s: float = DEFAULT_BEHIND_THRESHOLD_S
    max_late_fraction: float = DEFAULT_MAX_LATE_FRACTION
    #: Reconnect a connection that closes, and resend its unanswered messages (same message_id).
    reconnect: bool = False
    #: Abort each connection after every n-th message it sends (injected drops); implies reconnect.
    drop_every: int = 0
    #: Sent as ``configure_session`` on each connection after it opens (None: nothing).
    configure: dict[str, Any] | None = None
    #: After the run, ask each connection's user for its agent state and count how often the
    #: server processed each message (``user_message`` only).
    verify_processing: bool = False
    name: str = "load"
    run_id: str = "load"
    connect_concurrency: int = 100
    #: How long an injected drop's reconnect waits for the offline deliveries announced in
    #: ``session_started.queued`` before resending.
    redelivery_wait_s: float = 2.0
    #: The wire protocol (MessagingLibrary.dialects); apex unless told.
    dialect: Dialect = field(default_factory=ApexDialect)
    #: Follow every chat message's agent run (engine.streams): its events, figures and integrity.
    streams: bool = False
    #: Print progress to the console every few seconds on a run longer than PROGRESS_AFTER_S.
    progress: bool = True
    #: A gap between two consecutive events of a run longer than this makes the run ``stalled``.
    stall_threshold_s: float = 1.0
    #: After every message has its outcome, wait until no stream event came for this long (a
    #: late event after a final must still be seen), within the drain timeout.
    quiet_s: float = 0.3
    #: The load path's WebSocket client: ``picows`` (the default: about half the client CPU per
    #: message of websockets' asyncio client, see benchmarks/) or ``websockets``; the environment
    #: variable APEX_LOAD_TRANSPORT sets the default (see connection_class).
    transport: str = field(default_factory=lambda: os.environ.get("APEX_LOAD_TRANSPORT", "").strip() or DEFAULT_TRANSPORT)

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError(f"A load run needs at least 1 connection, got {self.connections}.")
        if not self.tokens:
            raise ValueError("A load run needs a token for its connections.")
        if len(self.tokens) not in (1, self.connections):
            raise ValueError(f"Give one token, or one per connection ({self.connections}), not {len(self.tokens)}.")
        if self.message_type not in MESSAGE_TYPES:
            raise ValueError(f"Message type must be one of {', '.join(MESSAGE_TYPES)}, got '{self.message_type}'.")
        if self.high_priority_every < 0 or self.drop_every < 0:
            raise ValueError("high_priority_every and drop_every must be >= 0.")
        if self.streams and self.message_type != "user_message":
            raise ValueError("Agent runs are followed for chat messages only: use message_type user_message.")
        if self.verify_processing and self.message_type != "user_message":
            raise ValueError("verify_processing needs message_type user_message (throughput_test is not recorded).")
        if self.drop_every:
            self.reconnect = True
        if self.message_size < 0 or self.stall_timeout_s <= 0:
            raise ValueError("message_size must be >= 0 and stall_timeout_s > 0.")
        if self.message_size and self.message_type != "user_message":
            raise ValueError("message_size pads a user_message's content: use message_type user_message.")
        if self.message_size > len(self.content):
            self.content = self.content + " " + "x" * (self.message_size - len(self.content) - 1)

    def token_for(self, index: int) -> str:
        return self.tokens[index] if len(self.tokens) > 1 else self.tokens[0]


@dataclass
class PhaseFigures:
    """Per-phase counters: what was due, sent, answered, and when the answers came."""

    phase: Phase
    first_index: int
    scheduled: int
    sent: int = 0
    answered: int = 0
    first_send_ns: int = 0
    last_send_ns: int = 0
    first_answer_ns: int = 0
    last_answer_ns: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def send_rate(self) -> float:
        """Messages sent per second over the phase (its planned length, or longer if sends ran late)."""
        if not self.sent:
            return 0.0
        window = max(self.phase.duration_s, (self.last_send_ns - self.first_send_ns) / 1e9)
        return self.sent / window

    def receive_rate(self) -> float:
        """Answers per second while they arrived: (answers − 1) / (last answer − first answer).

        Measured over the answers' own window, so a constant delay (latency) does not lower it
        but a server that answers slower than the offered rate does. A phase whose answers all
        arrive at once is capped at its mean offered rate: no burst can look faster than what
        was sent.
        """
        if self.answered < 2:
            return 0.0
        span = (self.last_answer_ns - self.first_answer_ns) / 1e9
        offered = self.phase.mean_rate
        if span <= 0:
            return offered
        return min((self.answered - 1) / span, offered * self.answered / max(self.answered - 1, 1))

    def as_dict(self, run_latency: LatencyHistogram | None = None) -> dict[str, Any]:
        """``run_latency``: the run's histogram, for a run of one phase (not recorded twice)."""
        latency = run_latency if run_latency is not None else self.latency
        return {
            "name": self.phase.name,
            "target_rate": self.phase.rate,
            "start_rate": self.phase.start_rate,
            "duration_s": self.phase.duration_s,
            "scheduled": self.scheduled,
            "sent": self.sent,
            "answered": self.answered,
            "delivery_ratio": round(self.answered / self.scheduled, 6) if self.scheduled else None,
            "send_rate": round(self.send_rate(), 3),
            "receive_rate": round(self.receive_rate(), 3),
            "latency": latency.summary().as_dict(),
        }


class LoadConnection:
    """One connection of a load run: a reader task, a tracker, and reconnect logic."""

    def __init__(self, engine: LoadEngine, index: int) -> None:
        self.engine = engine
        self.index = index
        self.name = f"c{index}"
        self.prefix = f"{engine.plan.run_id}-{index}-"
        self.tracker = ConnectionTracker(index)
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.handshake_s = 0.0
        self.open_error = ""
        self.session_started: dict[str, Any] | None = None
        self.epoch_deliveries = 0
        self.catching_up = False
        #: The server stopped reading this connection for longer than the stall timeout.
        self.stalled = False
        self.reconnecting: asyncio.Task[None] | None = None
        self.injected = False
        self.closing = False
        self.gave_up = ""
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.acks: list[str] = []
        self.ack_task: asyncio.Task[None] | None = None
        self.progress = asyncio.Event()
        self.token = engine.plan.token_for(self.index)
        self.codec = engine.plan.dialect.codec(self.token)

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.reader is not None and not self.reader.done()

    @property
    def local_address(self) -> Any:
        """This end's (host, port) (the fault proxy names connections by it); None while not connected."""
        return self.ws.local_address if self.ws is not None else None

    @property
    def correlation(self) -> str:
        """How this connection's replies are matched to its messages (its dialect codec's way)."""
        return self.codec.correlation

    async def open(self, timeout: float) -> None:
        plan = self.engine.plan
        started = time.perf_counter_ns()
        args = plan.dialect.connect_args(plan.url, self.token)
        codec = plan.dialect.codec(self.token)
        try:
            self.ws = await connect(
                args.url,
                additional_headers=args.headers,
                subprotocols=args.subprotocols,
                open_timeout=timeout,
                compression=None,
                proxy=None,
                max_size=MAX_FRAME_BYTES,
                ping_interval=None,
                close_timeout=2,
                create_connection=FlowConnection,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
            self.open_error = describe_open_error(shown_url(plan.url), error)
            raise ConnectionError(self.open_error) from None
        try:
            early = await codec.open(self.ws, max(0.1, timeout - (time.perf_counter_ns() - started) / 1e9))
        except (SessionOpenError, ConnectionClosed, TimeoutError) as error:
            self.ws.transport.abort()
            reason = error if isinstance(error, SessionOpenError) else describe_session_open(self.ws, error)
            self.open_error = f"Connected to {shown_url(plan.url)} but the session did not open ({plan.dialect.describe()}): {reason}"
            raise ConnectionError(self.open_error) from None
        self._session_opened(codec, started, early)
        self.reader = asyncio.create_task(self._read(self.ws), name=f"load-reader-{self.name}")

    def _session_opened(self, codec: Any, started_ns: int, early: list[dict[str, Any]]) -> None:
        """The session is open (both transports): a new epoch, and the frames that came with the opening."""
        self.codec = codec
        self.handshake_s = (time.perf_counter_ns() - started_ns) / 1e9
        self.session_started = None
        self.epoch_deliveries = 0
        self.injected = False
        for frame in early:
            self._handle(frame if codec.identity else codec.classify(frame), time.perf_counter_ns())

    # -- reading -----------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        engine = self.engine
        loads = orjson.loads
        clock = time.perf_counter_ns
        handle = self._handle
        codec = self.codec
        identity = codec.identity
        try:
            async for raw in ws:
                ts = clock()
                try:
                    frame = loads(raw)
                except orjson.JSONDecodeError:
                    engine.unparseable += 1
                    continue
                if not isinstance(frame, dict):
                    engine.unparseable += 1
                    continue
                if not identity:
                    frame = codec.classify(frame)
                    answer = codec.reply_to_client(frame)
                    if answer is not None:
                        send_soon(self._send_frame(answer, encode=False))
                handle(frame, ts)
        except ConnectionClosed:
            pass
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"connection {self.name} closed"))
            self.pending.clear()
            self.progress.set()
            if not self.closing:
                self._on_lost(ws)

    def _handle(self, frame: dict[str, Any], ts: int) -> None:
        """One received canonical frame: settle a request, an answer or an outcome, or count it."""
        engine = self.engine
        run_prefix = engine.run_prefix
        plen = len(run_prefix)
        kind = frame.get("type")
        request_id = frame.get("request_id")
        if request_id is not None and request_id in self.pending:
            future = self.pending.pop(request_id)
            if not future.done():
                future.set_result(frame)
            return
        if kind == "agent_progress":
            if engine.streams is not None:
                self._progress(frame, ts)
            else:
                engine.other_frames += 1
            return
        if kind in ANSWERS or kind in OTHER_OUTCOMES:
            delivery_id = frame.get("delivery_id")
            if isinstance(delivery_id, str):
                self.epoch_deliveries += 1
                self._ack(delivery_id)
            message_id = frame.get("message_id")
            if not isinstance(message_id, str) or not message_id.startswith(run_prefix):
                if kind == "error":
                    engine.note_error(frame)
                else:
                    engine.unmatched += 1
                return
            connection, _, sequence = message_id[plen:].partition("-")
            try:
                owner = engine.by_index[int(connection)]
                seq = int(sequence)
            except (ValueError, KeyError):
                if not engine.other_slice(self, connection, kind, message_id, progress=False):
                    engine.unmatched += 1
                return
            if seq >= owner.tracker.sent:
                engine.unmatched += 1
                return
            if owner is not self and owner.token != self.token:
                engine.note_trust(
                    "cross_talk",
                    f"connection {self.name} received {kind} for message '{message_id}', which its user never sent "
                    f"(connection {owner.name}'s user did)",
                )
                if engine.streams is not None:
                    k = seq * engine.width + owner.index
                    engine.streams.foreign(
                        CROSS_TALK, self.name, kind, ts - engine.start_ns - engine.schedule.intended_offset_ns(k),
                        f"for message '{message_id}', which connection {owner.name}'s user sent",
                    )
                return
            k = seq * engine.width + owner.index
            book = engine.streams
            if book is not None:
                engine.last_stream_ns = ts
                intended = engine.start_ns + engine.schedule.intended_offset_ns(k)
                if kind in ANSWERS or frame.get("code") == "agent_error":
                    book.final((owner.index, seq), owner.name, message_id, intended,
                               "agent_error" if kind == "error" else kind, ts, run_id=frame.get("run_id"))
                else:
                    book.refused((owner.index, seq))
            if kind in ANSWERS:
                echoed = frame.get("sequence_id")
                if echoed is not None and echoed != seq:
                    engine.note_trust(
                        "wrong_echo", f"{kind} for message '{message_id}' on connection {self.name} echoes sequence_id {echoed}, but {seq} was sent"
                    )
                offset = engine.schedule.intended_offset_ns(k)
                latency = ts - engine.start_ns - offset
                if owner.tracker.on_answer(seq, latency, owner.name):
                    engine.on_answer(k, offset, latency, ts)
            else:
                owner.tracker.on_other_outcome(seq, kind)
                if kind == "queue_full":
                    engine.on_refused(k, ts)
                elif kind == "error":
                    engine.note_error(frame)
            return
        if kind == "session_started":
            if self.session_started is None:
                self.session_started = frame
            self.progress.set()
            return
        engine.other_frames += 1

    def _progress(self, frame: dict[str, Any], ts: int) -> None:
        """An agent run's progress event: find its run (by the run_id a netra client chose, else the
        message_id), and hand it to the stream book, or count it as orphan or cross-talk."""
        engine = self.engine
        book = engine.streams
        assert book is not None
        engine.last_stream_ns = ts
        prefix = engine.run_prefix
        event = str(frame.get("event"))
        run_id = frame.get("run_id")
        message_id = run_id if isinstance(run_id, str) and run_id.startswith(prefix) else frame.get("message_id")
        owner: LoadConnection | None = None
        seq = -1
        if isinstance(message_id, str) and message_id.startswith(prefix):
            connection, _, sequence = message_id[len(prefix):].partition("-")
            try:
                owner = engine.by_index[int(connection)]
                seq = int(sequence)
            except (ValueError, KeyError):
                if engine.other_slice(self, connection, event, message_id, progress=True):
                    return
                owner = None
        if owner is None or seq < 0 or seq >= owner.tracker.sent:
            shown = f"run_id '{run_id}'" if run_id is not None else f"message_id '{message_id}'"
            book.foreign(ORPHAN, self.name, event, None, f"at +{(ts - engine.start_ns) / 1e9:.3f} s into the load run "
                         f"names {shown}, a run this load run never started")
            return
        k = seq * engine.width + owner.index
        intended = engine.start_ns + engine.schedule.intended_offset_ns(k)
        if owner is not self and owner.token != self.token:
            label = f"run '{run_id}' (message '{message_id}')" if run_id not in (None, message_id) else f"run '{message_id}'"
            book.foreign(CROSS_TALK, self.name, event, ts - intended,
                         f"of {label}, which connection {owner.name}'s user started: another user's event")
            return
        book.event((owner.index, seq), owner.name, message_id, intended, event, ts,
                   run_id=run_id, tool=frame.get("tool_name"), text=frame.get("text"))

    def _ack(self, delivery_id: str) -> None:
        self.acks.append(delivery_id)
        if self.ack_task is None or self.ack_task.done():
            self.ack_task = asyncio.create_task(self._send_acks())

    async def _send_acks(self) -> None:
        await asyncio.sleep(0)  # gather the deliveries read in the same batch
        ids, self.acks = self.acks, []
        if ids and self.is_open and self.ws is not None:
            try:
                await self._send_frame({"type": "ack", "delivery_ids": ids})
            except ConnectionClosed:
                pass  # unacknowledged: the server delivers them again after the reconnect

    async def _send_frame(self, frame: dict[str, Any], encode: bool = True) -> None:
        """Send a (canonical, unless ``encode`` is false) control frame; closed: ConnectionClosed."""
        if self.ws is None:
            raise ConnectionClosed(None, None)
        wire = frame if (not encode or self.codec.identity) else self.codec.encode(frame)
        await self.ws.send(orjson.dumps(wire), text=True)

    def _on_lost(self, ws: ClientConnection) -> None:
        if self.injected:
            self.tracker.injected_drops += 1
        else:
            self.tracker.disconnects += 1
            self.engine.note_close(self.name, ws.close_code, ws.close_reason)
        if self.engine.plan.reconnect and not self.engine.stopping:
            self.catching_up = True
            self.reconnecting = asyncio.create_task(self._reconnect(), name=f"load-reconnect-{self.name}")

    # -- reconnecting ------------------------------------------------------------------------

    async def _reconnect(self) -> None:
        engine, plan, tracker = self.engine, self.engine.plan, self.tracker
        started = time.perf_counter_ns()
        delay = 0.02
        deadline = started + int(plan.connect_timeout_s * 1e9)
        while True:
            remaining = (deadline - time.perf_counter_ns()) / 1e9
            try:
                await self.open(max(0.1, remaining))
                break
            except ConnectionError as error:
                if time.perf_counter_ns() + delay * 1e9 >= deadline:
                    self.gave_up = str(error)
                    self.catching_up = False
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        tracker.reconnects += 1
        engine.reconnect_ns.record_ns(time.perf_counter_ns() - started)
        # Let the server's offline deliveries (replies finished while we were away) arrive
        # before resending, so a reply already on its way is not asked for again.
        await self._wait(lambda: self.session_started is not None, 1.0)
        queued = self.session_started.get("queued", 0) if self.session_started else 0
        if isinstance(queued, int) and queued > 0:
            await self._wait(lambda: self.epoch_deliveries >= queued, plan.redelivery_wait_s)
        try:
            for seq in list(tracker.unsettled_sequences()):
                await self._send(seq, resend=True)
            while tracker.sent < tracker.scheduled:
                await self._send(tracker.sent, resend=False)
        except ConnectionError:
            return  # lost again: that loss starts its own reconnect
        finally:
            if self.is_open:
                self.catching_up = False

    async def _wait(self, condition, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.is_open:
                return False
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass
        return True

    # -- sending -----------------------------------------------------------------------------

    def frame(self, seq: int) -> bytes:
        engine = self.engine
        plan = engine.plan
        k = seq * engine.width + self.index
        body: dict[str, Any] = {"type": plan.message_type, "message_id": f"{self.prefix}{seq}", "sequence_id": seq}
        if plan.message_type == "user_message":
            body["content"] = plan.content
        if engine.is_high(k):
            body["priority"] = "high"
        codec = self.codec
        return orjson.dumps(body if codec.identity else codec.encode(body))

    # What moves the bytes is the transport's: _write_backlog, _write_scheduled, _abort and
    # _close_transport (websockets here, picows in picows_transport.PicowsLoadConnection); the
    # bookkeeping around them is shared.

    async def _send(self, seq: int, resend: bool) -> None:
        """Send ``seq`` outside the schedule (a reconnect's resends and backlog); ConnectionError when closed."""
        if not self.is_open or self.ws is None:
            raise ConnectionError(f"connection {self.name} is not open")
        await self._write_backlog(self.frame(seq))
        tracker = self.tracker
        if resend:
            tracker.resent += 1  # a resend never triggers an injected drop: only new messages count
        else:
            tracker.sent = seq + 1
            self.engine.on_deferred_send(seq * self.engine.width + self.index)
            self._maybe_drop()

    async def send_scheduled(self, seq: int, intended_ns: int) -> None:
        """The scheduler's send of ``seq``; deferred while the connection is down or catching up."""
        tracker = self.tracker
        tracker.scheduled = seq + 1
        engine = self.engine
        engine._bucket(engine.offered_buckets, intended_ns)
        if self.catching_up:
            return  # the reconnect sends it (late) after resending what was lost
        if self.ws is None or not self.is_open:
            if engine.plan.reconnect and not self.gave_up:
                self.catching_up = True  # the close handling reconnects
            else:
                engine.unsent += 1
            return
        if self.stalled:
            engine.clock.blocked()  # the server stopped reading: not sent, and not the generator's doing
            return
        data = self.frame(seq)
        ts = time.perf_counter_ns()
        engine.clock.before(intended_ns, ts)
        if not await self._write_scheduled(data, ts):
            if not engine.plan.reconnect:
                engine.unsent += 1
            return
        tracker.sent = seq + 1
        engine.on_send(seq * engine.width + self.index, ts)
        self._maybe_drop()

    def _maybe_drop(self) -> None:
        every = self.engine.plan.drop_every
        if every and self.tracker.sent % every == 0 and self.is_open:
            self.injected = True
            self.catching_up = True
            self._abort()

    async def _write_backlog(self, data: bytes) -> None:
        """Write one frame, waiting as long as the server takes to read it; ConnectionError when closed."""
        try:
            await self.ws.send(data, text=True)  # type: ignore[union-attr]
        except ConnectionClosed:
            raise ConnectionError(f"connection {self.name} closed") from None

    async def _write_scheduled(self, data: bytes, ts: int) -> bool:
        """Write one scheduled frame (``ts``: when the send began); False if the connection closed first.

        A write that finds the socket buffer full waits for the server to read, at most the
        plan's stall timeout; then the frame stays buffered and the connection counts as
        stalled. The send clock learns whether the write waited on the peer.
        """
        ws = self.ws  # open: send_scheduled checked
        engine = self.engine
        paused, pauses = waits_on_peer(ws)
        try:
            if paused or ws.transport.get_write_buffer_size() + len(data) > ws.write_limit_high:
                # The socket buffer is (nearly) full: this send may wait for the server to read.
                # Bounded, so a server that stops reading cannot hold the whole run.
                await asyncio.wait_for(ws.send(data, text=True), engine.plan.stall_timeout_s)
            else:
                await ws.send(data, text=True)
        except ConnectionClosed:
            return False
        except TimeoutError:
            # The frame is written to the transport's buffer; the server has not read for the
            # stall timeout. Later messages of this connection are not sent.
            self.stalled = True
            engine.note_stall(self.name)
        finally:
            engine.clock.after(time.perf_counter_ns() - ts, paused or ws.pauses != pauses)
        return True

    def _abort(self) -> None:
        """Cut the connection at once, as a network failure would (no close handshake)."""
        self.ws.transport.abort()  # type: ignore[union-attr]

    # -- requests and closing ----------------------------------------------------------------

    async def request(self, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        if not self.is_open or self.ws is None:
            raise ConnectionError(f"connection {self.name} is not open")
        request_id = f"{self.engine.run_prefix}{self.index}-req-{len(self.pending)}-{time.perf_counter_ns()}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            await self._send_frame({**frame, "request_id": request_id})
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(request_id, None)

    async def close(self) -> None:
        self.closing = True
        if self.reconnecting is not None and not self.reconnecting.done():
            self.reconnecting.cancel()
            await asyncio.gather(self.reconnecting, return_exceptions=True)
        if self.ack_task is not None and not self.ack_task.done():
            await asyncio.gather(self.ack_task, return_exceptions=True)
        await self._close_transport()

    async def _close_transport(self) -> None:
        """The close handshake (at most 2 s, then an abort), then the reader's end (at most 2 s)."""
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 2.0)
            except TimeoutError:
                self.ws.transport.abort()
        if self.reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.reader), 2.0)
            except TimeoutError:
                self.reader.cancel()


class LoadEngine:
    """Runs one :class:`LoadPlan`: ``await open()``, ``await run()``, ``await close()``.

    ``part=(w, W)`` runs slice ``w`` of ``W`` (engine.workers): only the connections ``c`` with
    ``c mod W == w`` and their messages, on the run's one schedule; ``part=None`` builds an
    engine with no connection, into which the workers' slices are merged (:func:`merge_slices`).
    """

    def __init__(self, plan: LoadPlan, part: tuple[int, int] | None = (0, 1)) -> None:
        self.plan = plan
        self.schedule = Schedule(plan.phases)
        self.width = plan.connections
        self.run_prefix = f"{plan.run_id}-"
        self.part = part
        #: Marks this engine's progress lines (" (worker 1 of 2)" for a slice of a split run).
        self.label = ""
        if part is not None and not 0 <= part[0] < part[1]:
            raise ValueError(f"A load slice is (worker, workers) with 0 <= worker < workers, got {part}.")
        owned = range(part[0], plan.connections, part[1]) if part is not None else range(0)
        connection = connection_class(plan.transport)
        #: The transport that carries the run (picows falls back to websockets where it cannot load).
        self.transport = "websockets" if connection is LoadConnection else plan.transport
        self.connections: list[Any] = [connection(self, i) for i in owned]
        self.by_index: dict[int, LoadConnection] = {c.index: c for c in self.connections}
        #: Messages of this engine's connections (all of the schedule for one worker).
        self.scheduled_total = self.schedule.total if part == (0, 1) or part is None else self._owned_count(0, self.schedule.total)
        self.start_ns = 0
        self.stopping = False
        self.latency = LatencyHistogram()
        #: The generator's own health: lateness (excused when writes waited on the server),
        #: event-loop lag and CPU (see engine.health).
        self.clock = SendClock(plan.late_threshold_s, plan.behind_threshold_s)
        self.probe = LagProbe()
        self.thirds = [LatencyHistogram() for _ in range(3)]
        self.reconnect_ns = LatencyHistogram()
        self.phases = [
            PhaseFigures(phase, *self.schedule.phase_bounds(p)) for p, phase in enumerate(self.schedule.phases)
        ]
        if part is not None and part != (0, 1):
            for figures in self.phases:
                figures.scheduled = self._owned_count(figures.first_index, figures.first_index + figures.scheduled)
        self.deferred_sends = 0
        self.unsent = 0
        self.unmatched = 0
        #: Outcomes for a message of the same user's connection on another worker (other_slice).
        self.foreign_slice = 0
        #: Frames that contradicted what the client sent, by defect, and a few examples.
        self.trust: dict[str, int] = {}
        self.trust_examples: dict[str, list[str]] = {}
        self.unparseable = 0
        self.other_frames = 0
        self.error_codes: dict[str, int] = {}
        self.close_reasons: list[str] = []
        self.stalls = 0
        self.first_refusal_ns: int | None = None
        self.refused_high = 0
        self.answered_high = 0
        self.connect_time_s = 0.0
        self.configure_result: dict[str, Any] | None = None
        self.configure_problem = ""
        self.processing: dict[str, Any] | None = None
        self.send_done_ns = 0
        self.end_ns = 0
        #: Every agent run of the load run (plan.streams), else None.
        self.streams: StreamBook | None = StreamBook(plan.stall_threshold_s) if plan.streams else None
        self.last_stream_ns = 0
        self._third_ns = max(1, int(self.schedule.duration_s * 1e9 / 3))
        #: Offered (by intended send time) and answered (by arrival) messages per time bucket:
        #: the rate-over-time chart. Bounded: about TIMELINE_BUCKETS buckets, never under 100 ms.
        self.bucket_ns = int(max(MIN_BUCKET_S, self.schedule.duration_s / TIMELINE_BUCKETS) * 1e9)
        self.offered_buckets: list[int] = []
        self.answered_buckets: list[int] = []

    def _owned_count(self, first: int, end: int) -> int:
        """How many messages ``first <= k < end`` belong to this engine's connections."""
        width = self.width
        return sum((end - c + width - 1) // width - max(0, (first - c + width - 1) // width) for c in self.by_index if c < end)

    def owned_messages(self):
        """The run's message indexes ``k`` of this engine's connections, in order."""
        total, width = self.schedule.total, self.width
        if self.part == (0, 1):
            yield from range(total)
            return
        mine = sorted(self.by_index)
        for base in range(0, total, width):
            for c in mine:
                k = base + c
                if k >= total:
                    return
                yield k

    def _bucket(self, buckets: list[int], ts: int) -> None:
        index = (ts - self.start_ns) // self.bucket_ns
        if index < 0:
            index = 0
        elif index > MAX_BUCKET_INDEX:
            return
        while len(buckets) <= index:
            buckets.append(0)
        buckets[index] += 1

    def timeline(self) -> dict[str, Any]:
        """Offered and answered rates (msg/s) per bucket, from the start of the run."""
        size = max(len(self.offered_buckets), len(self.answered_buckets))
        bucket_s = self.bucket_ns / 1e9

        def rates(buckets: list[int]) -> list[float]:
            return [round(n / bucket_s, 3) for n in buckets + [0] * (size - len(buckets))]

        return {"bucket_s": bucket_s, "offered": rates(self.offered_buckets), "answered": rates(self.answered_buckets)}

    def progress_line(self) -> str:
        """One line for the console: elapsed / planned, sent, answered, the answer rate of the last bucket."""
        trackers = [c.tracker for c in self.connections]
        elapsed = max(0.0, (time.perf_counter_ns() - self.start_ns) / 1e9)
        sent = sum(t.sent for t in trackers)
        answered = sum(p.answered for p in self.phases)
        recent = self.answered_buckets[-2] if len(self.answered_buckets) >= 2 else 0
        rate = recent / (self.bucket_ns / 1e9)
        return (
            f"[apex] load '{self.plan.name}'{self.label}: {elapsed:.0f} of {self.schedule.duration_s:.0f} s, "
            f"sent {sent:,} of {self.schedule.total:,}, answered {answered:,}, answering {rate:,.0f} msg/s"
        )

    async def _report_progress(self) -> None:
        """Print :meth:`progress_line` to the console every PROGRESS_EVERY_S (never to the log)."""
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            console(self.progress_line())

    # -- schedule ----------------------------------------------------------------------------

    def is_high(self, k: int) -> bool:
        """One message in ``high_priority_every`` on average, spread by a fixed hash of ``k``.

        Not every n-th: a strict period lines up with the sender's millisecond batches and
        the server's read batches, so the high ones would always arrive first in a batch and
        win free slots by timing alone, hiding a server that ignores priority.
        """
        every = self.plan.high_priority_every
        return bool(every) and (((k * 2654435761) & 0xFFFFFFFF) >> 8) % every == 0

    # -- callbacks from the connections ------------------------------------------------------

    def on_send(self, k: int, ts: int) -> None:
        """Message ``k`` went out at ``ts`` (its lateness is in :attr:`clock`)."""
        self._phase_sent(k, ts)

    def on_deferred_send(self, k: int) -> None:
        """A scheduled message sent late by a reconnect's catch-up (not counted as missed)."""
        self.deferred_sends += 1
        self._phase_sent(k, time.perf_counter_ns())

    def _phase_sent(self, k: int, ts: int) -> None:
        figures = self.phases[self.schedule.phase_of(k)]
        if figures.sent == 0:
            figures.first_send_ns = ts
        figures.sent += 1
        figures.last_send_ns = ts

    def on_answer(self, k: int, offset_ns: int, latency_ns: int, ts: int) -> None:
        """The first answer to message ``k`` (intended ``offset_ns`` after the start)."""
        self.latency.record_ns(latency_ns)
        self._bucket(self.answered_buckets, ts)
        figures = self.phases[self.schedule.phase_of(k)]
        if len(self.phases) > 1:
            figures.latency.record_ns(latency_ns)
        if figures.answered == 0:
            figures.first_answer_ns = ts
        figures.answered += 1
        if ts > figures.last_answer_ns:
            figures.last_answer_ns = ts
        self.thirds[min(2, offset_ns // self._third_ns)].record_ns(latency_ns)
        if self.is_high(k):
            self.answered_high += 1

    def on_refused(self, k: int, ts: int) -> None:
        if self.first_refusal_ns is None:
            self.first_refusal_ns = ts
        if self.is_high(k):
            self.refused_high += 1

    def other_slice(self, receiver: LoadConnection, connection: str, kind: str, message_id: str, *, progress: bool) -> bool:
        """A frame about a message of connection ``connection``, which another worker runs
        (engine.workers): another user's is cross-talk, as it would be in one process; one of the
        same user's (a server that answers on any of a user's connections) is counted in
        ``foreign_slice``, since its message's tracker is in another process (so that message
        counts as lost there: run such a target with one worker). False: not another slice's."""
        try:
            index = int(connection)
        except ValueError:
            return False
        if self.part in (None, (0, 1)) or not 0 <= index < self.width:
            return False
        if self.plan.token_for(index) != receiver.token:
            if not progress:
                self.note_trust(
                    "cross_talk",
                    f"connection {receiver.name} received {kind} for message '{message_id}', which its user never sent "
                    f"(connection c{index}'s user did)",
                )
            if self.streams is not None:
                self.streams.foreign(CROSS_TALK, receiver.name, kind, None,
                                     f"for message '{message_id}', which connection c{index}'s user sent: another user's event")
        elif progress:
            self.foreign_slice += 1
        else:
            self.foreign_slice += 1
        return True

    def note_trust(self, defect: str, example: str) -> None:
        """A frame whose claim contradicts what the client sent (``cross_talk``, ``wrong_echo``)."""
        self.trust[defect] = self.trust.get(defect, 0) + 1
        examples = self.trust_examples.setdefault(defect, [])
        if len(examples) < MAX_REASONS:
            examples.append(example)

    def note_error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        self.error_codes[code] = self.error_codes.get(code, 0) + 1

    def note_stall(self, name: str) -> None:
        self.stalls += 1
        if len(self.close_reasons) < MAX_REASONS:
            self.close_reasons.append(
                f"connection {name} stalled: the server did not read for {self.plan.stall_timeout_s:g} s "
                "(TCP backpressure); its later messages were not sent"
            )

    def note_close(self, name: str, code: int | None, reason: str | None) -> None:
        if len(self.close_reasons) < MAX_REASONS:
            why = f", reason '{reason}'" if reason else ""
            self.close_reasons.append(f"connection {name} closed by the server or the network (code {code}{why})")

    # -- the run -----------------------------------------------------------------------------

    async def open(self) -> float:
        """Open every connection (at most ``connect_concurrency`` handshakes at once); return seconds."""
        plan = self.plan
        gate = asyncio.Semaphore(max(1, plan.connect_concurrency))

        async def _one(connection: LoadConnection) -> None:
            async with gate:
                try:
                    await connection.open(plan.connect_timeout_s)
                except ConnectionError:
                    return

        started = time.perf_counter_ns()
        await asyncio.gather(*(_one(c) for c in self.connections))
        self.connect_time_s = (time.perf_counter_ns() - started) / 1e9
        if plan.configure:
            await self._configure()
        return self.connect_time_s

    async def _configure(self) -> None:
        assert self.plan.configure is not None
        frame = {"type": "configure_session", **self.plan.configure}
        replies = await asyncio.gather(
            *(c.request(frame, 10.0) for c in self.connections if c.is_open), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                self.configure_problem = f"configure_session failed: {reply}"
            elif reply.get("type") == "error":
                self.configure_problem = f"configure_session answered error '{reply.get('code')}': {reply.get('message', '')}"
            else:
                self.configure_result = reply

    @property
    def opened(self) -> int:
        return sum(1 for c in self.connections if c.handshake_s > 0)

    async def run(self, lead_s: float = 0.02, start_ns: int | None = None) -> LoadResult:
        """Send the schedule, wait for the answers (at most ``drain_timeout_s``), return the figures.

        The schedule starts ``lead_s`` from now, or at ``start_ns`` (``perf_counter_ns``) when
        given: the workers of one run start together. A run planned longer than
        PROGRESS_AFTER_S prints its progress to the console every PROGRESS_EVERY_S (from the
        loop thread, straight to the console: never into the log).
        """
        self.start_ns = start_ns if start_ns is not None else time.perf_counter_ns() + int(lead_s * 1e9)
        self.probe.start()
        reporter = (
            asyncio.create_task(self._report_progress(), name="load-progress")
            if self.plan.progress and self.schedule.duration_s > PROGRESS_AFTER_S else None
        )
        try:
            await self._send_all()
            self.send_done_ns = time.perf_counter_ns()
            await self._drain()
        finally:
            if reporter is not None:
                reporter.cancel()
            await self.probe.stop()
        self.end_ns = time.perf_counter_ns()
        if self.plan.verify_processing:
            await self._verify_processing()
        return self.result()

    async def _send_all(self) -> None:
        schedule, connections, width = self.schedule, self.by_index, self.width
        start = self.start_ns
        clock, offset = time.perf_counter_ns, schedule.intended_offset_ns
        messages = self.owned_messages()
        k = next(messages, None)
        while k is not None:
            due = start + offset(k)
            now = clock()
            if due > now:
                # Never sleep under 1 ms: timers are no finer (uvloop would spin a core); a send
                # that wakes up to 1 ms late records that lateness, and latency includes it.
                await asyncio.sleep(max(MIN_SLEEP_S, (due - now) / 1e9))
                continue
            burst = 0
            while k is not None and burst < SEND_BATCH:
                due = start + offset(k)
                if due > now and due > clock():
                    break
                await connections[k % width].send_scheduled(k // width, due)
                k = next(messages, None)
                burst += 1
            if burst >= SEND_BATCH:
                await asyncio.sleep(0)

    def _settled(self) -> bool:
        for c in self.connections:
            tracker = c.tracker
            if c.catching_up or tracker.sent < tracker.scheduled and self.plan.reconnect and not c.gave_up:
                return False
            if tracker.unsettled and (c.is_open or self.plan.reconnect and not c.gave_up):
                return False
        return True

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.plan.drain_timeout_s
        while not self._settled() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.streams is not None:
            # Every message has its outcome: a stream event may still be on its way (one after a
            # final, a second final). Wait until none came for quiet_s, within the drain timeout.
            quiet_ns = int(self.plan.quiet_s * 1e9)
            while loop.time() < deadline and time.perf_counter_ns() - self.last_stream_ns < quiet_ns:
                await asyncio.sleep(0.01)
            self._finish_streams(timed_out=loop.time() >= deadline)

    def _finish_streams(self, timed_out: bool) -> None:
        """Runs with no final outcome are truncated; say why the wait ended, per connection."""
        book = self.streams
        assert book is not None
        reasons: dict[str, str] = {}
        unseen: list[tuple[str, str]] = []
        unseen_count = 0
        for c in self.connections:
            if not c.is_open:
                reasons[c.name] = "before the connection closed"
            else:
                reasons[c.name] = f"within the drain timeout ({self.plan.drain_timeout_s:g} s)" if timed_out else "when the load run ended"
            for seq in range(c.tracker.sent):
                key = (c.index, seq)
                if key not in book.active and not book.is_done(key):
                    unseen_count += 1
                    if len(unseen) < MAX_REASONS:
                        unseen.append((c.name, f"{c.prefix}{seq}"))
        book.finish(reasons, unseen, unseen_count)

    async def _verify_processing(self) -> None:
        """Count, per connection's user, how often the server processed each of its messages."""
        not_processed = twice = 0
        examples: list[str] = []
        unavailable = unsupported = ""
        for c in self.connections:
            if not c.is_open:
                unavailable = f"connection {c.name} is closed, its agent state was not read"
                continue
            try:
                state = await c.request({"type": "get_agent_state"}, 10.0)
            except (ConnectionError, TimeoutError) as error:
                unavailable = f"agent state of connection {c.name} not read: {error or 'timed out'}"
                continue
            if state.get("type") == "error" and state.get("code") == "unsupported":
                # The target lacks the query (the public platform): nothing can be counted.
                unsupported = "get_agent_state"
                unavailable = f"the target has no get_agent_state operation: {state.get('message') or 'unsupported'}"
                break
            ids = state.get("processed_message_ids")
            if not isinstance(ids, list):
                unavailable = f"agent state of connection {c.name} has no processed_message_ids"
                continue
            trimmed = state.get("processed_message_ids_trimmed")
            if isinstance(trimmed, int) and trimmed > 0:
                # The server keeps a bounded history: ids it dropped cannot be counted.
                unavailable = (
                    f"the server trimmed {trimmed} of connection {c.name}'s processed_message_ids "
                    "(its history limit): processing exactly once cannot be verified"
                )
                continue
            counts: dict[str, int] = {}
            for message_id in ids:
                if isinstance(message_id, str) and message_id.startswith(c.prefix):
                    counts[message_id] = counts.get(message_id, 0) + 1
            for seq in range(c.tracker.scheduled):
                n = counts.get(f"{c.prefix}{seq}", 0)
                if n == 0:
                    not_processed += 1
                    if len(examples) < MAX_REASONS:
                        examples.append(f"{c.prefix}{seq} never processed")
                elif n > 1:
                    twice += 1
                    if len(examples) < MAX_REASONS:
                        examples.append(f"{c.prefix}{seq} processed {n} times")
        self.processing = {
            "not_processed": not_processed,
            "processed_more_than_once": twice,
            "examples": examples,
            "unavailable": unavailable,
            "unsupported": unsupported,
        }

    async def close(self) -> None:
        self.stopping = True
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)

    # -- results -----------------------------------------------------------------------------

    def health(self) -> GeneratorHealth:
        """How the generator kept its schedule in this run (see engine.health)."""
        return GeneratorHealth.of(self.plan.name, self.clock, self.probe, self.plan.max_late_fraction)

    def result(self) -> LoadResult:
        trackers = [c.tracker for c in self.connections]
        scheduled = self.scheduled_total
        sent = sum(t.sent for t in trackers)
        answered = sum(t.answered_count for t in trackers)
        refused = sum(t.refused for t in trackers)
        end = self.end_ns or time.perf_counter_ns()
        open_errors = [c.open_error for c in self.connections if c.open_error and not c.handshake_s]
        every = self.plan.high_priority_every
        high_sent = sum(1 for t in trackers for seq in range(t.sent) if self.is_high(seq * self.width + t.index)) if every else 0
        return LoadResult(
            name=self.plan.name,
            schedule=self.schedule.describe(),
            message_type=self.plan.message_type,
            connections=self.plan.connections,
            opened=self.opened,
            connect_time_s=self.connect_time_s,
            connect_failures=open_errors[:MAX_REASONS],
            scheduled=scheduled,
            sent=sent,
            unsent=scheduled - sent,
            resent=sum(t.resent for t in trackers),
            answered=answered,
            delivered=sum(t.delivered_count for t in trackers),
            confirmed=sum(t.confirmed for t in trackers),
            refused=refused,
            errors=sum(t.errors for t in trackers),
            error_codes=dict(self.error_codes),
            lost=sum(t.unsettled for t in trackers) + (scheduled - sent),
            duplicated=sum(t.duplicated for t in trackers),
            reordered=sum(t.reordered for t in trackers),
            untracked=sum(t.untracked for t in trackers),
            unmatched=self.unmatched,
            foreign_slice=self.foreign_slice,
            trust=dict(self.trust),
            trust_examples={k: list(v) for k, v in self.trust_examples.items()},
            correlation=sorted({c.correlation for c in self.connections}),
            transport=self.transport,
            dialect=self.plan.dialect.describe(),
            unparseable=self.unparseable,
            other_frames=self.other_frames,
            missed_sends=self.clock.late_sends,
            stalled_connections=self.stalls,
            blocked_sends=self.clock.blocked_sends,
            deferred_sends=self.deferred_sends,
            late_threshold_s=self.plan.late_threshold_s,
            duration_s=(end - self.start_ns) / 1e9 if self.start_ns else 0.0,
            planned_duration_s=self.schedule.duration_s,
            latency=self.latency.summary().as_dict(),
            lateness=self.clock.lateness.summary().as_dict(),
            generator=self.health(),
            latency_p95_by_third=[h.percentile(95) for h in self.thirds],
            phases=[p.as_dict(self.latency if len(self.phases) == 1 else None) for p in self.phases],
            per_connection=[t.as_dict() for t in trackers],
            disconnects=sum(t.disconnects for t in trackers),
            close_reasons=list(self.close_reasons),
            injected_drops=sum(t.injected_drops for t in trackers),
            reconnects=sum(t.reconnects for t in trackers),
            reconnect_failures=[c.gave_up for c in self.connections if c.gave_up][:MAX_REASONS],
            reconnect_time=self.reconnect_ns.summary().as_dict(),
            first_refusal_s=(self.first_refusal_ns - self.start_ns) / 1e9 if self.first_refusal_ns else None,
            high_priority_sent=high_sent,
            high_priority_answered=self.answered_high,
            high_priority_refused=self.refused_high,
            configure_problem=self.configure_problem,
            processing=self.processing,
            examples=[e for t in trackers for e in t.examples][:MAX_REASONS],
            streams=self.streams.figures() if self.streams is not None else None,
            timeline=self.timeline(),
            phase_bounds=[
                {"name": p.phase.name, "start_s": self.schedule.phase_start_ns(i) / 1e9,
                 "end_s": self.schedule.phase_start_ns(i) / 1e9 + p.phase.duration_s, "target_rate": p.phase.rate}
                for i, p in enumerate(self.phases)
            ],
        )


@dataclass
class LoadResult:
    """The figures of one load run; ``as_dict()`` is what is written as JSON."""

    name: str
    schedule: str
    message_type: str
    connections: int
    opened: int
    connect_time_s: float
    connect_failures: list[str]
    scheduled: int
    sent: int
    unsent: int
    resent: int
    answered: int
    #: Answered, or confirmed by ``duplicate_rejected`` after a retry (processed earlier).
    delivered: int
    confirmed: int
    refused: int
    errors: int
    error_codes: dict[str, int]
    lost: int
    duplicated: int
    reordered: int
    untracked: int
    #: Outcome frames for no message of this run, frames that were not JSON objects, and
    #: frames of other types (neither outcomes nor replies to the run's requests).
    unmatched: int
    #: Outcomes for a message of the same user's connection run by another worker (see
    #: LoadEngine.other_slice): 0 in a run of one worker.
    foreign_slice: int
    #: Replies that contradicted what the client sent: ``cross_talk`` (another user's
    #: message), ``wrong_echo`` (a sequence_id that was not sent), with examples.
    trust: dict[str, int]
    trust_examples: dict[str, list[str]]
    #: How replies were matched to messages (the dialects' correlation), and the dialect.
    correlation: list[str]
    #: The WebSocket client that carried the run (``picows`` or ``websockets``).
    transport: str
    dialect: str
    unparseable: int
    other_frames: int
    missed_sends: int
    #: Connections whose server stopped reading for the stall timeout, and the messages not
    #: sent on them afterwards (TCP backpressure: the server's doing).
    stalled_connections: int
    blocked_sends: int
    deferred_sends: int
    late_threshold_s: float
    duration_s: float
    planned_duration_s: float
    latency: dict[str, float]
    lateness: dict[str, float]
    #: The generator's own health; when it fell behind, rate and latency are inconclusive.
    generator: GeneratorHealth
    latency_p95_by_third: list[float]
    phases: list[dict[str, Any]]
    per_connection: list[dict[str, Any]]
    disconnects: int
    close_reasons: list[str]
    injected_drops: int
    reconnects: int
    reconnect_failures: list[str]
    reconnect_time: dict[str, float]
    first_refusal_s: float | None
    high_priority_sent: int
    high_priority_answered: int
    high_priority_refused: int
    configure_problem: str
    processing: dict[str, Any] | None
    examples: list[str]
    #: The agent runs (engine.streams.StreamBook.figures) when the run followed them, else None.
    streams: dict[str, Any] | None = None
    #: Offered and answered msg/s per bucket (``bucket_s``) from the start: the rate chart.
    timeline: dict[str, Any] | None = None
    #: Each phase's name, start and end (s from the start) and target rate.
    phase_bounds: list[dict[str, Any]] = field(default_factory=list)
    #: Per worker when the run was split over several (engine.workers): its connections,
    #: counts, latency and generator health; empty for a run in one process.
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: Slices whose worker died or never reported (engine.workers): what was lost, and why.
    #: Their messages count as lost; the keywords fail the run.
    lost_slices: list[str] = field(default_factory=list)

    @property
    def delivery_ratio(self) -> float:
        """Delivered messages (answered, or confirmed after a retry) over the scheduled ones."""
        return self.delivered / self.scheduled if self.scheduled else 0.0

    @property
    def send_rate(self) -> float:
        window = max(self.planned_duration_s, 1e-9)
        return self.sent / window

    @property
    def receive_rate(self) -> float:
        """Answers per second over the run: the phases' answers over their answer windows."""
        rates = [p["receive_rate"] for p in self.phases if p["answered"] >= 2]
        if len(self.phases) == 1:
            return self.phases[0]["receive_rate"]
        total = sum(p["answered"] for p in self.phases)
        if not rates or not total:
            return 0.0
        # Weighted by answers: the run's overall answering rate across phases.
        return sum(p["receive_rate"] * p["answered"] for p in self.phases) / total

    def phase(self, name: str) -> dict[str, Any]:
        for p in self.phases:
            if p["name"] == name:
                return p
        known = ", ".join(p["name"] for p in self.phases)
        raise ValueError(f"Load run '{self.name}' has no phase '{name}' (phases: {known}).")

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["generator"] = self.generator.as_dict()
        data["delivery_ratio"] = round(self.delivery_ratio, 6)
        data["send_rate"] = round(self.send_rate, 3)
        data["receive_rate"] = round(self.receive_rate, 3)
        return data


TRANSPORTS = ("picows", "websockets")


def connection_class(transport: str) -> type[LoadConnection]:
    """The :class:`LoadConnection` class of a transport name (``picows`` or ``websockets``).

    picows carries the load path: the same frames, counters and checks as websockets' client at
    about half the client CPU per message (benchmarks/README.md). The keyword sessions stay on
    websockets (their cost is one round trip, and they use its features). Where picows cannot
    be imported (a platform without its wheel), the default falls back to websockets.
    """
    if transport == "websockets":
        return LoadConnection
    if transport == "picows":
        try:
            from .picows_transport import PicowsLoadConnection  # noqa: PLC0415 (an import cycle)
        except ImportError:
            if os.environ.get("APEX_LOAD_TRANSPORT", "").strip():
                raise
            return LoadConnection
        return PicowsLoadConnection
    raise ValueError(f"Unknown load transport '{transport}': use one of {', '.join(TRANSPORTS)}.")


async def run_load(plan: LoadPlan, workers: int | str | None = None, cluster: str | None = None) -> LoadResult:
    """Open, run and close a :class:`LoadPlan` (what the benchmark and simple callers use).

    ``workers`` (a number, or ``auto`` for this machine's cores) splits the run over that many
    processes; ``cluster`` (a Dask scheduler's address) runs the slices there, by default one
    per worker of the cluster (engine.workers). Neither: one process, this one.
    """
    from .workers import worker_run  # noqa: PLC0415 (workers imports this module)

    split = worker_run(plan, workers, cluster)
    engine: Any = split if split is not None else LoadEngine(plan)
    try:
        await engine.open()
        return await engine.run()
    finally:
        await engine.close()
