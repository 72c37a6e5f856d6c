"""The fault catalogue: which suites exist, which fault modes there are, and what each must break.

This module is data: the specification of the fault matrix. Every fault mode names the
guarantee it breaks and, per suite, the scenarios (Robot test cases) that must fail under it,
each with a fragment its failure message must contain. The other scenarios must keep passing
(a failure there is reported as collateral).

Rows come in three groups, always in this order:

- baselines: ``none`` (the built-in mock, no fault) and ``proxy`` (every connection routed
  through the library's fault proxy, no fault). Both must be all green.
- mock rows: a fault of the built-in mock (``apex-mock --fault NAME``).
- proxy rows: a fault of the library's fault proxy; their names start with ``proxy:``.

Fragments are facts about the fault, never measurements: a count the fault makes certain
(``was 19, expected == 20``), the figure's name, its load and its threshold, but no measured
time or ratio, which moves with the machine. The library words a failed measurement
``{figure} was {value}[ unit], expected {op} {threshold}[ unit][. {detail}]``, so the measured
value is written as the wildcard ``…`` (U+2026; any text within one line of the message,
non-greedy): ``latency p95 of load 'benchmark' was … s, expected <= 0.2 s``. Thresholds are the
suites' variables as the library formats them (``plain_value``: 4 significant digits,
seconds as ``0.2 s``); ``tests/unit/test_fault_matrix.py`` checks both rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath

#: In a fragment, matches any text within one line of the message (non-greedy).
WILDCARD = "\u2026"


@lru_cache(maxsize=512)
def fragment_pattern(fragment: str) -> re.Pattern[str]:
    """The regular expression of ``fragment``: its text literally, each ``…`` as ``.*?`` (one line)."""
    return re.compile(".*?".join(re.escape(part) for part in fragment.split(WILDCARD)))


def fragment_matches(fragment: str, message: str) -> bool:
    """Whether ``message`` contains ``fragment`` (``…`` standing for any text within a line)."""
    if WILDCARD not in fragment:
        return fragment in message
    return fragment_pattern(fragment).search(message) is not None

MOCK = "mock"
PROXY = "proxy"
LAYERS = (MOCK, PROXY)
PROXY_PREFIX = "proxy:"
BASELINE_NAMES = ("none", "proxy")


@dataclass(frozen=True)
class Suite:
    """A Robot suite file under ``suites/``; its test cases are the matrix's columns."""

    key: str  # "1", "2", "3"
    file: str  # "01__rapid_message_succession.robot"
    title: str  # "Rapid message succession"
    tests: tuple[str, ...]  # every test name, in file order (columns)
    exclusive: bool = False  # True for suite 3: timing-sensitive load, never runs beside another cell
    timeout_s: float = 300

    @property
    def stem(self) -> str:
        """The file name without ``.robot``: the suite's directory name under a row's runs."""
        return PurePath(self.file).stem

    def label(self, test: str) -> str:
        """The short column label of ``test``: ``1.3`` for suite 1's third test."""
        return f"{self.key}.{self.tests.index(test) + 1}"


@dataclass(frozen=True)
class Expectation:
    """What must fail in one suite under a fault, and whether only some tests are run there."""

    suite: str  # Suite.key
    fails: dict[str, str]  # test name -> fragment its failure message must contain
    only: tuple[str, ...] = ()  # run only these tests (robot --test); () = whole suite


@dataclass(frozen=True)
class FaultMode:
    """One row of the matrix: a fault (or a baseline) and where it must be caught."""

    name: str  # as given to the mock/proxy: "reorder", "leak=1000000", "proxy:drop_responses"
    layer: str  # "mock" | "proxy"
    breaks: str  # one line: the guarantee it breaks (from README's fault table)
    expectations: tuple[Expectation, ...] = ()  # where it is run by default and what must fail there

    @property
    def is_baseline(self) -> bool:
        """``none`` and ``proxy``: no fault; every test must pass (or skip)."""
        return self.name in BASELINE_NAMES

    @property
    def guarded(self) -> bool:
        """Whether the catalogue names scenarios that must fail under this fault."""
        return bool(self.expectations)

    @property
    def slug(self) -> str:
        """The row's directory name under ``runs/``: ``leak=1000000`` -> ``leak-1000000``."""
        return self.name.replace("=", "-").replace(":", "-")

    def expectation(self, suite_key: str) -> Expectation | None:
        """The expectation for suite ``suite_key``, or None when this fault has none there."""
        return next((e for e in self.expectations if e.suite == suite_key), None)

    def robot_variables(self) -> dict[str, str]:
        """The robot ``--variable``s that put a run under this row's fault."""
        if self.name == "none":
            return {}
        if self.name == "proxy":
            return {"APEX_PROXY": "on"}
        if self.layer == PROXY:
            return {"APEX_PROXY": "on", "APEX_PROXY_FAULTS": self.name.removeprefix(PROXY_PREFIX)}
        return {"APEX_MOCK_FAULTS": self.name}


