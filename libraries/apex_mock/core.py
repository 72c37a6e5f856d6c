"""Pure per-user semantics of the Apex mock (no sockets, no event loop).

Everything a user owns lives in :class:`UserCore`: settings, the inbound queue,
the duplicate window, the agent state, the configured agents, counters, the
response-stream fault pipeline and the offline queue (``offline.py``). The
server (``server.py``) feeds it decoded frames and drives its worker; tests
drive it directly with a fake clock.

Clocks are injectable:

* ``clock``   -- monotonic seconds (float); duplicate window and offline expiry;
* ``wall_ns`` -- wall-clock nanoseconds; ``processed_at_ns`` and ``queued_at``;
* ``rss``     -- callable returning the server process RSS in bytes.

What one user can make the mock keep is bounded by :class:`Limits` (server settings,
not changed by ``configure_session``); every bound reached is counted in a shared
:class:`LimitCounters` (``server_stats.limits``), and a bound that drops
information a check reads is also said in the reply that shows it
(``agent_state.processed_message_ids_trimmed``, ``all_agent_states.shared_state_trimmed``,
``queue_state.dedup_evicted_total``).
"""

from __future__ import annotations

import hashlib
import math
import re
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from . import faults as F
from .agents import normalize_stream
from .offline import OVERFLOW_POLICIES, PRIORITIES, OfflineQueue, Outcome

HEADROOM_PRIORITIES = frozenset({"critical", "high"})
HEADROOM_FRACTION = 0.1

TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]{1,200}")
USER_ID_RE = re.compile(r"user-[0-9a-f]{16}")

_NOTHING = object()


def user_id_for_token(token: str) -> str:
    """The identity derived from a token; the token itself is never echoed."""
    return "user-" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def headroom_for(capacity: int) -> int:
    return math.ceil(capacity * HEADROOM_FRACTION)


def retry_after_ms(waiting: int, per_message_ms: float) -> int:
    """``queue_full.retry_after_ms``: ``max(1, ceil(waiting x per_message_ms))``, where
    ``per_message_ms`` is the refused message's kind's processing time."""
    return max(1, math.ceil(round(waiting * per_message_ms, 6)))


# --------------------------------------------------------------------------- errors / replies


