"""A WebSocket-aware fault proxy: network trouble between the client and any server.

The proxy listens on a free local port and relays every connection to its target (the mock or
staging), byte for byte, while it understands the WebSocket framing of both directions. It
can then hurt the traffic the way a network or a faulty load balancer does, without touching
the server:

* **latency** with jitter, per direction, preserving order (as TCP does);
* a **partition**: every frame held (pings too), then released in order when it heals, or the
  connection cut;
* a **TCP reset** (RST, no close frame) of a connection, both ways;
* **frame faults** on data messages selected by direction, by JSON ``type`` and by count:
  drop, duplicate, delay (the frame is overtaken by later ones), reorder (swapped with the
  next one), or close the connection after the N-th.

It runs on the library's event loop. The opening handshake is relayed unchanged except for the
``Host`` header (the target's); a target that refuses the upgrade (HTTP 401, ...) is relayed
as is. ``wss://`` targets are reached over TLS while clients connect in plain ``ws://`` on
loopback. Compressed frames (per-message deflate) are relayed but have no readable ``type``.

Every injected fault is reported to ``on_fault`` (the library records it in the History), so
checks and the log can show cause next to effect. Counting is per connection: "every 5th
``ai_response``" means the 5th, 10th, ... of each connection.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import itertools
import random
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.utils import apply_mask

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0, 1, 2
DATA_OPCODES = frozenset({OP_TEXT, OP_BINARY})
HANDSHAKE_LIMIT = 64 * 1024
#: A frame the proxy holds back to reorder is released after this long without a successor.
REORDER_HOLD_S = 1.0
#: Applications of one rule recorded individually; later ones are only counted.
MAX_RECORDED_PER_RULE = 1000
#: Reading from one side pauses while the other side has this much unwritten.
HIGH_WATER = 4 * 1024 * 1024
UPSTREAM_CONNECT_TIMEOUT_S = 10.0
#: A connection closed "after frame N" is reset this long after frame N passed.
CUT_GRACE_S = 0.05

#: Replies to a chat or throughput message (what "responses" means in a preset).
RESPONSE_TYPES = ("ai_response", "throughput_response")
DELIVERY_TYPES = ("pushed_message",)


class Direction(enum.Enum):
    """Which way frames flow: ``to_server`` (client frames), ``to_client`` (server frames) or both."""

    to_server = "to_server"
    to_client = "to_client"
    both = "both"

    def covers(self, way: Direction) -> bool:
        return self is Direction.both or self is way


class Action(enum.Enum):
    """What a frame rule does to a selected frame."""

    drop = "drop"
    duplicate = "duplicate"
    delay = "delay"
    reorder = "reorder"
    close = "close"


class PartitionEnd(enum.Enum):
    """How a partition ends: ``heal`` releases everything held, in order; ``cut`` resets the connections."""

    heal = "heal"
    cut = "cut"


class ProxyError(RuntimeError):
    """The proxy cannot do what was asked (bad target, unknown connection, bad fault)."""


# -- frames -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Unit:
    """One whole message (all its frames) or one control frame, as the bytes on the wire."""

    data: bytes
    opcode: int
    #: (start, end, mask) of each frame's payload inside ``data``.
    parts: list[tuple[int, int, bytes | None]]
    compressed: bool = False
    _info: dict[str, Any] | None = None
    #: The connection's dialect classifier (wire frame -> canonical frame) for server frames, so
    #: rules select by canonical type (``ai_response``) in every dialect; None: the wire type.
    classify: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def is_data(self) -> bool:
        return self.opcode in DATA_OPCODES

    def info(self) -> dict[str, Any]:
        """The frame's ``type`` and its ids (``message_id``, ``delivery_id``), decoded once."""
        if self._info is None:
            self._info = _describe(self)
        return self._info

    @property
    def type(self) -> str | None:
        return self.info().get("type")


def _describe(unit: Unit) -> dict[str, Any]:
    if not unit.is_data:
        return {"type": f"<control {unit.opcode}>"}
    if unit.compressed:
        return {"type": None, "note": "compressed"}
    payload = b"".join(
        apply_mask(unit.data[start:end], mask) if mask else unit.data[start:end] for start, end, mask in unit.parts
    )
    try:
        frame = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {"type": None, "note": "not JSON"}
    if not isinstance(frame, dict):
        return {"type": None, "note": "not a JSON object"}
    if unit.classify is not None:
        wire_type = frame.get("type")
        try:
            frame = unit.classify(frame)
        except Exception:  # noqa: BLE001 - a frame the dialect cannot read is selected by its wire type
            frame = {"type": wire_type}
    info: dict[str, Any] = {"type": frame.get("type") if isinstance(frame.get("type"), str) else None}
    for key in ("message_id", "delivery_id", "sequence_id"):
        if frame.get(key) is not None:
            info[key] = frame[key]
    return info