@dataclass(frozen=True)
class Catalogue:
    """The suites and rows, with lookups by a user's selector."""

    suites: tuple[Suite, ...]
    faults: tuple[FaultMode, ...]

    def suite(self, selector: str) -> Suite:
        """The suite named by ``1``, ``01``, its file name, or a path ending in its file name."""
        for candidate in self.suites:
            if _selects_suite(selector, candidate):
                return candidate
        choices = ", ".join(f"{s.key} ({s.file})" for s in self.suites)
        raise ValueError(f"unknown suite {selector!r}; choose one of: {choices}")

    def fault(self, name: str) -> FaultMode:
        """The row called ``name`` exactly (``leak`` and ``leak=1000000`` are different rows)."""
        for candidate in self.faults:
            if candidate.name == name:
                return candidate
        raise ValueError(f"unknown fault {name!r}; choose one of: {', '.join(f.name for f in self.faults)}")

    @property
    def baselines(self) -> tuple[FaultMode, ...]:
        """The baseline rows, in catalogue order."""
        return tuple(f for f in self.faults if f.is_baseline)


def _selects_suite(selector: str, suite: Suite) -> bool:
    text = selector.strip()
    if text.isdigit():
        return int(text) == int(suite.key)
    return PurePath(text).name == suite.file


# --------------------------------------------------------------------------- suite 1


class Rapid:
    """Suite 1's test names."""

    SEQUENTIAL = "Messages In Rapid Succession Are Answered In Order Exactly Once"
    DUPLICATES = "A Message Sent Repeatedly Is Processed Exactly Once"
    OVERFLOW = "Queue Overflow Is Refused With Backpressure That Favours High Priority"
    CONVERSATION = "Agent State Keeps Up With A Rapid Conversation"
    STABILITY = "Connection Stays Healthy Through Message Bursts"
    AGENTS = "Agents Stay In Sync Across Coordinated Messages"
    BENCHMARK = "Rapid Succession Benchmark Meets Throughput And Latency Targets"
    ALL = (SEQUENTIAL, DUPLICATES, OVERFLOW, CONVERSATION, STABILITY, AGENTS, BENCHMARK)


# --------------------------------------------------------------------------- suite 2


class Queuing:
    """Suite 2's test names."""

    SINGLE = "A Message Pushed While The User Is Away Is Delivered On Reconnect"
    ORDER = "Messages Queued While Away Arrive In The Order They Were Pushed"
    OVERFLOW = "Offline Queue Overflow Follows The Configured Policy"
    PRIORITY = "Queued Messages Are Delivered By Priority Then In Push Order"
    EVICTION = "Overflow Never Evicts A Higher Priority Message First"
    TTL = "Expired Messages Are Not Delivered And Free Their Capacity"
    REPLY = "A Reply That Finishes While The User Is Away Is Delivered On Reconnect"
    REDELIVERY = "An Unacknowledged Delivery Is Delivered Again After A Drop"
    CYCLES = "Rapid Disconnect And Reconnect Cycles Lose Nothing"
    PUSHERS = "Messages From Concurrent Pushers Are All Delivered In Each Pusher's Order"
    BOUNDED = "The Offline Queue Stays Within Its Capacity"
    PARTITION = "Messages Pushed During A Network Partition Are Not Lost"
    SCALING = "Delivery Stays Prompt As The Offline Queue Grows"
    ALL = (
        SINGLE, ORDER, OVERFLOW, PRIORITY, EVICTION, TTL, REPLY, REDELIVERY, CYCLES, PUSHERS, BOUNDED, PARTITION, SCALING,
    )  # fmt: skip


LOST = "queued deliver"  # "waiting for N queued deliveries ... pushed and not yet delivered: ..."


# --------------------------------------------------------------------------- suite 3


class Throughput:
    """Suite 3's test names."""

    RATES = "Throughput Keeps Up With The Offered Rate"
    FLOOD = "Order Holds Under A 10,000-Message Flood"
    TEN = "Order Holds On Each Of Ten Connections"
    DROPS = "Every Message Is Processed Exactly Once Despite Connection Drops"
    OVERLOAD = "Overload Is Signalled And Service Recovers"
    LATENCY = "Latency Percentiles Stay Within Target Under Constant Arrival Rate"
    CONNECTIONS = "Connections Scale From 1 To 500"
    MEMORY = "Memory Stays Bounded Under Sustained Load"
    RECOVERY = "Service Recovers From Connection Drops, A Partition And Overload"
    BENCHMARK = "Phased Benchmark Meets Its Targets"
    ALL = (RATES, FLOOD, TEN, DROPS, OVERLOAD, LATENCY, CONNECTIONS, MEMORY, RECOVERY, BENCHMARK)


# --------------------------------------------------------------------------- suite 4


class Streams:
    """Suite 4's test names."""

    ANSWERED = "Every Message Starts A Run Quickly And Ends With Exactly One Answer"
    ORDER = "Events Follow The Legal Order"
    STALLS = "No Stream Stalls"
    PRIVACY = "Concurrent Users Never See Each Other's Events"
    STEADY = "Figures Stay Within Thresholds Under A Steady Arrival Rate"
    BURST = "Figures Stay Within Thresholds Under A Burst"
    ALL = (ANSWERED, ORDER, STALLS, PRIVACY, STEADY, BURST)


