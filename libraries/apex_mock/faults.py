"""Fault modes of the mock server.

Each fault breaks exactly ONE guarantee, deterministically (no randomness), so
that a suite scenario checking that guarantee can be shown to fail.

Adding a fault is two steps:

1. register it here with ``_register(NAME, guarantee, description)``;
2. test ``NAME in faults`` at the one place in ``core.py`` / ``server.py``
   where the guarantee is implemented.

A fault may take one numeric parameter, given as ``NAME=VALUE`` (``--fault
throttle=2000``). Register it with ``param=Param(METAVAR, default, unit, integer)``
and read the effective value with ``faults.param(NAME)`` on the :class:`FaultSet`
that :func:`parse_faults` returns (the default when no value was given).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Self


@dataclass(frozen=True)
class Param:
    """The one numeric parameter of a fault: ``NAME=VALUE``."""

    metavar: str  # shown in --help: throttle[=RATE]
    default: float
    unit: str  # what the value means, for error messages: "messages per second"
    integer: bool = False  # a positive integer (else any positive finite number)

    def parse(self, fault: str, text: str) -> float:
        """The value of ``text``, or FaultValueError naming the fault."""
        kind = "a positive integer" if self.integer else "a positive number"
        value: float
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise FaultValueError(f"fault {fault!r} takes {kind} ({self.unit}), got {text!r}")
        return value


@dataclass(frozen=True)
class Fault:
    name: str
    guarantee: str
    description: str
    param: Param | None = None

    @property
    def usage(self) -> str:
        """``name`` or ``name[=METAVAR]`` (how --help shows it)."""
        return self.name if self.param is None else f"{self.name}[={self.param.metavar}]"


FAULTS: dict[str, Fault] = {}


def _register(name: str, guarantee: str, description: str, param: Param | None = None) -> str:
    if name in FAULTS:  # pragma: no cover - programming error
        raise ValueError(f"fault {name!r} registered twice")
    FAULTS[name] = Fault(name, guarantee, description, param)
    return name


# Response-stream faults: counted per user over produced responses
# (ai_response and throughput_response), numbering from 1.
REORDER = _register(
    "reorder",
    "ordering",
    "per user, hold back the 2nd, 7th, 12th, ... produced response and send it right after the "
    "next one (flushed after 1 s if no next one comes)",
)
DUPLICATE_RESPONSE = _register(
    "duplicate_response",
    "exactly-once delivery",
    "per user, send the 1st, 6th, 11th, ... produced response twice (identical frame)",
)
DROP_RESPONSE = _register(
    "drop_response",
    "delivery",
    "per user, the 7th, 14th, 21st, ... produced response is processed (state updated) but never sent",
)
NO_DEDUP = _register(
    "no_dedup",
    "idempotency",
    "duplicate message_ids are admitted and processed again (no duplicate_rejected)",
)
STALE_STATE = _register(
    "stale_state",
    "agent-state consistency",
    "agent_state replies show the state as it was before the most recently processed message",
)
NO_BACKPRESSURE = _register(
    "no_backpressure",
    "backpressure",
    "the inbound queue is unbounded: never queue_full (max_queue_size_seen stays truthful)",
)
IGNORE_PRIORITY = _register(
    "ignore_priority",
    "priority headroom",
    "high/critical messages get no 10% headroom: refused with queue_full like normal ones",
)
AGENT_DESYNC = _register(
    "agent_desync",
    "cross-agent synchronisation",
    "for messages with 2+ target agents, the 2nd and later targets write '<value>~stale' and "
    "record processed_sequence = sequence_id - 1",
)
SLOW = _register(
    "slow",
    "latency",
    "every produced response, and the offline deliveries sent on connect, go out 1200 ms late "
    "(order kept; processing speed and session_started unchanged)",
)

# Offline-queue faults (apex_mock/offline.py, except slow_reconnect: server.py).
IGNORE_PRIORITY_OFFLINE = _register(
    "ignore_priority_offline",
    "offline priority order",
    "offline deliveries go out FIFO by acceptance order, ignoring priority",
)
IGNORE_TTL = _register(
    "ignore_ttl",
    "offline expiry",
    "offline entries never expire: they keep taking capacity and are delivered however old",
)
EVICT_HIGHEST = _register(
    "evict_highest",
    "overflow priority",
    "drop_oldest evicts the oldest waiting entry of the HIGHEST priority present and always "
    "accepts the incoming one (when anything is waiting)",
)
LOSE_OFFLINE = _register(
    "lose_offline",
    "offline durability",
    "on connect, session_started announces the real queued count, then the waiting entries are "
    "discarded: not delivered, not counted anywhere",
)
NO_REDELIVERY = _register(
    "no_redelivery",
    "at-least-once delivery",
    "when a connection closes, its unacked offline deliveries are discarded as if acked "
    "(never redelivered)",
)
DUPLICATE_DELIVERY = _register(
    "duplicate_delivery",
    "exactly-once per delivery pass",
    "in every offline delivery pass the first delivery frame is sent twice (identical frames, "
    "same delivery_id)",
)
POLICY_CONFUSION = _register(
    "policy_confusion",
    "reject policy",
    "overflow_policy reject behaves as drop_newest: status dropped, counted dropped, "
    "rejected_total stays 0",
)
LAZY_EXPIRY = _register(
    "lazy_expiry",
    "expired entries free capacity",
    "offline expiry runs only in a delivery pass (on connect), never on push, query or timer: "
    "expired entries keep taking capacity until then",
)
UNBOUNDED_OFFLINE = _register(
    "unbounded_offline",
    "bounded offline queue",
    "offline_capacity is never enforced: every offer is accepted",
)
SLOW_RECONNECT = _register(
    "slow_reconnect",
    "reconnect time",
    "the opening handshake of a user that has connected before is delayed by 600 ms",
)

# Server-wide and connection faults (server.py), with a numeric parameter (NAME=VALUE).
THROTTLE_DEFAULT_RATE = 1500  # messages per second, server-wide
THROTTLE_CATCH_UP_S = 0.01  # lateness the throttle schedule may make up (timer overshoot)
LEAK_DEFAULT_BYTES = 4096  # per processed message
DISCONNECT_DEFAULT_EVERY = 100  # inbound frames per connection
STOP_READING_DEFAULT_FRAMES = 1000  # inbound frames per connection
DEGRADE_DEFAULT_AFTER = 14_000  # produced responses before the slow-down
DEGRADE_DELAY_S = 0.15
STICKY_RATE = 400  # messages per second, server-wide, once the server has sent a queue_full

THROTTLE = _register(
    "throttle",
    "throughput",
    f"the whole server completes at most RATE messages per second (user_message and "
    f"throughput_test together, all users; default {THROTTLE_DEFAULT_RATE}); queues grow, "
    "order is kept",
    Param("RATE", THROTTLE_DEFAULT_RATE, "messages per second"),
)
LEAK = _register(
    "leak",
    "bounded server memory",
    f"every processed message (both kinds) keeps BYTES of touched memory (default "
    f"{LEAK_DEFAULT_BYTES}) in a server-wide list that is never freed",
    Param("BYTES", LEAK_DEFAULT_BYTES, "bytes kept per processed message", integer=True),
)
DISCONNECT_EVERY = _register(
    "disconnect_every",
    "connections stay up",
    f"each connection is aborted (TCP abort, no close frame: the client sees 1006) right after "
    f"its N-th inbound frame (any type) has been handled (default {DISCONNECT_DEFAULT_EVERY})",
    Param("N", DISCONNECT_DEFAULT_EVERY, "inbound frames per connection", integer=True),
)
STOP_READING = _register(
    "stop_reading",
    "the server keeps reading",
    f"each connection stops being read after its N-th inbound frame (default "
    f"{STOP_READING_DEFAULT_FRAMES}): nothing more is handled, and once the socket buffers fill "
    f"the client's writes wait (TCP backpressure); the connection stays open",
    Param("N", STOP_READING_DEFAULT_FRAMES, "inbound frames per connection", integer=True),
)
DEGRADE = _register(
    "degrade",
    "latency does not degrade over a run",
    f"after the server has produced its first N responses (default {DEGRADE_DEFAULT_AFTER}, all "
    f"users), every later produced response is sent {DEGRADE_DELAY_S * 1000:g} ms late: the "
    f"service slows down for good",
    Param("N", DEGRADE_DEFAULT_AFTER, "responses before the slow-down", integer=True),
)
STICKY_OVERLOAD = _register(
    "sticky_overload",
    "recovery after overload",
    f"once the server has sent any queue_full (to any user), the whole server completes at most "
    f"{STICKY_RATE} messages per second (as throttle={STICKY_RATE}), forever: it never recovers "
    f"its rate, even for new users and an empty queue",
)

# Trust faults: a frame claims something the client can check against what it sent or saw.
CROSS_TALK_DEFAULT_EVERY = 3  # every 3rd ai_response dispatched, server-wide
WRONG_SEQUENCE_DEFAULT_EVERY = 5  # every 5th ai_response with an integer sequence_id, per user
#: How every encoded ``ai_response`` begins (``core.reply`` puts ``type`` first and orjson keeps
#: the order): cross_talk tells one from the other encoded replies without decoding it.
AI_RESPONSE_PREFIX = b'{"type":"ai_response"'

CROSS_TALK = _register(
    "cross_talk",
    "privacy / no cross-talk",
    f"server-wide, every N-th ai_response dispatched (default {CROSS_TALK_DEFAULT_EVERY}, all users "
    f"together) is also sent, as an identical copy, to the most recently opened open connection of "
    f"another user, when another user is connected; the owner still gets its own. With agent "
    f"streams on, in addition, each agent_progress event of every N-th run (all users together) is "
    f"also copied to the newest readable connection of another user",
    Param("N", CROSS_TALK_DEFAULT_EVERY, "ai_responses (and runs) per copy", integer=True),
)
WRONG_SEQUENCE = _register(
    "wrong_sequence",
    "echo integrity",
    f"per user, every N-th produced ai_response whose sequence_id is an integer (default "
    f"{WRONG_SEQUENCE_DEFAULT_EVERY}) echoes sequence_id + 1; what was processed and the agent "
    f"state keep the real one",
    Param("N", WRONG_SEQUENCE_DEFAULT_EVERY, "ai_responses with an integer sequence_id", integer=True),
)
FALSE_REDELIVERED = _register(
    "false_redelivered",
    "truthful redelivery flag",
    "the first delivery of every offline entry (push or reply, on connect or at once) is flagged "
    "redelivered: true (offline_redelivered_total still counts only real redeliveries)",
)
WRONG_QUEUED_COUNT = _register(
    "wrong_queued_count",
    "truthful queued count",
    "session_started.queued announces one more than the entries waiting, whenever any are "
    "waiting (0 stays 0); what is delivered is unchanged",
)

# Agent stream faults (agents.plan_run applies them): they act only on streamed runs
# (docs/protocol.md §4.9). "Run #n" is the n-th run started on the server, all users together,
# from 1; each fault breaks one property of the runs it names and leaves the others intact.
STREAM_FAULT_DEFAULT_EVERY = 5
STALL_STREAM_S = 2.5  # the extra wait before a stalled run's second event
SLOW_FIRST_EVENT_DEFAULT_MS = 1200


def _every_run(what: str) -> str:
    return f"streamed agent runs #N, #2N, ... (default N = {STREAM_FAULT_DEFAULT_EVERY}, all users together) {what}"


STALL_STREAM = _register(
    "stall_stream",
    "streams do not stall",
    _every_run(f"wait {STALL_STREAM_S:g} s longer before their second event (the one after agent_started), "
               "then go on normally"),
    Param("N", STREAM_FAULT_DEFAULT_EVERY, "runs", integer=True),
)
TRUNCATE_STREAM = _register(
    "truncate_stream",
    "every run ends with a final outcome",
    _every_run("stop after their first agent_thinking (after agent_started without thinking steps): no "
               "further event and no final ever (the message still counts as processed)"),
    Param("N", STREAM_FAULT_DEFAULT_EVERY, "runs", integer=True),
)
DUPLICATE_FINAL = _register(
    "duplicate_final",
    "exactly one final outcome per run",
    _every_run("send their final ai_response twice, back to back"),
    Param("N", STREAM_FAULT_DEFAULT_EVERY, "runs", integer=True),
)
EVENT_AFTER_FINAL = _register(
    "event_after_final",
    "nothing after the final outcome",
    _every_run("send one more agent_thinking one gap after their final ai_response"),
    Param("N", STREAM_FAULT_DEFAULT_EVERY, "runs", integer=True),
)
MISSING_STARTED = _register(
    "missing_started",
    "agent_started comes first",
    _every_run("never send agent_started (their first event is the next one, still first_event_ms after the start)"),
    Param("N", STREAM_FAULT_DEFAULT_EVERY, "runs", integer=True),
)
UNPAIRED_TOOL = _register(
    "unpaired_tool",
    "every tool_completed follows its tool_executing",
    _every_run("do not send their first tool_executing (its tool_completed still comes; nothing with tools=0)"),
    Param("N", STREAM_FAULT_DEFAULT_EVERY, "runs", integer=True),
)
SLOW_FIRST_EVENT = _register(
    "slow_first_event",
    "time to first event",
    f"every streamed run's first event comes MS later (default {SLOW_FIRST_EVENT_DEFAULT_MS} ms); the "
    "rest of the run keeps its gaps",
    Param("MS", SLOW_FIRST_EVENT_DEFAULT_MS, "milliseconds"),
)
#: The stream faults: the server hands their parameters to agents.AgentRuns, which plans each run.
STREAM_FAULTS = (STALL_STREAM, TRUNCATE_STREAM, DUPLICATE_FINAL, EVENT_AFTER_FINAL, MISSING_STARTED, UNPAIRED_TOOL,
                 SLOW_FIRST_EVENT)

# Parameters of the faults (module constants so tests and docs can refer to them).
REORDER_PERIOD = 5
REORDER_OFFSET = 2  # hold back n where n % 5 == 2 -> 2nd, 7th, 12th, ...
REORDER_FLUSH_S = 1.0
DUPLICATE_PERIOD = 5
DUPLICATE_OFFSET = 1  # 1st, 6th, 11th, ...
DROP_PERIOD = 7  # 7th, 14th, ...
SLOW_DELAY_S = 1.2
SLOW_RECONNECT_S = 0.6


LIST_FAULTS_HINT = "apex-mock --list-faults lists every fault"


class UnknownFault(ValueError):
    """Fault names that are not registered; the message is one line (see :func:`unknown_fault_message`)."""

    def __init__(self, names: list[str]):
        self.names = names
        super().__init__(unknown_fault_message(names))


def unknown_fault_message(names: list[str]) -> str:
    """One line naming the unknown fault(s), with the closest known name of each
    (``difflib``), or, when none is close, every known name (without descriptions).

    ``Unknown mock fault 'reorderr'; did you mean 'reorder'? (apex-mock --list-faults lists every fault)``
    """
    close = {name: difflib.get_close_matches(name, FAULTS, n=1) for name in names}
    noun = "fault" if len(names) == 1 else "faults"
    if len(names) == 1 and close[names[0]]:
        return f"Unknown mock fault {names[0]!r}; did you mean {close[names[0]][0]!r}? ({LIST_FAULTS_HINT})"
    if all(close.values()):
        guesses = ", ".join(f"{name!r} (did you mean {close[name][0]!r}?)" for name in names)
        return f"Unknown mock faults {guesses} ({LIST_FAULTS_HINT})"
    given = ", ".join(repr(name) for name in names)
    return f"Unknown mock {noun} {given}; the faults are: {', '.join(FAULTS)}"


class FaultValueError(ValueError):
    """A known fault given a value it does not take (or a bad one)."""


class FaultSet(frozenset[str]):
    """The active fault names (``name in faults`` works as for a frozenset), plus
    ``params``: the effective value of every active fault that takes one."""

    params: Mapping[str, float]

    def __new__(cls, names: Iterable[str] = (), params: Mapping[str, float] | None = None) -> Self:
        self = super().__new__(cls, names)
        given = dict(params or {})
        for name in self:
            param = FAULTS[name].param if name in FAULTS else None
            if param is not None:
                given.setdefault(name, param.default)
        self.params = MappingProxyType(given)
        return self

    def param(self, name: str) -> float:
        """The effective value of ``name``'s parameter (KeyError if ``name`` is not active)."""
        return self.params[name]

    def labels(self) -> list[str]:
        """Sorted ``name`` / ``name=VALUE`` (for logs and server_stats)."""
        return sorted(f"{n}={_fmt(self.params[n])}" if n in self.params else n for n in self)

    def __repr__(self) -> str:
        return f"FaultSet({self.labels()!r})"