class FrameReader:
    """Splits one direction's byte stream into units; bytes of an unfinished frame are kept."""

    __slots__ = ("_buffer", "_fragment_compressed", "_fragment_opcode", "_fragments")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fragments: list[tuple[bytes, tuple[int, int, bytes | None]]] = []
        self._fragment_opcode = OP_TEXT
        self._fragment_compressed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer) + sum(len(raw) for raw, _ in self._fragments)

    def feed(self, data: bytes) -> list[Unit]:
        buffer = self._buffer
        buffer += data
        units: list[Unit] = []
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if size - position < 4:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 4], "big"), 4
            elif length == 127:
                if size - position < 10:
                    break
                length, header = int.from_bytes(buffer[position + 2 : position + 10], "big"), 10
            mask = None
            if second & 0x80:
                if size - position < header + 4:
                    break
                mask = bytes(buffer[position + header : position + header + 4])
                header += 4
            end = position + header + length
            if end > size:
                break
            raw = bytes(buffer[position:end])
            span = (header, header + length, mask)
            opcode, fin = first & 0x0F, bool(first & 0x80)
            position = end
            if opcode >= 8:  # control frames stand alone, even inside a fragmented message
                units.append(Unit(raw, opcode, [span]))
            elif opcode == OP_CONTINUATION or not fin:
                if opcode != OP_CONTINUATION:
                    self._fragment_opcode, self._fragment_compressed = opcode, bool(first & 0x40)
                self._fragments.append((raw, span))
                if fin:
                    units.append(self._join_fragments())
            else:
                units.append(Unit(raw, opcode, [span], compressed=bool(first & 0x40)))
        del buffer[:position]
        return units

    def _join_fragments(self) -> Unit:
        data, parts, offset = bytearray(), [], 0
        for raw, (start, end, mask) in self._fragments:
            data += raw
            parts.append((offset + start, offset + end, mask))
            offset += len(raw)
        self._fragments = []
        return Unit(bytes(data), self._fragment_opcode, parts, compressed=self._fragment_compressed)


# -- rules ------------------------------------------------------------------------------------


@dataclass
class FrameRule:
    """Selects data frames (direction, types, position) and applies an action to them.

    Matching frames are counted per connection from when the rule was added; the rule acts
    on the ``start``-th and then every ``every``-th after it, at most ``limit`` times in all.
    """

    action: Action
    direction: Direction = Direction.both
    types: frozenset[str] | None = None
    every: int = 1
    start: int | None = None
    limit: int | None = None
    delay_s: float = 0.0
    connection: int | None = None  # a ProxiedConnection id, or every connection
    #: Count a frame with a ``message_id`` only the first time that id passes (through any
    #: connection): resends after a reconnect are not counted. The ids are kept for the rule's life.
    distinct_ids: bool = False
    standing: bool = False
    id: int = field(default_factory=lambda: next(_rule_ids))
    applied: int = 0
    _seen: dict[int, int] = field(default_factory=dict)
    _ids: set[Any] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ProxyError(f"every must be at least 1, got {self.every}.")
        if self.start is not None and self.start < 1:
            raise ProxyError(f"start must be at least 1 (the first matching frame), got {self.start}.")
        if self.limit is not None and self.limit < 1:
            raise ProxyError(f"count must be at least 1, got {self.limit}.")
        if self.action is Action.delay and self.delay_s <= 0:
            raise ProxyError("A delay needs a positive duration.")

    @property
    def first(self) -> int:
        return self.start if self.start is not None else self.every

    def describe(self) -> str:
        """The rule in words: ``drop every 7th ai_response to the client``."""
        what = "frame" if not self.types else " or ".join(sorted(self.types))
        way = {Direction.to_client: " to the client", Direction.to_server: " to the server", Direction.both: ""}
        first, every = self.first, self.every
        resends = " (resent message_ids not counted)" if self.distinct_ids else ""
        if self.action is Action.close:
            return f"close the connection after {what} #{first}{way[self.direction]}{resends}"
        verb = f"delay by {self.delay_s * 1000:g} ms" if self.action is Action.delay else self.action.value
        if self.limit == 1:
            which = f"the next {what}" if first == 1 else f"{what} #{first}"
        elif first == every:
            which = f"every {what}" if every == 1 else f"every {_ordinal(every)} {what}"
        else:
            which = f"{what} #{first}" + ("" if every == 1 else f" and every {_ordinal(every)} after it")
            which += " onwards" if every == 1 else ""
        text = f"{verb} {which}{way[self.direction]}"
        if self.limit is not None and self.limit != 1:
            text += f", {self.limit} times at most"
        if self.distinct_ids:
            text += " (resent message_ids not counted)"
        return text

    def selects(self, connection: ProxiedConnection, way: Direction, unit: Unit) -> bool:
        """Counts ``unit`` if it matches and says whether the rule acts on it."""
        if self.connection is not None and self.connection != connection.id:
            return False
        if not self.direction.covers(way) or not unit.is_data:
            return False
        if self.types is not None and unit.type not in self.types:
            return False
        if self.limit is not None and self.applied >= self.limit:
            return False
        if self.distinct_ids:
            message_id = unit.info().get("message_id")
            if message_id is not None:
                if message_id in self._ids:
                    return False  # a resend: not counted
                self._ids.add(message_id)
        seen = self._seen.get(connection.id, 0) + 1
        self._seen[connection.id] = seen
        first = self.first
        return seen >= first and (seen - first) % self.every == 0

    def forget(self, connection_id: int) -> None:
        self._seen.pop(connection_id, None)