SUITES: tuple[Suite, ...] = (
    Suite("1", "01__rapid_message_succession.robot", "Rapid message succession", Rapid.ALL),
    Suite("2", "02__message_queuing_during_disconnection.robot", "Message queuing during disconnection", Queuing.ALL),
    Suite("3", "03__high_volume_throughput.robot", "High-volume throughput", Throughput.ALL, exclusive=True, timeout_s=400),
    Suite("4", "04__agent_event_streams.robot", "Agent event streams", Streams.ALL, timeout_s=240),
)


def whole(suite: str, fails: dict[str, str]) -> Expectation:
    """The whole suite runs; exactly ``fails`` must fail."""
    return Expectation(suite, fails)


def targeted(suite: str, fails: dict[str, str]) -> Expectation:
    """Only the tests that must fail run (``robot --test``), in file order."""
    order = next(s.tests for s in SUITES if s.key == suite)
    return Expectation(suite, fails, only=tuple(t for t in order if t in fails))


def mock(name: str, breaks: str, *expectations: Expectation) -> FaultMode:
    """A fault of the built-in mock."""
    return FaultMode(name, MOCK, breaks, expectations)


def proxy(name: str, breaks: str, *expectations: Expectation) -> FaultMode:
    """A standing fault of the library's fault proxy (``proxy:NAME``)."""
    return FaultMode(PROXY_PREFIX + name, PROXY, breaks, expectations)


BASELINES: tuple[FaultMode, ...] = (
    FaultMode("none", MOCK, "nothing: the built-in mock without a fault; every scenario must pass"),
    FaultMode("proxy", PROXY, "nothing: every connection through the fault proxy without a fault; every scenario must pass"),
)

R, Q, T, S = Rapid, Queuing, Throughput, Streams

