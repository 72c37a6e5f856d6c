"""Fault modes of the mock server.

Each fault breaks exactly ONE guarantee, deterministically (no randomness), so
that a suite scenario checking that guarantee can be shown to fail.

Adding a fault is two steps:

1. register it here with ``_register(NAME, guarantee, description)``;
2. test ``NAME in faults`` at the one place in ``core.py`` / ``server.py``
   where the guarantee is implemented.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    name: str
    guarantee: str
    description: str


FAULTS: dict[str, Fault] = {}


def _register(name: str, guarantee: str, description: str) -> str:
    if name in FAULTS:  # pragma: no cover - programming error
        raise ValueError(f"fault {name!r} registered twice")
    FAULTS[name] = Fault(name, guarantee, description)
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

# Parameters of the faults (module constants so tests and docs can refer to them).
REORDER_PERIOD = 5
REORDER_OFFSET = 2  # hold back n where n % 5 == 2 -> 2nd, 7th, 12th, ...
REORDER_FLUSH_S = 1.0
DUPLICATE_PERIOD = 5
DUPLICATE_OFFSET = 1  # 1st, 6th, 11th, ...
DROP_PERIOD = 7  # 7th, 14th, ...
SLOW_DELAY_S = 1.2
SLOW_RECONNECT_S = 0.6


class UnknownFault(ValueError):
    def __init__(self, names: list[str]):
        self.names = names
        super().__init__(f"unknown fault(s): {', '.join(names)}")


def parse_faults(names: Iterable[str]) -> frozenset[str]:
    """Validate fault names (comma-separated values allowed); raise UnknownFault."""
    result: set[str] = set()
    unknown: list[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name in FAULTS:
                result.add(name)
            else:
                unknown.append(name)
    if unknown:
        raise UnknownFault(unknown)
    return frozenset(result)


def describe_faults(indent: str = "  ") -> str:
    """One line per fault: name and description (used by --help and error messages)."""
    width = max(len(n) for n in FAULTS)
    return "\n".join(f"{indent}{f.name:<{width}}  {f.description}" for f in FAULTS.values())