_rule_ids = itertools.count(1)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Latency:
    delay_s: float
    jitter_s: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if not self.jitter_s:
            return self.delay_s
        return max(0.0, self.delay_s + rng.uniform(-self.jitter_s, self.jitter_s))


# -- standing faults (presets) ----------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named standing fault, for whole runs: ``robot -v APEX_PROXY_FAULTS:NAME[=VALUE]``."""

    name: str
    default: int
    unit: str
    text: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("reorder_responses", 5, "N", "per connection, the 2nd, then every N-th (5th) response is overtaken by the next"),
        Preset("duplicate_responses", 5, "N", "per connection, the 1st, then every N-th (5th) response is sent twice"),
        Preset("drop_responses", 7, "N", "per connection, every N-th (7th) response is dropped"),
        Preset("duplicate_deliveries", 3, "N", "per connection, the 1st, then every N-th (3rd) offline delivery is sent twice"),
        Preset("drop_deliveries", 3, "N", "per connection, the 1st, then every N-th (3rd) offline delivery is dropped"),
        Preset("latency", 300, "ms", "every server frame arrives MS (300) ms late, ±10%"),
        Preset("close_after", 100, "N", "each connection is reset after its N-th (100th) client data frame"),
    )
}


def parse_preset(spec: str) -> tuple[list[FrameRule], Latency | None]:
    """The rules (and latency) of a standing fault ``NAME`` or ``NAME=VALUE`` (see :data:`PRESETS`)."""
    name, _, raw = spec.strip().partition("=")
    preset = PRESETS.get(name.strip())
    if preset is None:
        raise ProxyError(f"Unknown proxy fault '{name}'. Known: {', '.join(PRESETS)}.")
    value = preset.default
    if raw.strip():
        try:
            value = int(raw)
        except ValueError:
            raise ProxyError(f"Proxy fault '{name}' takes a whole number ({preset.unit}), got '{raw}'.") from None
        if value < 1:
            raise ProxyError(f"Proxy fault '{name}' needs a value of at least 1, got {value}.")
    responses, deliveries = frozenset(RESPONSE_TYPES), frozenset(DELIVERY_TYPES)
    to_client = Direction.to_client
    rules = {
        "reorder_responses": lambda: [FrameRule(Action.reorder, to_client, responses, every=value, start=2)],
        "duplicate_responses": lambda: [FrameRule(Action.duplicate, to_client, responses, every=value, start=1)],
        "drop_responses": lambda: [FrameRule(Action.drop, to_client, responses, every=value)],
        "duplicate_deliveries": lambda: [FrameRule(Action.duplicate, to_client, deliveries, every=value, start=1)],
        "drop_deliveries": lambda: [FrameRule(Action.drop, to_client, deliveries, every=value, start=1)],
        "close_after": lambda: [FrameRule(Action.close, Direction.to_server, None, every=value)],
        "latency": list,
    }[preset.name]()
    for rule in rules:
        rule.standing = True
    latency = Latency(value / 1000, value / 10000) if preset.name == "latency" else None
    return rules, latency