#: The built-in mock's faults, in README's order. Fragments are matched against the whole
#: failure message; every test not listed must not fail.
MOCK_FAULTS: tuple[FaultMode, ...] = (
    mock(
        "reorder",
        "the 2nd, 7th, 12th … response per user is overtaken by the next one",
        whole("1", {
            R.SEQUENTIAL: "Responses in send order: 4 of 20 failed: seq-msg-1 (sequence 1) was answered after seq-msg-2",
        }),
        targeted("3", {
            T.FLOOD: "out of order on 1 of 1 connection(s): sequence 1 arrived after 2 on connection c0",
            T.TEN: "out of order on 10 of 10 connection(s)",
            # two messages per connection: the held-back one waits 1 s for a successor that never comes
            T.CONNECTIONS: "worst connection mean latency of load 'connections-500' was … s, expected <= 0.1 s",
        }),
    ),
    mock(
        "duplicate_response",
        "the 1st, 6th, 11th … response per user is sent twice",
        whole("1", {
            R.SEQUENTIAL: "No duplicate ai_response: 4 of 20 failed: seq-msg-0 got 2 ai_response on connection main",
            R.DUPLICATES: "ai_response count for unique-message-12345 was 2, expected == 1. Idempotency broken",
            R.OVERFLOW: "Exactly one outcome per message",
        }),
    ),
    mock(
        "drop_response",
        "the 7th, 14th … response per user is processed but never sent",
        whole("1", {
            R.SEQUENTIAL: "2 got no reply (lost or late): seq-msg-6, seq-msg-13",
            R.OVERFLOW: "got no reply (lost or late): batch-",
            R.CONVERSATION: "waiting for the answer to conversation message conv-6",
            R.STABILITY: "delivery ratio was …, expected >= 0.95. 129 of 150 messages answered",
            R.BENCHMARK: "got no reply (lost or late): bench-6, bench-13",
        }),
    ),
    mock(
        "no_dedup",
        "duplicate message_ids are processed again",
        whole("1", {
            R.DUPLICATES: "ai_response count for unique-message-12345 was 10, expected == 1. Idempotency broken",
        }),
        targeted("3", {T.DROPS: "processed more than once by the server"}),
    ),
    mock(
        "stale_state",
        "agent_state lags one message behind processing",
        whole("1", {
            R.SEQUENTIAL: "agent_state.message_count was 19, expected == 20",
            R.DUPLICATES: "unique-message-12345 is in the agent's processed_message_ids 0 time(s), expected exactly once",
            R.CONVERSATION: "Agent state after message 1 of 10 (conv-0, 'Let's analyze sales data'): message_count was 0",
        }),
    ),
    mock(
        "no_backpressure",
        "the inbound queue is unbounded, never queue_full",
        whole("1", {
            R.OVERFLOW: "queue_full count was 0, expected > 0. The server never signalled backpressure",
        }),
        targeted("3", {T.OVERLOAD: "the server never signalled backpressure"}),
    ),
    mock(
        "ignore_priority",
        "high priority gets no 10% headroom at capacity",
        whole("1", {
            R.OVERFLOW: "high-priority processed under backpressure was …, expected >= 0.8",
        }),
        targeted("3", {T.OVERLOAD: "high-priority delivery ratio of load 'overload' was …, expected >= 0.8"}),
    ),
    mock(
        "agent_desync",
        "the 2nd and later targeted agents record a different shared value",
        whole("1", {
            R.AGENTS: "Agents disagree on 2 shared-state key(s)",
        }),
    ),
    mock(
        "slow",
        "every response, and every offline delivery on reconnect, is sent 1.2 s late",
        whole("1", {
            R.STABILITY: "response time mean was … s, expected < 0.5 s",
            R.BENCHMARK: "response time p95 was … s, expected <= 1 s",
        }),
        whole("2", {
            Q.SCALING: "delivery time was … s, expected < 1 s",
        }),
        whole("3", {
            T.LATENCY: "latency p50 of load 'latency' was … s, expected <= 0.05 s",
            T.CONNECTIONS: "worst connection mean latency of load 'connections-1' was … s, expected <= 0.1 s",
            T.BENCHMARK: "latency p95 of load 'benchmark' was … s, expected <= 0.2 s",
        }),
    ),
    mock(
        "ignore_priority_offline",
        "offline delivery is FIFO, priority ignored",
        whole("2", {
            Q.OVERFLOW: "Offline delivery order (priority, then FIFO): 1 of 3 failed: H (high) was delivered after N2 (normal)",
            Q.PRIORITY: "H1 (high) was delivered after N1 (normal): higher priority must come first; "
            "C (critical) was delivered after N2 (normal)",
        }),
    ),
    mock(
        "ignore_ttl",
        "offline entries never expire",
        whole("2", {
            Q.TTL: "Expired messages must stop taking capacity: Push results differ for 2 of 5 push(es): "
            "F1 (normal): expected queued or delivered, got rejected (offline queue full (3 of 3, policy reject))",
        }),
    ),
    mock(
        "lazy_expiry",
        "expiry only at reconnect, so expired entries keep taking capacity (the original suites' bug)",
        whole("2", {
            Q.TTL: "Expired messages must stop taking capacity: Push results differ for 2 of 5 push(es): F1 (normal)",
        }),
    ),
    mock(
        "evict_highest",
        "drop_oldest evicts the highest priority first (the original suites' bug)",
        whole("2", {
            Q.OVERFLOW: "Overflow policy drop_oldest with capacity 3: Push results differ for 2 of 4 push(es): "
            "C (critical): expected queued or delivered, got dropped (evicted by H)",
            Q.EVICTION: "pushing H1 (high) evicted C1 (critical) while N1 (normal), N2 (normal), H1 (high) (lower priority)",
        }),
    ),
    mock(
        "lose_offline",
        "the offline queue is discarded on reconnect (after announcing its size)",
        whole("2", {
            Q.SINGLE: "waiting for 1 queued delivery (0 arrived; session_started announced 1); pushed and not yet delivered: Hello",
            Q.ORDER: "pushed and not yet delivered: M1, M2, M3, M4, M5",
            Q.OVERFLOW: LOST,
            Q.PRIORITY: "pushed and not yet delivered: N1, H1, N2, C, L, H2, N3",
            Q.EVICTION: "pushed and not yet delivered: C1, H1, N3",
            Q.TTL: "pushed and not yet delivered: I1, I2, I3, F1, F2",
            Q.REPLY: "waiting for 1 queued delivery (0 arrived; session_started announced 1)",
            Q.REDELIVERY: "pushed and not yet delivered: R1",
            Q.CYCLES: "pushed and not yet delivered: R1.1, R1.2",
            Q.PUSHERS: "waiting for 8 queued deliveries (0 arrived; session_started announced 8)",
            Q.BOUNDED: "pushed and not yet delivered: M6, M7, M8, M9, M10",
            Q.PARTITION: "pushed and not yet delivered: P1, P2, P3",
            Q.SCALING: "pushed and not yet delivered: S1 on connection 'scale-1'",
        }),
    ),
    mock(
        "no_redelivery",
        "deliveries not acknowledged before a drop are lost",
        whole("2", {
            Q.REDELIVERY: "not delivered again: R1 (normal) (at-least-once: a delivery not acknowledged before the "
            "connection ended must come again)",
            # the partition's reset leaves its pushes unacknowledged: they are lost too
            Q.PARTITION: "(0 arrived; session_started announced 0); pushed and not yet delivered: P1, P2, P3",
        }),
    ),
    mock(
        "duplicate_delivery",
        "the first delivery of each reconnect is sent twice, unflagged",
        whole("2", {
            Q.ORDER: "No duplicate deliveries: 1 of 5 failed: M1 (normal) (delivery dlv-",
            Q.PRIORITY: "No duplicate deliveries: 1 of 7 failed: C (critical)",
            Q.REPLY: "Exactly one outcome per message: 1 of 1 failed: reply-1 was answered 2 times (2 ai_response)",
            Q.REDELIVERY: "arrived 2 times in one delivery pass, 2 of them without redelivered: true",
            Q.CYCLES: "No duplicate deliveries: 5 of 10 failed: R1.1 (normal)",
            Q.PUSHERS: "No duplicate deliveries: 1 of 8 failed: P1.1 (normal)",
            Q.PARTITION: "No duplicate deliveries: 1 of 3 failed: P1 (normal)",
            Q.SCALING: "No duplicate deliveries: 1 of 1 failed: S1 (normal)",
        }),
    ),
    mock(
        "policy_confusion",
        "policy reject silently drops instead (dropped, not rejected)",
        whole("2", {
            Q.OVERFLOW: "Overflow policy reject with capacity 3: Push results differ for 2 of 5 push(es): "
            "N4 (normal): expected rejected, got dropped",
        }),
    ),
    mock(
        "unbounded_offline",
        "offline capacity is not enforced",
        whole("2", {
            Q.OVERFLOW: "Overflow policy drop_oldest with capacity 3: Push results differ for 2 of 5 push(es): "
            "N1 (normal): expected dropped, got queued",
            Q.EVICTION: "Overflow evicts the lowest priority first: nothing to check: no push to 'alice' evicted anything",
            Q.BOUNDED: "offline queue peak was 10, expected <= 5",
        }),
    ),
    mock(
        "slow_reconnect",
        "a returning user's handshake takes 0.6 s",
        whole("2", {
            Q.CYCLES: "reconnect time mean was … s, expected < 0.3 s",
        }),
        targeted("3", {T.RECOVERY: "reconnect time of load 'drops' was … s, expected <= 0.5 s"}),
    ),
    mock(
        "throttle",
        "the whole server completes at most 1,500 msg/s",
        whole("3", {
            T.RATES: "achieved ratio of load 'rate-2500' was …, expected >= 0.9",
            T.FLOOD: "message(s) never delivered",
            T.LATENCY: "delivery ratio of load 'latency' was …, expected >= 0.95",
            T.MEMORY: "delivery ratio of load 'memory' was …, expected >= 0.95",
            T.BENCHMARK: "achieved ratio of load 'benchmark' phase peak was …, expected >= 0.9",
        }),
    ),
    mock(
        "leak",
        "every processed message keeps 4,096 bytes of memory for good",
        targeted("3", {
            T.MEMORY: "server bytes per message was … B/msg, expected <= 1024 B/msg",
        }),
    ),
    # 1 MB kept per processed message: the stability scenario's 150 messages grow the server
    # by about 143 MB, over its 100 MB limit (the default 4 KB could never reach it).
    mock(
        "leak=1000000",
        "every processed message keeps 1,000,000 bytes of memory for good",
        whole("1", {
            R.STABILITY: "server memory growth was … MB, expected < 100 MB",
        }),
    ),
    # Every connection dies after 100 frames: only the scenarios sending that many notice.
    mock(
        "disconnect_every",
        "each connection is aborted after its 100th frame",
        whole("1", {
            R.OVERFLOW: "closed by the server or the network",
            R.STABILITY: "closed by the server or the network, code 1006",
            # apex: the 100th frame is the last message (then waiting for replies); netra: the
            # handshake's acknowledgement is a frame too, so the abort may come while sending.
            R.BENCHMARK: "closed by the server or the network, code 1006) while",
        }),
        whole("3", {
            # 200 frames at 100 msg/s for 2 s: the connection dies after 100, half is lost
            T.RATES: "delivery ratio of load 'rate-100' was …, expected >= 0.95",
            T.FLOOD: "closed by the server or the network (code 1006)",
            T.TEN: "closed by the server or the network (code 1006)",
            T.OVERLOAD: "delivery ratio of load 'baseline' was …, expected >= 0.95",
            T.LATENCY: "delivery ratio of load 'latency' was …, expected >= 0.95",
            T.CONNECTIONS: "delivery ratio of load 'connections-1' was …, expected >= 0.9",
            T.MEMORY: "delivery ratio of load 'memory' was …, expected >= 0.95",
            T.RECOVERY: "delivery ratio of load 'baseline' was …, expected >= 0.95",
            T.BENCHMARK: "achieved ratio of load 'benchmark' phase peak was …, expected >= 0.9",
            # DROPS passes: it reconnects and resends, which is what it checks.
        }),
    ),
    # TCP backpressure: the server stops reading each connection after 500 frames. The
    # messages after that are never answered, and that is the server's fault: the load
    # generator must not call the run inconclusive (its lateness, if any, is excused).
    mock(
        "stop_reading=500",
        "each connection stops being read after its 500th frame",
        targeted("3", {T.RATES: "delivery ratio of load 'rate-2500' was …, expected >= 0.95"}),
    ),
    # The server slows down for good after its first 14,000 responses: a fifth of the latency
    # run's last third is 150 ms slower, within every percentile target but not the
    # degradation bound.
    mock(
        "degrade",
        "after its first 14,000 responses the server sends every response 150 ms late",
        targeted("3", {T.LATENCY: "p95 degradation of load 'latency' was …, expected <= 0.2"}),
    ),
    # Server-wide and for good: every later scenario would fail too, so it runs alone.
    mock(
        "sticky_overload",
        "after the first queue_full the whole server stays capped at 400 msg/s",
        # the threshold is a share of the baseline rate measured in the same test
        targeted("3", {T.OVERLOAD: "receive rate of load 'after-recovery' was … msg/s, expected >= … msg/s"}),
    ),
    # Trust faults: the library checks every frame against what this client sent and fails the
    # test that saw a contradiction (MessagingLibrary/engine/trust.py), whatever it looked at.
    # Cross-talk needs two users connected while ai_responses flow: suite 1 never has (one
    # user per test), suite 2 has one ai_response in all (see cross_talk=1), suite 3's
    # user_message loads have one user per connection.
    mock(
        "cross_talk",
        "every 3rd ai_response, all users together, is also sent to another connected user",
        targeted("3", {
            T.DROPS: "Cross-talk (a privacy failure)",
            T.RECOVERY: "Cross-talk (a privacy failure)",
        }),
        # every 3rd run's events are copied too: the scenario guarding privacy names the event,
        # the other scenarios with several users are failed by the trust check of the copied answers
        whole("4", {
            S.ANSWERED: "Cross-talk (a privacy failure)",
            S.ORDER: "Cross-talk (a privacy failure)",
            S.STALLS: "Cross-talk (a privacy failure)",
            S.PRIVACY: "cross talk … (an event of another user's run delivered to this user): connection c",
            S.STEADY: "cross talk … (an event of another user's run delivered to this user)",
            S.BURST: "cross talk … (an event of another user's run delivered to this user)",
        }),
    ),
    # Every ai_response copied: suite 2's one reply, finished while its user is away, reaches
    # the admin connection that reads the user's queue state meanwhile.
    mock(
        "cross_talk=1",
        "every ai_response is also sent to another connected user",
        whole("2", {
            Q.REPLY: "Cross-talk (a privacy failure): connection 'admin' received ai_response for message "
            "'reply-1', which this user never sent",
        }),
    ),
    # Every 5th ai_response per user with a sequence_id: suite 1's scenarios sending 5 or more
    # numbered messages (the repeated message is answered once); suite 3's user_message loads.
    mock(
        "wrong_sequence",
        "the 5th, 10th … ai_response per user echoes its sequence_id + 1",
        whole("1", {
            R.SEQUENTIAL: "Wrong echo: ai_response for message 'seq-msg-4' on connection 'main' echoes sequence_id 5, "
            "but 4 was sent",
            R.OVERFLOW: "Wrong echo: ai_response for message … on connection 'main' echoes sequence_id",
            R.CONVERSATION: "Wrong echo: ai_response for message … on connection 'main' echoes sequence_id",
            R.STABILITY: "Wrong echo: ai_response for message … on connection 'main' echoes sequence_id",
            R.AGENTS: "Wrong echo: ai_response for message … on connection 'main' echoes sequence_id",
            R.BENCHMARK: "Wrong echo: ai_response for message … on connection 'main' echoes sequence_id",
        }),
        targeted("3", {
            T.DROPS: "Wrong echo: load run 'drops': … echoes sequence_id",
            T.RECOVERY: "Wrong echo: load run 'drops': … echoes sequence_id",
        }),
    ),
    # Every suite-2 scenario receives offline deliveries, each first one after the connection
    # that could have had it before was closed (or on the only connection ever open).
    mock(
        "false_redelivered",
        "the first delivery of every offline entry is flagged redelivered",
        whole("2", {
            Q.SINGLE: "False flag: … on connection 'alice' is flagged redelivered",
            Q.ORDER: "False flag: … on connection 'alice' is flagged redelivered",
            Q.OVERFLOW: "False flag: … on connection 'alice' is flagged redelivered",
            Q.PRIORITY: "False flag: … on connection 'alice' is flagged redelivered",
            Q.EVICTION: "False flag: … on connection 'alice' is flagged redelivered",
            Q.TTL: "False flag: … on connection 'alice' is flagged redelivered",
            Q.REPLY: "False flag: … on connection 'alice' is flagged redelivered",
            Q.REDELIVERY: "False flag: … on connection 'alice' is flagged redelivered",
            Q.CYCLES: "False flag: … on connection 'alice' is flagged redelivered",
            Q.PUSHERS: "False flag: … on connection 'alice' is flagged redelivered",
            Q.BOUNDED: "False flag: … on connection 'alice' is flagged redelivered",
            Q.PARTITION: "False flag: … on connection 'alice' is flagged redelivered",
            Q.SCALING: "False flag: … on connection 'scale-1' is flagged redelivered",
        }),
    ),
    # One more announced than waits, whenever anything waits: every suite-2 scenario reconnects
    # to waiting messages and later closes that connection cleanly (the count is judged then).
    mock(
        "wrong_queued_count",
        "session_started.queued announces one more than is waiting",
        whole("2", {
            Q.SINGLE: "Wrong count: session_started on connection 'alice' announced 2 queued message(s), but 1 were delivered",
            Q.ORDER: "Wrong count: session_started on connection 'alice' announced 6 queued message(s), but 5 were delivered",
            Q.OVERFLOW: "Wrong count: session_started on connection 'alice' announced 4 queued message(s), but 3 were delivered",
            Q.PRIORITY: "Wrong count: session_started on connection 'alice' announced 8 queued message(s), but 7 were delivered",
            Q.EVICTION: "Wrong count: session_started on connection 'alice' announced 4 queued message(s), but 3 were delivered",
            Q.TTL: "Wrong count: session_started on connection 'alice' announced 3 queued message(s), but 2 were delivered",
            Q.REPLY: "Wrong count: session_started on connection 'alice' announced 2 queued message(s), but 1 were delivered",
            Q.REDELIVERY: "Wrong count: session_started on connection 'alice' announced 2 queued message(s), but 1 were delivered",
            Q.CYCLES: "Wrong count: session_started on connection 'alice' announced 3 queued message(s), but 2 were delivered",
            Q.PUSHERS: "Wrong count: session_started on connection 'alice' announced 9 queued message(s), but 8 were delivered",
            Q.BOUNDED: "Wrong count: session_started on connection 'alice' announced 6 queued message(s), but 5 were delivered",
            Q.PARTITION: "Wrong count: session_started on connection 'alice' announced 4 queued message(s), but 3 were delivered",
            Q.SCALING: "Wrong count: session_started on connection 'scale-1' announced 2 queued message(s), but 1 were delivered",
        }),
    ),
    # Agent stream faults (suite 4): every 5th run started on the server. Each scenario sends a
    # run of consecutive runs, so the count is fixed: 20 runs -> 4, the steady 60 -> 12, the
    # burst 40 -> 8. Only the guarding scenarios run.
    mock(
        "truncate_stream",
        "runs #5, #10 … stop after their first thinking step: no final outcome",
        targeted("4", {
            S.ANSWERED: "truncated 16 (no final outcome before the connection closed or the wait ended): run '… on connection c",
            S.STEADY: "truncated 16 (no final outcome",
            S.BURST: "truncated 16 (no final outcome",
        }),
    ),
    mock(
        "duplicate_final",
        "runs #5, #10 … send their final answer twice",
        targeted("4", {
            S.ANSWERED: "duplicated final 16 (a second final outcome): run '… on connection c",
            S.STEADY: "duplicated final 16 (a second final outcome)",
            S.BURST: "duplicated final 16 (a second final outcome)",
        }),
    ),
    mock(
        "event_after_final",
        "runs #5, #10 … send one more thinking step after their final answer",
        targeted("4", {
            S.ORDER: "out of order 4 (an event outside the legal order … came after its final outcome",
            S.STEADY: "out of order 16 (an event outside the legal order … came after its final outcome",
            S.BURST: "out of order 16 (an event outside the legal order … came after its final outcome",
        }),
    ),
    mock(
        "missing_started",
        "runs #5, #10 … never send agent_started",
        targeted("4", {
            S.ORDER: "out of order 4 (an event outside the legal order … came before any agent_started",
            S.STEADY: "out of order 16 (an event outside the legal order … came before any agent_started",
            S.BURST: "out of order 16 (an event outside the legal order … came before any agent_started",
        }),
    ),
    mock(
        "unpaired_tool",
        "runs #5, #10 … lose their first tool_executing (its tool_completed still comes)",
        targeted("4", {
            S.ORDER: "tool_completed 'apex_lookup_1' at … has no tool_executing before it",
            S.STEADY: "out of order 16 (an event outside the legal order … has no tool_executing before it",
            S.BURST: "out of order 16 (an event outside the legal order … has no tool_executing before it",
        }),
    ),
    mock(
        "stall_stream",
        "runs #5, #10 … wait 2.5 s before their second event",
        targeted("4", {
            S.STALLS: "stalled 6 (a gap between two consecutive events over the stall threshold): run '… on connection c",
            S.STEADY: "stalled 16 (a gap between two consecutive events over the stall threshold)",
            S.BURST: "stalled 16 (a gap between two consecutive events over the stall threshold)",
        }),
    ),
    mock(
        "slow_first_event",
        "every run's first event comes 1.2 s late",
        targeted("4", {
            S.ANSWERED: "time to first event p95 of load 'answered-once' was … s, expected <= 1 s",
            S.STEADY: "time to first event p95 of load 'steady' was … s, expected <= 1 s",
            S.BURST: "time to first event p95 of load 'burst' was … s, expected <= 1 s",
        }),
    ),
)