def _fmt(value: float) -> str:
    """1500 -> "1500", 2000.0 -> "2000", 0.5 -> "0.5" (as the value would be typed)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def parse_faults(names: Iterable[str]) -> FaultSet:
    """Validate faults: ``NAME`` or ``NAME=VALUE``, comma-separated values allowed.

    Raise UnknownFault (names not registered) or FaultValueError (a value for a fault
    without a parameter, a bad value, or one fault given two different values).
    A FaultSet is returned as it is.
    """
    if isinstance(names, FaultSet):
        return names
    result: set[str] = set()
    params: dict[str, float] = {}
    unknown: list[str] = []
    problems: list[str] = []
    for item in names:
        for spec in str(item).split(","):
            name, eq, text = (part.strip() for part in spec.partition("="))
            if not name and not eq:
                continue
            fault = FAULTS.get(name)
            if fault is None:
                unknown.append(name or spec.strip())
                continue
            result.add(name)
            if not eq:
                continue
            if fault.param is None:
                problems.append(f"fault {name!r} takes no value, got {spec.strip()!r}")
                continue
            try:
                value = fault.param.parse(name, text)
            except FaultValueError as exc:
                problems.append(str(exc))
                continue
            if params.setdefault(name, value) != value:
                problems.append(f"fault {name!r} given two values: {_fmt(params[name])} and {_fmt(value)}")
    if unknown:
        raise UnknownFault(unknown)
    if problems:
        raise FaultValueError("; ".join(problems))
    return FaultSet(result, params)


def describe_faults(indent: str = "  ") -> str:
    """One line per fault: usage and description (used by --help and error messages)."""
    width = max(len(f.usage) for f in FAULTS.values())
    return "\n".join(f"{indent}{f.usage:<{width}}  {f.description}" for f in FAULTS.values())