# -- one relayed connection --------------------------------------------------------------------


class _Pipe:
    """One direction of a relayed connection: parses units, applies faults, writes them out."""

    def __init__(self, connection: ProxiedConnection, way: Direction) -> None:
        self.connection = connection
        self.way = way
        self.reader = FrameReader()
        #: Server frames are classified by the connection's own codec of the target's dialect.
        codec = connection.proxy.codec_factory() if way is Direction.to_client and connection.proxy.codec_factory else None
        self.classify = None if codec is None or codec.identity else codec.classify
        self.handshake: bytearray | None = bytearray()  # None once the handshake is through
        self.framed = False  # False: relay raw bytes (before/without a 101 upgrade)
        self.out: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # written before ``out`` exists
        self.batch: list[bytes] | None = None
        self.held: list[Unit] = []  # frames held by a partition
        self.held_raw: list[bytes] = []  # bytes held by a partition before the upgrade
        #: Frames held to be overtaken: (frame, its hold timer, the types of its rule).
        self.reorder_held: deque[tuple[Unit, asyncio.TimerHandle, frozenset[str] | None]] = deque()
        self.latency: Latency | None = None
        self.delayed: deque[tuple[float, bytes]] = deque()
        self.delay_timer: asyncio.TimerHandle | None = None
        self.timers: set[asyncio.TimerHandle] = set()
        self.last_release = 0.0

    # -- input

    def feed(self, data: bytes) -> None:
        connection = self.connection
        if connection.cutting:
            return  # the connection is about to be reset: nothing more passes
        if self.handshake is not None or not self.framed:
            if connection.partitioned:
                self.held_raw.append(data)  # a partition holds handshakes too
            elif self.handshake is not None:
                self._feed_handshake(data)
            else:
                self.write(data)
            return
        units = self.reader.feed(data)
        if not units:
            return
        classify = self.classify
        if classify is not None:
            for unit in units:
                unit.classify = classify
        if self._fast():
            self.write(b"".join(unit.data for unit in units) if len(units) > 1 else units[0].data)
            return
        self.batch = []
        try:
            for unit in units:
                if connection.partitioned:
                    self.held.append(unit)
                elif not connection.cutting:
                    self.process(unit)
        finally:
            self.flush()
            self.batch = None

    def _fast(self) -> bool:
        return (
            not self.connection.partitioned
            and self.latency is None
            and not self.reorder_held
            and not self.connection.proxy.rules
        )

    def _feed_handshake(self, data: bytes) -> None:
        assert self.handshake is not None
        self.handshake += data
        end = self.handshake.find(b"\r\n\r\n")
        if end < 0:
            if len(self.handshake) > HANDSHAKE_LIMIT:
                self.connection.abort(f"handshake larger than {HANDSHAKE_LIMIT} bytes")
            return
        head, rest = bytes(self.handshake[: end + 4]), bytes(self.handshake[end + 4 :])
        self.handshake = None
        if self.way is Direction.to_server:
            head = self.connection.proxy.rewrite_request(head)
            self.framed = True  # the client speaks frames right after its request
        else:
            self.framed = head.startswith((b"HTTP/1.1 101", b"HTTP/1.0 101"))
            if not self.framed:
                # Refused upgrade: the client must not be parsed as frames either.
                self.connection.client_pipe_raw()
        self.write(head)
        if rest:
            self.feed(rest)

    # -- faults

    def process(self, unit: Unit) -> None:
        """Pass ``unit`` through the frame rules, then on (latency, write)."""
        connection = self.connection
        if unit.is_data:
            for rule in connection.proxy.rules:
                if rule.selects(connection, self.way, unit):
                    self._apply(rule, unit)  # the first rule that acts decides the frame's fate
                    return
            self.emit(unit)
            self._release_reordered(passed=unit)
            return
        self.emit(unit)

    def _apply(self, rule: FrameRule, unit: Unit) -> None:
        rule.applied += 1
        connection = self.connection
        connection.proxy.report(rule, connection, self.way, unit)
        action = rule.action
        if action is Action.drop:
            return
        if action is Action.duplicate:
            self.emit(unit)
            self.emit(unit)
            self._release_reordered(passed=unit)
            return
        if action is Action.delay:
            self._later(rule.delay_s, lambda: self._emit_after_delay(unit))
            return
        if action is Action.reorder:
            loop = connection.proxy.loop
            timer = loop.call_later(REORDER_HOLD_S, self._release_reordered, True)
            self.reorder_held.append((unit, timer, rule.types))
            return
        # close: this frame passes, nothing after it, then the connection is reset
        self.emit(unit)
        self.flush()
        connection.cut_soon()

    def _release_reordered(self, timed_out: bool = False, passed: Unit | None = None) -> None:
        """Emit frames held to be overtaken, now that a successor passed (or the hold ran out).

        A successor is a frame the held one's rule would have selected by type (the next
        response overtakes a held response, not a progress event of the next run in between);
        with ``passed`` None (the hold ran out, or the connection ends) everything goes.
        """
        held = self.reorder_held
        if passed is not None and held:
            types = held[0][2]
            if types is not None and passed.type not in types:
                return
        while held:
            unit, timer, _ = held.popleft()
            timer.cancel()
            self.emit(unit)
        if timed_out:
            self.flush()

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self.timers.discard(handle)  # type: ignore[arg-type]
            callback()

        handle = self.connection.proxy.loop.call_later(delay, fire)
        self.timers.add(handle)

    def _emit_after_delay(self, unit: Unit) -> None:
        if self.connection.closed:
            return
        self.emit(unit)
        self.flush()

    # -- output

    def emit(self, unit: Unit) -> None:
        """Send a unit on: through the latency queue when there is latency, else now (batched)."""
        if self.latency is not None:
            loop = self.connection.proxy.loop
            release = max(self.last_release, loop.time() + self.latency.sample(self.connection.proxy.rng))
            self.last_release = release
            self.delayed.append((release, unit.data))
            if self.delay_timer is None:
                self.delay_timer = loop.call_at(release, self._release_delayed)
            return
        if self.batch is not None:
            self.batch.append(unit.data)
        else:
            self.write(unit.data)

    def _release_delayed(self) -> None:
        self.delay_timer = None
        loop = self.connection.proxy.loop
        now = loop.time()
        ready: list[bytes] = []
        while self.delayed and self.delayed[0][0] <= now + 0.0005:
            ready.append(self.delayed.popleft()[1])
        if ready and not self.connection.closed:
            self.write(b"".join(ready))
        if self.delayed:
            self.delay_timer = loop.call_at(self.delayed[0][0], self._release_delayed)

    def set_latency(self, latency: Latency | None) -> None:
        self.latency = latency
        if latency is None and self.delayed:
            if self.delay_timer is not None:
                self.delay_timer.cancel()
                self.delay_timer = None
            ready = b"".join(data for _, data in self.delayed)
            self.delayed.clear()
            self.write(ready)

    def flush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, []
            self.write(b"".join(batch))

    def write(self, data: bytes) -> None:
        if self.out is None:
            self.pending.append(data)
            return
        if not self.out.is_closing():
            self.out.write(data)

    def attach(self, out: asyncio.Transport) -> None:
        self.out = out
        pending, self.pending = self.pending, []
        for data in pending:
            out.write(data)

    def heal(self) -> None:
        """The partition ended: what was held goes on, in order, through the rules."""
        held_raw, self.held_raw = self.held_raw, []
        for data in held_raw:
            self.feed(data)
        held, self.held = self.held, []
        self.batch = []
        try:
            for unit in held:
                if not self.connection.cutting:
                    self.process(unit)
        finally:
            self.flush()
            self.batch = None

    def cancel_timers(self) -> None:
        for handle in list(self.timers):
            handle.cancel()
        self.timers.clear()
        for _, timer, _ in self.reorder_held:
            timer.cancel()
        self.reorder_held.clear()
        if self.delay_timer is not None:
            self.delay_timer.cancel()
            self.delay_timer = None
        self.delayed.clear()
        self.held.clear()
        self.held_raw.clear()