# --------------------------------------------------------------------------- proxy rows
#: The fault proxy's standing faults (engine/proxy.py PRESETS): the network, not the server,
#: breaks the guarantee, so the same scenarios must notice. The part after ``proxy:`` is given
#: to the proxy as ``APEX_PROXY_FAULTS``; these rows also run against staging
#: (``--variablefile resources/variables/staging.py``). Slow-to-fail runs (every lost reply
#: waits out its timeout) run only their guarding scenarios.
PROXY_FAULTS: tuple[FaultMode, ...] = (
    proxy(
        "reorder_responses",
        "on the way back, response #2 and every 5th after it is overtaken by the next (per connection)",
        whole("1", {
            R.SEQUENTIAL: "Responses in send order: 4 of 20 failed: seq-msg-1 (sequence 1) was answered after seq-msg-2",
        }),
        targeted("3", {
            T.FLOOD: "out of order on 1 of 1 connection(s): sequence 1 arrived after 2 on connection c0",
            T.TEN: "out of order on 10 of 10 connection(s)",
        }),
    ),
    proxy(
        "duplicate_responses",
        "on the way back, response #1 and every 5th after it arrives twice (per connection)",
        whole("1", {
            R.SEQUENTIAL: "No duplicate ai_response: 4 of 20 failed: seq-msg-0 got 2 ai_response on connection main",
            R.DUPLICATES: "ai_response count for unique-message-12345 was 2, expected == 1. Idempotency broken",
            R.OVERFLOW: "Exactly one outcome per message",
        }),
        whole("2", {
            Q.REPLY: "Exactly one outcome per message: 1 of 1 failed: reply-1 was answered 2 times (2 ai_response)",
        }),
        targeted("3", {
            T.FLOOD: "Load run 'flood': 2000 answered more than once",
            T.TEN: "Load run 'ten-connections': 400 answered more than once",
            T.DROPS: "answered more than once",
        }),
    ),
    proxy(
        "drop_responses",
        "on the way back, every 7th response is lost (per connection)",
        targeted("1", {
            R.SEQUENTIAL: "2 got no reply (lost or late): seq-msg-6, seq-msg-13",
            R.STABILITY: "delivery ratio was …, expected >= 0.95. 129 of 150 messages answered",
        }),
        targeted("3", {T.FLOOD: "Load run 'flood': 1428 of 10000 message(s) never delivered"}),
    ),
    proxy(
        "duplicate_deliveries",
        "offline delivery #1 and every 3rd after it arrives twice (per connection)",
        whole("2", {
            Q.ORDER: "No duplicate deliveries: 2 of 5 failed: M1 (normal)",
            Q.PRIORITY: "No duplicate deliveries: 3 of 7 failed: C (critical)",
            Q.REDELIVERY: "No duplicate deliveries: 1 of 1 failed: R1 (normal)",
            Q.CYCLES: "No duplicate deliveries: 5 of 10 failed: R1.1 (normal)",
            Q.PUSHERS: "No duplicate deliveries: 3 of 8 failed: P1.1 (normal)",
            Q.PARTITION: "No duplicate deliveries: 1 of 3 failed: P1 (normal)",
            Q.SCALING: "No duplicate deliveries: 1 of 1 failed: S1 (normal)",
        }),
    ),
    proxy(
        "drop_deliveries",
        "offline delivery #1 and every 3rd after it is lost on the way (per connection)",
        targeted("2", {
            Q.SINGLE: "pushed and not yet delivered: Hello",
            Q.ORDER: "(3 arrived: M2, M3, M5; session_started announced 5); pushed and not yet delivered: M1, M4",
            Q.PRIORITY: "pushed and not yet delivered: N1, C, L",
            Q.PARTITION: "(2 arrived: P2, P3; session_started announced 0); pushed and not yet delivered: P1",
        }),
    ),
    proxy(
        "latency",
        "every server frame arrives 300 ms (± 10%) late",
        targeted("3", {
            T.LATENCY: "latency p50 of load 'latency' was … s, expected <= 0.05 s",
            T.BENCHMARK: "latency p95 of load 'benchmark' was … s, expected <= 0.2 s",
        }),
    ),
    proxy(
        "close_after",
        "each connection is reset after its 100th client message",
        whole("1", {
            R.OVERFLOW: "code 1006) while waiting for replies to 550 messages",
            R.STABILITY: "code 1006) while sending user_message",
            R.BENCHMARK: "code 1006) while waiting for replies to 100 messages",
        }),
    ),
)

#: Every row: baselines first, then mock rows, then proxy rows.
FAULTS: tuple[FaultMode, ...] = BASELINES + MOCK_FAULTS + PROXY_FAULTS

CATALOGUE = Catalogue(SUITES, FAULTS)


def suite(selector: str) -> Suite:
    """The suite named by ``1``, ``01``, its file name, or a path ending in it (ValueError otherwise)."""
    return CATALOGUE.suite(selector)


def fault(name: str) -> FaultMode:
    """The row called ``name`` (ValueError naming the valid names otherwise)."""
    return CATALOGUE.fault(name)


def rows_of_layer(faults: Sequence[FaultMode], layer: str) -> tuple[FaultMode, ...]:
    """The non-baseline rows of ``layer`` (``mock``, ``proxy`` or ``all``), in catalogue order."""
    return tuple(f for f in faults if not f.is_baseline and layer in ("all", f.layer))