class ProtocolError(Exception):
    """A request the server refuses with an ``error`` frame.

    ``extra`` are further fields of the error frame (``too_large``: ``field``, ``limit``).
    """

    def __init__(self, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def frame(self, request: dict | None = None) -> dict:
        """The ``error`` frame; a field refused as too large is not echoed."""
        field_ = self.extra.get("field")
        if isinstance(request, dict) and field_ in ("message_id", "request_id"):
            request = {k: v for k, v in request.items() if k != field_}
        return {**error_frame(self.code, self.message, request), **self.extra}


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def reply(type_: str, request: Mapping[str, Any] | None, **fields_: Any) -> dict:
    """Build a reply frame; echo the request's ``request_id`` when it had one."""
    frame = {"type": type_, **fields_}
    if request is not None and "request_id" in request:
        frame["request_id"] = request["request_id"]
    return frame


def error_frame(code: str, message: str, request: dict | None = None) -> dict:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if isinstance(request, dict):
        rid = request.get("request_id", _NOTHING)
        if rid is not _NOTHING and is_scalar(rid):
            frame["request_id"] = rid
        mid = request.get("message_id")
        if isinstance(mid, str) and mid:
            frame["message_id"] = mid
    return frame


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What one user (and one client) can make the mock keep; server settings (``apex-mock
    --max-...``), not changed by ``configure_session``. Defaults are far above what the suites
    use (at most ~15,000 processed messages per user in a run, ids under 100 characters)."""

    max_id_length: int = 256  # message_id, request_id, shared_state_key, agent names, ... (characters)
    max_content_length: int = 65_536  # content of a user_message or push (characters)
    max_history: int = 100_000  # processed messages kept per user (ids + history), oldest dropped
    max_history_chars: int = 8_388_608  # characters of kept ids + contents per user, oldest dropped
    max_dedup_ids: int = 100_000  # message_ids in a user's duplicate window, oldest forgotten early
    max_agents: int = 64  # agents per configure_agents (and target_agents per message)
    max_shared_state_keys: int = 1_000  # shared_state keys per agent, oldest dropped
    max_queue_capacity: int = 10_000  # largest queue_capacity configure_session may set
    max_offline_capacity: int = 10_000  # largest offline_capacity configure_session may set
    max_users: int = 10_000  # users the server keeps (connections and pushes of new ones refused)
    max_outbox_bytes: int = 256 * 2**20  # unsent output per connection before it is cut off

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def problems(self) -> str:
        """Why these limits cannot be used ("" if they can)."""
        bad = [f"{name} must be an integer >= 1, got {value!r}" for name, value in self.as_dict().items()
               if not (_is_int(value) and value >= 1)]
        return "; ".join(bad)


@dataclass
class LimitCounters:
    """How often a bound was reached, server-wide (``server_stats.limits``)."""

    history_trimmed: int = 0  # processed messages dropped from ids + history (oldest first)
    dedup_evicted: int = 0  # message_ids forgotten before their duplicate window ended
    shared_state_trimmed: int = 0  # shared_state keys dropped (oldest first)
    oversized_refused: int = 0  # frames refused with error too_large
    users_refused: int = 0  # connections (HTTP 503) and pushes (error too_many_users) of new users
    outbox_closed: int = 0  # connections closed because they did not read their output

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_LIMITS = Limits()

#: Top-level string fields of any frame that are bounded by ``max_id_length``.
_ID_FIELDS = ("message_id", "request_id", "shared_state_key", "probe_id")  # user ids have a fixed form
#: List fields whose entries are bounded by ``max_id_length`` (and, but for ``delivery_ids``, whose
#: length is bounded by ``max_agents``).
_ID_LIST_FIELDS = ("agents", "target_agents", "delivery_ids")
_CLIP = 60
MAX_TYPE_LENGTH = 64  # the longest type is 20 characters; a longer one is refused, not echoed


def clip(text: str, limit: int = _CLIP) -> str:
    """``repr(text)``, cut to ``limit`` characters with the full length said (for error messages)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _too_large(name: str, what: str, size: int, limit: int, option: str, unit: str = "characters") -> ProtocolError:
    return ProtocolError(
        "too_large",
        f"{what} has {size} {unit}; the limit is {limit} (apex-mock {option})",
        field=name,
        limit=limit,
    )


def check_sizes(frame: dict, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise ProtocolError ``too_large`` if a string or list of ``frame`` exceeds ``limits``.

    Never truncates: an oversized frame is refused as a whole, naming the field and the limit.
    """
    get = frame.get
    t = get("type")
    if t.__class__ is str and len(t) > MAX_TYPE_LENGTH:
        raise ProtocolError("too_large", f"field 'type' has {len(t)} characters; the limit is {MAX_TYPE_LENGTH}",
                            field="type", limit=MAX_TYPE_LENGTH)
    max_id = limits.max_id_length
    for name in _ID_FIELDS:
        v = get(name)
        if v.__class__ is str and len(v) > max_id:
            raise _too_large(name, f"field '{name}'", len(v), max_id, "--max-id-length")
    v = get("content")
    if v.__class__ is str and len(v) > limits.max_content_length:
        raise _too_large("content", "field 'content'", len(v), limits.max_content_length,
                         "--max-content-length")
    for name in _ID_LIST_FIELDS:
        v = get(name)
        if v.__class__ is not list:
            continue
        if name != "delivery_ids" and len(v) > limits.max_agents:
            raise _too_large(name, f"field '{name}'", len(v), limits.max_agents, "--max-agents", "entries")
        for item in v:
            if item.__class__ is str and len(item) > max_id:
                raise _too_large(name, f"an entry of field '{name}'", len(item), max_id, "--max-id-length")


# --------------------------------------------------------------------------- field validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _required_str(frame: dict, name: str) -> str:
    v = frame.get(name)
    if v is None:
        raise ProtocolError("missing_field", f"missing required field '{name}'")
    if not isinstance(v, str) or not v:
        raise ProtocolError("bad_field", f"field '{name}' must be a non-empty string")
    return v


def _optional_seq(frame: dict, name: str = "sequence_id") -> int | None:
    v = frame.get(name)
    if v is not None and not _is_int(v):
        raise ProtocolError("bad_field", f"field '{name}' must be an integer or null")
    return v


def _optional_priority(frame: dict) -> str:
    v = frame.get("priority")
    if v is None:
        return "normal"
    if v not in PRIORITIES:
        raise ProtocolError("bad_field", f"field 'priority' must be one of {', '.join(PRIORITIES)}")
    return v


def _optional_str(frame: dict, name: str) -> str:
    v = frame.get(name)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ProtocolError("bad_field", f"field '{name}' must be a string")
    return v


def validate_user_id(frame: dict, name: str) -> str:
    """A required user id, as in ``session_started.user_id``."""
    v = _required_str(frame, name)
    if not USER_ID_RE.fullmatch(v):
        raise ProtocolError(
            "bad_field",
            f"field '{name}' must be a user id as in session_started.user_id "
            "('user-' followed by 16 lowercase hex digits)",
        )
    return v


@dataclass(frozen=True, slots=True)
class PushRequest:
    to_user: str
    message_id: str
    content: str
    priority: str
    ttl_s: float | None


def validate_push(frame: dict) -> PushRequest:
    """Fields of an admin ``push`` frame; raise ProtocolError (missing_field / bad_field)."""
    to_user = validate_user_id(frame, "to_user")
    message_id = _required_str(frame, "message_id")
    content = _optional_str(frame, "content")
    priority = _optional_priority(frame)
    ttl = frame.get("ttl_s")
    if ttl is not None and not (_is_number(ttl) and ttl > 0):
        raise ProtocolError("bad_field", "field 'ttl_s' must be a number > 0")
    return PushRequest(to_user, message_id, content, priority, ttl)


def validate_ack(frame: dict) -> list[str]:
    """``delivery_ids`` of an ``ack`` frame; raise ProtocolError (missing_field / bad_field)."""
    ids = frame.get("delivery_ids")
    if ids is None:
        raise ProtocolError("missing_field", "missing required field 'delivery_ids'")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ProtocolError("bad_field", "field 'delivery_ids' must be a list of non-empty strings")
    return ids


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    processing_ms: int = 10  # per user_message
    throughput_processing_ms: float = 0.0  # per throughput_test (fractions work on average)
    queue_capacity: int = 500
    duplicate_window_s: float = 300.0
    offline_capacity: int = 100
    overflow_policy: str = "drop_oldest"
    offline_ttl_s: float = 300.0
    #: agent runs that stream events (agents.py, docs/protocol.md §4.9): None = off, else the
    #: normalized settings (every key filled)
    agent_stream: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def copy(self) -> Settings:
        return Settings(**self.as_dict())


# name -> (check, expectation text)
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "processing_ms": (lambda v: _is_int(v) and 0 <= v <= 60_000, "an integer 0..60000"),
    "throughput_processing_ms": (lambda v: _is_number(v) and 0 <= v <= 60_000, "a number 0..60000"),
    "queue_capacity": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "duplicate_window_s": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "offline_capacity": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "overflow_policy": (lambda v: v in OVERFLOW_POLICIES, "one of " + ", ".join(OVERFLOW_POLICIES)),
    "offline_ttl_s": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "agent_stream": (lambda v: v is None or isinstance(v, dict), "null or an object (docs/protocol.md §4.9)"),
}


#: Settings whose largest value is a server limit: name -> (Limits field, apex-mock option).
SETTING_LIMITS: dict[str, tuple[str, str]] = {
    "queue_capacity": ("max_queue_capacity", "--max-queue-capacity"),
    "offline_capacity": ("max_offline_capacity", "--max-offline-capacity"),
}


def _setting_over_limit(name: str, value: Any, limits: Limits) -> ProtocolError | None:
    bound = SETTING_LIMITS.get(name)
    if bound is None:
        return None
    limit = getattr(limits, bound[0])
    if value <= limit:
        return None
    return ProtocolError("too_large", f"field '{name}' is {value}; the limit is {limit} (apex-mock {bound[1]})",
                         field=name, limit=limit)


def validate_settings(frame: dict, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Return the settings changes requested by a configure_session frame."""
    changes: dict[str, Any] = {}
    for key, value in frame.items():
        if key in ("type", "request_id"):
            continue
        rule = SETTING_RULES.get(key)
        if rule is None:
            raise ProtocolError(
                "bad_field", f"unknown field {clip(key)} (known: {', '.join(SETTING_RULES)})"
            )
        if key == "agent_stream":
            try:
                value = normalize_stream(value)
            except ValueError as exc:
                raise ProtocolError("bad_field", str(exc)) from None
        check, expected = rule
        if not check(value):
            raise ProtocolError("bad_field", f"field '{key}' must be {expected}")
        over = _setting_over_limit(key, value, limits)
        if over is not None:
            raise over
        changes[key] = value
    return changes


def settings_problems(settings: Settings, limits: Limits = DEFAULT_LIMITS) -> str:
    """Why ``settings`` breaks SETTING_RULES or ``limits`` ("" if it does not): for MockServer's defaults."""
    problems = []
    for name, (check, expected) in SETTING_RULES.items():
        value = getattr(settings, name)
        if not check(value):
            problems.append(f"{name} must be {expected}, got {value!r}")
        elif (over := _setting_over_limit(name, value, limits)) is not None:
            problems.append(over.message)
    return "; ".join(problems)


# --------------------------------------------------------------------------- jobs / agents


@dataclass(slots=True)
class Job:
    kind: str  # "user_message" | "throughput_test"
    message_id: str
    sequence_id: int | None
    priority: str
    request: Mapping[str, Any]  # what a reply echoes of the request (its request_id); small
    origin: Any = None  # opaque: the connection that sent it
    content: str = ""
    target_agents: tuple[str, ...] = ()
    shared_state_key: str | None = None
    end_of_conversation: bool = False


@dataclass(slots=True)
class AgentRecord:
    messages_processed: int = 0
    last_processed_sequence: int | None = None
    shared_state: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages_processed": self.messages_processed,
            "last_processed_sequence": self.last_processed_sequence,
            "shared_state": dict(self.shared_state),
        }


# --------------------------------------------------------------------------- response faults


class ResponseFaults:
    """Per-user pipeline applying the response-stream faults.

    ``on_produced(item)`` is called once per produced response (in production
    order) and returns the items to send now, in order. Items are opaque.
    Without faults it returns ``[item]``.
    """

    def __init__(self, faults: Iterable[str] = ()):
        faults = frozenset(faults)
        self.reorder = F.REORDER in faults
        self.duplicate = F.DUPLICATE_RESPONSE in faults
        self.drop = F.DROP_RESPONSE in faults
        self.produced = 0
        self.dropped = 0
        self.held: tuple[int, Any] | None = None  # (production number, item)

    def on_produced(self, item: Any) -> list[Any]:
        self.produced += 1
        n = self.produced
        released = []
        if self.held is not None:
            released.append(self.held[1])
            self.held = None
        now: list[Any] = []
        if self.drop and n % F.DROP_PERIOD == 0:
            self.dropped += 1
        elif self.reorder and n % F.REORDER_PERIOD == F.REORDER_OFFSET:
            self.held = (n, item)
        elif self.duplicate and n % F.DUPLICATE_PERIOD == F.DUPLICATE_OFFSET:
            now = [item, item]
        else:
            now = [item]
        return now + released

    @property
    def held_token(self) -> int | None:
        return None if self.held is None else self.held[0]

    def flush_held(self, token: int | None = None) -> list[Any]:
        """Release the held item (only if it is still the one identified by ``token``)."""
        if self.held is None or (token is not None and self.held[0] != token):
            return []
        item = self.held[1]
        self.held = None
        return [item]


# --------------------------------------------------------------------------- the user


class UserCore:
    """All state of one user. Not thread-safe; single event loop."""

    HANDLED_TYPES = frozenset(
        {
            "user_message",
            "throughput_test",
            "get_agent_state",
            "get_queue_state",
            "configure_session",
            "configure_agents",
            "get_all_agent_states",
            "ack",
        }
    )

    def __init__(
        self,
        user_id: str,
        settings: Settings | None = None,
        faults: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        rss: Callable[[], int] = lambda: 0,
        delivery_ids: Callable[[], str] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        counters: LimitCounters | None = None,
    ):
        self.user_id = user_id
        self.limits = limits
        #: shared by every user of a server (server_stats.limits)
        self.counters = counters if counters is not None else LimitCounters()
        self.settings = settings.copy() if settings else Settings()
        parsed = F.parse_faults(faults)  # a FaultSet keeps its parameters (wrong_sequence=N)
        self.faults = frozenset(parsed)
        #: wrong_sequence: every N-th ai_response with an integer sequence_id echoes it + 1 (0 = off)
        self._wrong_sequence_every = int(parsed.param(F.WRONG_SEQUENCE)) if F.WRONG_SEQUENCE in parsed else 0
        self._integer_sequence_replies = 0  # ai_responses produced with an integer sequence_id
        self.clock = clock
        self.wall_ns = wall_ns
        self.rss = rss
        # inbound
        self.queue: deque[Job] = deque()
        self.in_flight: Job | None = None
        self.seen: OrderedDict[str, tuple[float, int | None]] = OrderedDict()
        # agent state
        self.message_count = 0
        self.last_sequence_id: int | None = None
        # the newest max_history processed messages (and at most max_history_chars of them)
        self.processed_message_ids: deque[str] = deque()
        self.history: deque[str] = deque()
        self._history_chars = 0
        self.history_trimmed = 0  # processed messages dropped from the front of both
        self.dedup_evicted = 0  # message_ids forgotten before their duplicate window ended
        self.conversation_complete = False
        self._last_processed: tuple[str, int | None] | None = None
        self._prev: tuple | None = None  # snapshot before the last processed message
        # agents
        self.agents: dict[str, AgentRecord] = {}
        self._agent_tally: dict[str, int] = {}
        self._shared_state_trimmed: dict[str, int] = {}
        # counters
        self.max_queue_size_seen = 0
        self.admitted_total = 0
        self.processed_total = 0
        self.queue_full_total = 0
        self.duplicate_total = 0
        # outbound
        self.responses = ResponseFaults(self.faults)
        self.offline = OfflineQueue(
            lambda: self.settings,
            self.faults,
            clock=clock,
            wall_ns=wall_ns,
            new_delivery_id=delivery_ids,
        )
        self.throughput_dropped_total = 0  # throughput_responses with nobody to send them to

    # ------------------------------------------------------------------ dispatch

    def handle(self, frame: dict, origin: Any = None) -> tuple[list[dict], Job | None]:
        """Handle one decoded request frame of a user-scope type.

        Returns (immediate replies, admitted job or None). Validation problems
        become ``error`` frames; nothing is changed in that case. A frame with a string or
        list beyond ``limits`` is refused whole (``too_large``) before anything else.
        """
        t = frame.get("type")
        try:
            check_sizes(frame, self.limits)
            if t == "user_message":
                return self.admit_user_message(frame, origin)
            if t == "throughput_test":
                return self.admit_throughput(frame, origin)
            if t == "get_agent_state":
                return [self.agent_state(frame)], None
            if t == "get_queue_state":
                return [self.queue_state(frame)], None
            if t == "configure_session":
                return [self.configure_session(frame)], None
            if t == "configure_agents":
                return [self.configure_agents(frame)], None
            if t == "get_all_agent_states":
                return [self.all_agent_states(frame)], None
            if t == "ack":
                self.offline.ack(validate_ack(frame))
                return [], None  # ack has no reply
        except ProtocolError as exc:
            if exc.code == "too_large":
                self.counters.oversized_refused += 1
            return [exc.frame(frame)], None
        return [error_frame("unknown_type", f"unknown type {clip(str(t))}", frame)], None

    # ------------------------------------------------------------------ admission

    @property
    def waiting(self) -> int:
        """Admitted messages not yet started (the one being processed excluded)."""
        return len(self.queue)

    @property
    def headroom(self) -> int:
        return headroom_for(self.settings.queue_capacity)

    def _prune_seen(self, now: float) -> None:
        window = self.settings.duplicate_window_s
        seen = self.seen
        while seen:
            first = next(iter(seen.values()))
            if now - first[0] >= window:
                seen.popitem(last=False)
            else:
                break

    def _capacity_refusal(
        self, request: dict, message_id: str, seq: int | None, priority: str, per_message_ms: float
    ):
        if F.NO_BACKPRESSURE in self.faults:
            return None
        waiting = len(self.queue)
        cap = self.settings.queue_capacity
        limit = cap
        if priority in HEADROOM_PRIORITIES and F.IGNORE_PRIORITY not in self.faults:
            limit = cap + headroom_for(cap)
        if waiting < limit:
            return None
        self.queue_full_total += 1
        return reply(
            "queue_full",
            request,
            message_id=message_id,
            sequence_id=seq,
            priority=priority,
            queue_size=waiting,
            capacity=cap,
            retry_after_ms=retry_after_ms(waiting, per_message_ms),
        )

    def _enqueue(self, job: Job) -> None:
        self.queue.append(job)
        self.admitted_total += 1
        self.max_queue_size_seen = max(self.max_queue_size_seen, len(self.queue))

    def admit_user_message(self, frame: dict, origin: Any = None) -> tuple[list[dict], Job | None]:
        message_id = _required_str(frame, "message_id")
        content = frame.get("content")
        if content is None:
            content = ""
        elif not isinstance(content, str):
            raise ProtocolError("bad_field", "field 'content' must be a string")
        seq = _optional_seq(frame)
        priority = _optional_priority(frame)
        targets_raw = frame.get("target_agents")
        targets: tuple[str, ...] = ()
        if targets_raw is not None:
            if not isinstance(targets_raw, list) or not all(
                isinstance(a, str) and a for a in targets_raw
            ):
                raise ProtocolError(
                    "bad_field", "field 'target_agents' must be a list of non-empty strings"
                )
            if len(set(targets_raw)) != len(targets_raw):
                raise ProtocolError("bad_field", "field 'target_agents' must not repeat an agent")
            unknown = [a for a in targets_raw if a not in self.agents]
            if unknown:
                raise ProtocolError(
                    "bad_field",
                    f"field 'target_agents' names unconfigured agent(s) {', '.join(unknown)}"
                    " (use configure_agents first)",
                )
            targets = tuple(targets_raw)
        key = frame.get("shared_state_key")
        if key is not None and (not isinstance(key, str) or not key):
            raise ProtocolError("bad_field", "field 'shared_state_key' must be a non-empty string")
        eoc = frame.get("end_of_conversation")
        if eoc is not None and not isinstance(eoc, bool):
            raise ProtocolError("bad_field", "field 'end_of_conversation' must be a boolean")

        # 1. idempotency (per user)
        now = self.clock()
        self._prune_seen(now)
        if F.NO_DEDUP not in self.faults:
            previous = self.seen.get(message_id)
            if previous is not None:
                self.duplicate_total += 1
                return [
                    reply(
                        "duplicate_rejected",
                        frame,
                        message_id=message_id,
                        sequence_id=seq,
                        original_sequence_id=previous[1],
                    )
                ], None
        # 2. capacity
        refusal = self._capacity_refusal(frame, message_id, seq, priority, self.settings.processing_ms)
        if refusal is not None:
            return [refusal], None
        # 3. admitted
        seen = self.seen
        seen[message_id] = (now, seq)
        seen.move_to_end(message_id)
        if len(seen) > self.limits.max_dedup_ids:  # bounded by count as well as by time
            seen.popitem(last=False)
            self.dedup_evicted += 1
            self.counters.dedup_evicted += 1
        job = Job(
            kind="user_message",
            message_id=message_id,
            sequence_id=seq,
            priority=priority,
            request=_request_echo(frame),
            origin=origin,
            content=content,
            target_agents=targets,
            shared_state_key=key,
            end_of_conversation=bool(eoc),
        )
        self._enqueue(job)
        return [], job

    def admit_throughput(self, frame: dict, origin: Any = None) -> tuple[list[dict], Job | None]:
        """throughput_test: same queue and backpressure, no dedup, no agent-state bookkeeping.

        The lean path: validate, check capacity, enqueue. No copy of the frame is kept
        beyond its request_id.
        """
        message_id = _required_str(frame, "message_id")
        seq = _optional_seq(frame)
        priority = _optional_priority(frame)
        if len(self.queue) >= self.settings.queue_capacity:  # else nothing can refuse it
            refusal = self._capacity_refusal(
                frame, message_id, seq, priority, self.settings.throughput_processing_ms
            )
            if refusal is not None:
                return [refusal], None
        job = Job(
            kind="throughput_test",
            message_id=message_id,
            sequence_id=seq,
            priority=priority,
            request=_request_echo(frame),
            origin=origin,
        )
        self._enqueue(job)
        return [], job

    # ------------------------------------------------------------------ processing

    def processing_s(self, job: Job) -> float:
        """How long ``job`` takes, in seconds, read when it starts: ``throughput_processing_ms``
        for a throughput_test, ``processing_ms`` for a user_message."""
        settings = self.settings
        if job.kind == "throughput_test":
            ms: float = settings.throughput_processing_ms
        else:
            ms = settings.processing_ms
        return ms / 1000

    def next_job(self) -> Job | None:
        """Start processing the oldest admitted message (FIFO by admission)."""
        if self.in_flight is not None:
            return None
        if not self.queue:
            return None
        self.in_flight = self.queue.popleft()
        return self.in_flight

    def complete(self, job: Job) -> dict:
        """Finish processing ``job``: update state, return the response frame."""
        try:
            if job.kind == "throughput_test":
                self.processed_total += 1
                return reply(
                    "throughput_response", job.request, message_id=job.message_id, sequence_id=job.sequence_id
                )
            return self._complete_user_message(job)
        finally:
            if self.in_flight is job:
                self.in_flight = None

    def _complete_user_message(self, job: Job) -> dict:
        ids, history = self.processed_message_ids, self.history
        self._prev = (
            self.message_count,
            self.last_sequence_id,
            len(ids) + self.history_trimmed,  # positions counted from the first message ever
            len(history) + self.history_trimmed,
            self.conversation_complete,
            self._last_processed,
        )
        seq = job.sequence_id
        self.message_count += 1
        self.last_sequence_id = seq
        ids.append(job.message_id)
        history.append(job.content)
        self._history_chars += len(job.message_id) + len(job.content)
        limits = self.limits
        while len(ids) > 1 and (len(ids) > limits.max_history or self._history_chars > limits.max_history_chars):
            self._history_chars -= len(ids.popleft()) + len(history.popleft())
            self.history_trimmed += 1
            self.counters.history_trimmed += 1
        self._last_processed = (job.message_id, seq)
        if job.end_of_conversation:
            self.conversation_complete = True
        self.processed_total += 1

        contributing = []
        key = job.shared_state_key or job.message_id
        value = f"{job.message_id}@{seq}"
        desync = F.AGENT_DESYNC in self.faults and len(job.target_agents) >= 2
        for i, name in enumerate(job.target_agents):
            agent = self.agents.get(name)
            if agent is None:  # agents reconfigured while the message waited
                continue
            recorded_seq, recorded_value = seq, value
            if desync and i >= 1:
                recorded_value = value + "~stale"
                if seq is not None:
                    recorded_seq = seq - 1
            agent.messages_processed += 1
            self._agent_tally[name] = self._agent_tally.get(name, 0) + 1
            agent.last_processed_sequence = recorded_seq
            shared = agent.shared_state
            if key not in shared and len(shared) >= limits.max_shared_state_keys:
                del shared[next(iter(shared))]  # the oldest key
                self._shared_state_trimmed[name] = self._shared_state_trimmed.get(name, 0) + 1
                self.counters.shared_state_trimmed += 1
            shared[key] = recorded_value
            contributing.append({"agent": name, "processed_sequence": recorded_seq})

        echoed = seq
        if self._wrong_sequence_every and seq is not None:
            self._integer_sequence_replies += 1
            if self._integer_sequence_replies % self._wrong_sequence_every == 0:
                echoed = seq + 1  # wrong_sequence: only the echo lies; the state above keeps seq
        return reply(
            "ai_response",
            job.request,
            message_id=job.message_id,
            sequence_id=echoed,
            priority=job.priority,
            content="Response to: " + job.content,
            contributing_agents=contributing,
            processed_at_ns=self.wall_ns(),
        )

    # ------------------------------------------------------------------ state queries

    def _state_view(self) -> tuple:
        """(count, last_seq, ids, history, complete, last_processed) as reported; ids and
        history are the kept ones (``history_trimmed`` older ones were dropped)."""
        if F.STALE_STATE in self.faults and self._prev is not None:
            count, last_seq, n_ids, n_hist, complete, last = self._prev
            trimmed = self.history_trimmed
            return (
                count,
                last_seq,
                list(itertools.islice(self.processed_message_ids, max(0, n_ids - trimmed))),
                list(itertools.islice(self.history, max(0, n_hist - trimmed))),
                complete,
                last,
            )
        return (
            self.message_count,
            self.last_sequence_id,
            list(self.processed_message_ids),
            list(self.history),
            self.conversation_complete,
            self._last_processed,
        )

    def _invariants_broken(self, count, last_seq, ids, history, last) -> bool:
        trimmed = self.history_trimmed
        if not (count == len(ids) + trimmed == len(history) + trimmed):
            return True
        if len(set(ids)) != len(ids):
            return True
        if count == 0:
            return last_seq is not None or last is not None
        return last is None or last[0] != ids[-1] or last[1] != last_seq

    def corrupted(self) -> bool:
        count, last_seq, ids, history, _complete, last = self._state_view()
        return self._invariants_broken(count, last_seq, ids, history, last)

    def total_objects(self) -> int:
        self._prune_seen(self.clock())
        return (
            len(self.processed_message_ids)
            + len(self.history)
            + len(self.seen)
            + len(self.queue)
            + (1 if self.in_flight is not None else 0)
            + sum(1 + len(a.shared_state) for a in self.agents.values())
            + self.offline_held()
            + (1 if self.responses.held is not None else 0)
        )

    def agent_state(self, request: dict | None = None) -> dict:
        count, last_seq, ids, history, complete, last = self._state_view()
        return reply(
            "agent_state",
            request,
            user_id=self.user_id,
            message_count=count,
            last_sequence_id=last_seq,
            processed_message_ids=ids,
            # > 0: the oldest ids (and history) were dropped at --max-history / --max-history-chars,
            # so processed_message_ids is not every processed message
            processed_message_ids_trimmed=self.history_trimmed,
            conversation_context={"history": history, "message_count": count},
            conversation_complete=complete,
            memory_usage={"rss": self.rss(), "total_objects": self.total_objects()},
            corrupted=self._invariants_broken(count, last_seq, ids, history, last),
        )

    def offline_held(self) -> int:
        """Offline entries held for the user (waiting + unacked), after a sweep."""
        self.offline.sweep()
        return self.offline.held

    def queue_state(self, request: dict | None = None) -> dict:
        offline = self.offline
        offline.sweep()
        settings = self.settings
        return reply(
            "queue_state",
            request,
            user_id=self.user_id,
            queue_size=len(self.queue),
            in_flight=1 if self.in_flight is not None else 0,
            capacity=self.settings.queue_capacity,
            headroom=self.headroom,
            max_queue_size_seen=self.max_queue_size_seen,
            admitted_total=self.admitted_total,
            processed_total=self.processed_total,
            queue_full_total=self.queue_full_total,
            duplicate_total=self.duplicate_total,
            dedup_evicted_total=self.dedup_evicted,
            processing_ms=settings.processing_ms,
            throughput_processing_ms=settings.throughput_processing_ms,
            throughput_dropped_total=self.throughput_dropped_total,
            offline_size=offline.waiting_count,
            offline_unacked=offline.unacked_count,
            offline_capacity=settings.offline_capacity,
            overflow_policy=settings.overflow_policy,
            offline_ttl_s=settings.offline_ttl_s,
            offline_queued_total=offline.queued_total,
            offline_delivered_total=offline.delivered_total,
            offline_dropped_total=offline.dropped_total,
            offline_rejected_total=offline.rejected_total,
            offline_expired_total=offline.expired_total,
            offline_redelivered_total=offline.redelivered_total,
        )

    def configure_session(self, request: dict) -> dict:
        changes = validate_settings(request, self.limits)
        for key, value in changes.items():
            setattr(self.settings, key, value)
        return reply("session_configured", request, **self.settings.as_dict())

    def configure_agents(self, request: dict) -> dict:
        agents = request.get("agents")
        if agents is None:
            raise ProtocolError("missing_field", "missing required field 'agents'")
        if (
            not isinstance(agents, list)
            or not agents
            or not all(isinstance(a, str) and a for a in agents)
            or len(set(agents)) != len(agents)
        ):
            raise ProtocolError(
                "bad_field", "field 'agents' must be a non-empty list of unique non-empty strings"
            )
        check_sizes({"agents": agents}, self.limits)
        self.agents = {name: AgentRecord() for name in agents}
        self._agent_tally = {name: 0 for name in agents}
        self._shared_state_trimmed = {}
        return reply("agents_configured", request, agents=list(agents))

    def all_agent_states(self, request: dict | None = None) -> dict:
        agents_broken = any(
            rec.messages_processed != self._agent_tally.get(name, 0)
            for name, rec in self.agents.items()
        )
        return reply(
            "all_agent_states",
            request,
            agents={name: rec.as_dict() for name, rec in self.agents.items()},
            # per agent: shared_state keys dropped (oldest first) at --max-shared-state-keys
            shared_state_trimmed={name: self._shared_state_trimmed.get(name, 0) for name in self.agents},
            corrupted=agents_broken or self.corrupted(),
        )

    # ------------------------------------------------------------------ offline queue

    def store_undeliverable(self, frame: dict) -> Outcome | None:
        """A finished response whose user has no open connection.

        An ``ai_response`` goes to the offline queue (kind ``reply``, the message's
        priority and message_id; the frame is delivered later with the delivery
        fields added). A ``throughput_response`` is discarded and counted in
        ``throughput_dropped_total`` (returns None): ``throughput_test`` has no
        deduplication, so a client that resends after a drop is answered anyway.
        """
        if frame.get("type") != "ai_response":
            self.throughput_dropped_total += 1
            return None
        return self.offline.offer(
            frame["message_id"], frame.get("priority") or "normal", "reply", frame
        )


_NO_ECHO: Mapping[str, Any] = MappingProxyType({})


def _request_echo(frame: dict) -> Mapping[str, Any]:
    """Keep only what a later reply needs from the request (its request_id)."""
    if "request_id" in frame:
        return {"request_id": frame["request_id"]}
    return _NO_ECHO  # shared, read-only: no allocation per message