class _Side(asyncio.Protocol):
    """The socket of one end (client or upstream); feeds its pipe, applies flow control."""

    def __init__(self, connection: ProxiedConnection, pipe: _Pipe, name: str) -> None:
        self.connection = connection
        self.pipe = pipe  # the pipe this side's incoming bytes go into
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        transport.set_write_buffer_limits(high=HIGH_WATER)
        if self is self.connection.client:
            self.connection.client_connected(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.pipe.feed(data)
        except Exception as error:  # noqa: BLE001 (a proxy bug must not kill the loop; it cuts the connection)
            self.connection.abort(f"proxy error while relaying {self.name} data: {error!r}")

    def eof_received(self) -> bool:
        self.connection.half_close(self)
        return True  # keep the other direction open until it closes too

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.side_lost(self, exc)

    # Flow control: when this side cannot write, stop reading the other side.
    def pause_writing(self) -> None:
        other = self.connection.other(self)
        if other is not None and other.transport is not None:
            other.transport.pause_reading()

    def resume_writing(self) -> None:
        other = self.connection.other(self)
        if other is not None and other.transport is not None and not other.transport.is_closing():
            other.transport.resume_reading()


class ProxiedConnection:
    """One client connection relayed to the target."""

    def __init__(self, proxy: FaultProxy, number: int) -> None:
        self.proxy = proxy
        self.id = number
        self.to_server = _Pipe(self, Direction.to_server)
        self.to_client = _Pipe(self, Direction.to_client)
        self.client = _Side(self, self.to_server, "client")
        self.upstream = _Side(self, self.to_client, "server")
        self.partition_held = False
        self.closed = False
        self.cutting = False
        #: The library's alias for this connection, once known (see FaultProxy.namer).
        self.label: str | None = None
        for pipe in self.pipes():
            pipe.latency = proxy.latency[pipe.way]

    def client_connected(self, transport: asyncio.Transport) -> None:
        """A client arrived: server frames go to it; connect to the target."""
        self.to_client.attach(transport)
        self.proxy.loop.create_task(self.connect_upstream(), name=f"proxy-upstream-{self.id}")

    def cut_soon(self, after_s: float = CUT_GRACE_S) -> None:
        """Relay nothing more, then reset: the last frame that passed gets time to arrive."""
        if self.cutting or self.closed:
            return
        self.cutting = True
        self.proxy.loop.call_later(after_s, self.reset, "closed after its last frame", False)

    @property
    def partitioned(self) -> bool:
        return self.partition_held or self.proxy.partitioned

    @property
    def client_address(self) -> Any:
        return self.client.peer

    def name(self) -> str:
        return self.proxy.name_of(self)

    def other(self, side: _Side) -> _Side | None:
        return self.upstream if side is self.client else self.client

    def pipes(self) -> tuple[_Pipe, _Pipe]:
        return self.to_server, self.to_client

    def client_pipe_raw(self) -> None:
        """The server refused the upgrade: relay whatever else the client sends as raw bytes."""
        self.to_server.framed = False

    async def connect_upstream(self) -> None:
        proxy = self.proxy
        try:
            transport, _ = await asyncio.wait_for(
                proxy.loop.create_connection(
                    lambda: self.upstream,
                    proxy.target_host,
                    proxy.target_port,
                    ssl=proxy.ssl_context,
                    server_hostname=proxy.target_host if proxy.ssl_context else None,
                ),
                UPSTREAM_CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            reason = f"the fault proxy could not reach {proxy.target_url}: {error or type(error).__name__}"
            if self.client.transport is not None and not self.client.transport.is_closing():
                body = reason.encode()
                self.client.transport.write(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                self.client.transport.close()
            self.closed = True
            proxy.discard(self)
            return
        if self.closed:
            transport.abort()
            return
        self.to_server.attach(transport)

    def half_close(self, side: _Side) -> None:
        other = self.other(side)
        if other is not None and other.transport is not None and other.transport.can_write_eof():
            try:
                other.transport.write_eof()
            except OSError:
                pass

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        other = self.other(side)
        if other is not None and other.transport is not None and not other.transport.is_closing():
            # Relay the way it ended: an error (reset) as an abort, a clean close as a close.
            if exc is not None:
                other.transport.abort()
            else:
                other.transport.close()
        self._finish()

    def reset(self, why: str, record: bool = True) -> None:
        """A TCP reset of both sides (SO_LINGER 0, then close: the peers see RST, no close frame)."""
        if self.closed:
            return
        if record:
            self.proxy.record(self, "reset", why=why)
        for side in (self.client, self.upstream):
            transport = side.transport
            if transport is None:
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            transport.abort()
        self._finish()

    def abort(self, why: str) -> None:
        self.proxy.record(self, "aborted", why=why)
        self.reset(why, record=False)

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        for pipe in self.pipes():
            pipe.cancel_timers()
        self.proxy.discard(self)


# -- the proxy -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class FaultRecord:
    """One injected fault: when (monotonic ns), what, and on which connection."""

    ts_ns: int
    fault: str
    connection: str
    details: dict[str, Any]


class FaultProxy:
    """A fault proxy in front of ``target_url``, listening on ``host`` (loopback) and a free port."""

    def __init__(
        self,
        target_url: str,
        *,
        host: str = "127.0.0.1",
        allow_remote: bool = False,
        on_fault: Callable[[FaultRecord], None] | None = None,
        namer: Callable[[ProxiedConnection], str | None] | None = None,
        seed: int = 1,
        codec_factory: Callable[[], Any] | None = None,
    ) -> None:
        parts = urlsplit(target_url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ProxyError(f"The proxy's target must be a ws:// or wss:// URL, got '{target_url}'.")
        if not allow_remote and not is_loopback(parts.hostname):
            raise ProxyError(
                f"The proxy's target {parts.hostname} is not a loopback address; pass allow_remote=True to "
                "put the proxy in front of a remote server (traffic then leaves this machine)."
            )
        if not is_loopback(host):
            raise ProxyError(f"The proxy listens on loopback only, got host '{host}'.")
        self.target_url = target_url
        self.target_host = parts.hostname
        self.target_port = parts.port or (443 if parts.scheme == "wss" else 80)
        self.target_netloc = parts.netloc.rsplit("@", 1)[-1]
        self.target_path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.ssl_context = ssl.create_default_context() if parts.scheme == "wss" else None
        self.remote = not is_loopback(parts.hostname)
        self.host = host
        self.port = 0
        self.on_fault = on_fault
        self.namer = namer
        #: Makes a codec of the target's dialect (``Dialect.codec``) per relayed connection: rules
        #: select server frames by their canonical type, whatever the wire spells.
        self.codec_factory = codec_factory
        self.rng = random.Random(seed)
        #: What the library's target URL was before this proxy was routed in (restored at stop).
        self.previous_target_url: str | None = None
        self.rules: list[FrameRule] = []
        self.latency: dict[Direction, Latency | None] = {Direction.to_server: None, Direction.to_client: None}
        self.partitioned = False
        self.connections: dict[int, ProxiedConnection] = {}
        self._numbers = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._scheduled: set[asyncio.TimerHandle] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # type: ignore[assignment]

    # -- lifecycle

    @property
    def url(self) -> str:
        """The WebSocket URL clients use to reach the target through the proxy."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.target_path}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> str:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        """Stop listening and cut every relayed connection."""
        server, self._server = self._server, None
        for handle in list(self._scheduled):
            handle.cancel()
        self._scheduled.clear()
        if server is not None:
            server.close()
        for connection in list(self.connections.values()):
            connection.reset("the proxy stopped", record=False)
        if server is not None:
            await server.wait_closed()

    def _accept(self) -> asyncio.Protocol:
        connection = ProxiedConnection(self, next(self._numbers))
        self.connections[connection.id] = connection
        return connection.client

    def discard(self, connection: ProxiedConnection) -> None:
        self.connections.pop(connection.id, None)
        for rule in self.rules:
            rule.forget(connection.id)

    # -- handshake

    def rewrite_request(self, head: bytes) -> bytes:
        """The client's upgrade request with the target's ``Host``."""
        lines = head.split(b"\r\n")
        host = self.target_netloc.encode()
        return b"\r\n".join(
            b"Host: " + host if line.lower().startswith(b"host:") else line for line in lines
        )

    # -- naming and recording

    def name_of(self, connection: ProxiedConnection) -> str:
        if connection.label is None and self.namer is not None:
            connection.label = self.namer(connection)
        return connection.label or f"proxied-{connection.id}"

    def record(self, connection: ProxiedConnection | None, fault: str, **details: Any) -> FaultRecord:
        name = connection.name() if connection is not None else "all"
        record = FaultRecord(time.perf_counter_ns(), fault, name, details)
        if self.on_fault is not None:
            self.on_fault(record)
        return record

    def report(self, rule: FrameRule, connection: ProxiedConnection, way: Direction, unit: Unit) -> None:
        if rule.applied > MAX_RECORDED_PER_RULE:
            return
        info = {k: v for k, v in unit.info().items() if k != "note"}
        details: dict[str, Any] = {"rule": rule.describe(), "direction": way.value, "frame": info}
        if rule.applied == MAX_RECORDED_PER_RULE:
            details["note"] = f"later applications of this rule are counted, not recorded (limit {MAX_RECORDED_PER_RULE})"
        self.record(connection, rule.action.value, **details)

    # -- faults

    def select(self, connection: int | None) -> list[ProxiedConnection]:
        if connection is None:
            return list(self.connections.values())
        found = self.connections.get(connection)
        if found is None:
            raise ProxyError(f"Connection {connection} no longer goes through the proxy.")
        return [found]

    def add_rule(self, rule: FrameRule) -> FrameRule:
        self.rules.append(rule)
        if not rule.standing:
            self.record(self.connections.get(rule.connection) if rule.connection else None, "rule added", rule=rule.describe())
        return rule

    def set_latency(self, direction: Direction, latency: Latency | None, connection: int | None = None) -> None:
        """Add (or with ``None`` remove) latency on every frame going ``direction``."""
        ways = [w for w in (Direction.to_server, Direction.to_client) if direction.covers(w)]
        for way in ways:
            if connection is None:
                self.latency[way] = latency
        for target in self.select(connection):
            for pipe in target.pipes():
                if pipe.way in ways:
                    pipe.set_latency(latency)
        text = "none" if latency is None else f"{latency.delay_s * 1000:g} ms ± {latency.jitter_s * 1000:g} ms"
        self.record(
            self.connections.get(connection) if connection else None,
            "latency",
            direction=direction.value,
            latency=text,
        )

    def partition(self, connection: int | None = None) -> None:
        """Hold every frame, both ways (pings too), until :meth:`end_partition`."""
        if connection is None:
            self.partitioned = True  # every connection, and new ones (ProxiedConnection.partitioned)
        else:
            for target in self.select(connection):
                target.partition_held = True
        self.record(self.connections.get(connection) if connection else None, "partition started")

    def end_partition(self, end: PartitionEnd, connection: int | None = None) -> int:
        """Heal (release what was held, in order) or cut (reset) the partitioned connections."""
        if connection is None:
            targets = [c for c in self.connections.values() if c.partitioned]
            self.partitioned = False
        else:
            targets = [c for c in self.select(connection) if c.partitioned]
        held = sum(len(pipe.held) for target in targets for pipe in target.pipes())
        self.record(
            self.connections.get(connection) if connection else None,
            f"partition {'healed' if end is PartitionEnd.heal else 'cut'}",
            frames_held=held,
        )
        for target in targets:
            target.partition_held = False
            if end is PartitionEnd.cut:
                target.reset("partition cut", record=False)
            else:
                for pipe in target.pipes():
                    pipe.heal()
        return held

    def reset(self, connection: int | None = None) -> int:
        targets = self.select(connection)
        for target in targets:
            target.reset("TCP reset injected")
        return len(targets)

    def clear(self, *, standing: bool = False) -> None:
        """Remove the injected rules and latency and heal partitions (standing faults stay unless asked)."""
        for handle in list(self._scheduled):
            handle.cancel()
        self._scheduled.clear()
        self.rules = [rule for rule in self.rules if rule.standing and not standing]
        if any(self.latency.values()):
            self.set_latency(Direction.both, None)
        if self.partitioned or any(c.partition_held for c in self.connections.values()):
            self.end_partition(PartitionEnd.heal)
        for connection in self.connections.values():
            for pipe in connection.pipes():
                pipe._release_reordered(True)

    def schedule(self, delay: float, action: Callable[[], Any]) -> None:
        """Run ``action`` on the loop ``delay`` seconds from now (faults injected while traffic flows)."""
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._scheduled.discard(handle)  # type: ignore[arg-type]
            try:
                action()
            except ProxyError as error:
                self.record(None, "scheduled fault not applied", why=str(error))

        handle = self.loop.call_later(delay, fire)
        self._scheduled.add(handle)

    def apply_standing(self, specs: Iterable[str]) -> list[str]:
        """Install standing faults by preset name; return their descriptions."""
        described = []
        for spec in specs:
            rules, latency = parse_preset(spec)
            for rule in rules:
                self.rules.append(rule)
                described.append(f"{spec}: {rule.describe()}")
            if latency is not None:
                self.latency[Direction.to_client] = latency
                described.append(f"{spec}: server frames {latency.delay_s * 1000:g} ms ± {latency.jitter_s * 1000:g} ms late")
        return described
