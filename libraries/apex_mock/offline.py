"""Per-user offline queue of the Apex mock (pure: no sockets, no event loop).

What a user is owed while it cannot be sent at once (an admin ``push``, an
``ai_response`` that finished after the user left) is held here until the
client acknowledges it. One :class:`OfflineQueue` per user, owned by
``UserCore.offline``; the server calls it and sends the frames it returns.

Model
-----
Each held message is an :class:`Entry` in one of two states:

* ``waiting`` -- nobody has it; delivered on the next connect;
* ``unacked`` -- sent to a connection (its ``owner``), not yet acknowledged.

Capacity counts everything held: ``held = waiting + unacked``. An entry leaves
the queue when it is acked (``delivered_total``), evicted by ``drop_oldest``
(``dropped_total``) or expires while waiting (``expired_total``). Unacked
entries do not expire: they are with a client; when that connection closes,
:meth:`OfflineQueue.release` returns them to ``waiting`` and the next delivery
marks them ``redelivered``.

Accounting (what the tests check, fault-free)::

    offered  = accepted + discarded + rejected
    accepted = acked + evicted + expired + held

where ``accepted = queued_total`` and ``dropped_total = evicted + discarded``.

Clocks are injectable: ``clock`` (monotonic seconds, for expiry) and
``wall_ns`` (Unix ns, for ``queued_at``).

Expiry is a heap of ``(expires_at, seq, push number, entry)`` with lazy deletion: an item
is live only while its entry is waiting; the heap is rebuilt from the waiting
entries when stale items outnumber live ones, so memory stays bounded by the
number of held entries.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import faults as F

PRIORITIES = ("critical", "high", "normal", "low")  # delivery order, most important first
PRIORITY_RANK = {p: i for i, p in enumerate(PRIORITIES)}  # 0 = most important
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "reject")
KINDS = ("push", "reply")

# entry states
WAITING = "waiting"
UNACKED = "unacked"
GONE = "gone"

# offer statuses (push_result.status)
DELIVERED = "delivered"
QUEUED = "queued"
DROPPED = "dropped"
REJECTED = "rejected"

_HEAP_SLACK = 64  # stale heap items tolerated beyond the 2x rule before a rebuild

_default_ids = itertools.count(1)


def _default_delivery_id() -> str:
    return f"dlv-{next(_default_ids)}"


@dataclass(slots=True, eq=False)
class Entry:
    """One held message. ``frame`` is what is delivered, without the delivery fields."""

    delivery_id: str
    message_id: str
    priority: str
    kind: str  # "push" | "reply"
    frame: dict[str, Any]
    queued_at: int  # wall clock, Unix ns, at acceptance
    expires_at: float  # monotonic seconds: accepted + ttl
    seq: int  # acceptance order within this queue
    deliveries: int = 0  # how many times it was sent
    state: str = WAITING
    owner: Any = None  # the connection it was delivered to, while unacked


class Outcome(NamedTuple):
    """Result of :meth:`OfflineQueue.offer`.

    ``frame`` is the delivery frame to send now when ``status`` is ``delivered``.
    """

    status: str  # delivered | queued | dropped | rejected
    entry: Entry | None
    evicted: Entry | None
    reason: str | None
    frame: dict[str, Any] | None = None


class ConnectPass(NamedTuple):
    """Result of :meth:`OfflineQueue.connect`: the ``queued`` count to announce, the frames to send."""

    queued: int
    frames: list[dict[str, Any]]


class OfflineQueue:
    """The offline queue of one user. Not thread-safe; single event loop.

    ``settings`` is an object with ``offline_capacity``, ``overflow_policy`` and
    ``offline_ttl_s`` (read at every offer, so ``configure_session`` takes effect
    for later offers), or a zero-argument callable returning such an object.
    """

    def __init__(
        self,
        settings: Any,
        faults: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        new_delivery_id: Callable[[], str] | None = None,
    ):
        self._settings: Callable[[], Any] = settings if callable(settings) else (lambda: settings)
        faults = frozenset(faults)
        self.ignore_priority = F.IGNORE_PRIORITY_OFFLINE in faults
        self.ignore_ttl = F.IGNORE_TTL in faults
        self.evict_highest = F.EVICT_HIGHEST in faults
        self.lose_offline = F.LOSE_OFFLINE in faults
        self.no_redelivery = F.NO_REDELIVERY in faults
        self.duplicate_delivery = F.DUPLICATE_DELIVERY in faults
        self.policy_confusion = F.POLICY_CONFUSION in faults
        self.lazy_expiry = F.LAZY_EXPIRY in faults
        self.unbounded = F.UNBOUNDED_OFFLINE in faults
        self.false_redelivered = F.FALSE_REDELIVERED in faults
        self.wrong_queued_count = F.WRONG_QUEUED_COUNT in faults
        self.clock = clock
        self.wall_ns = wall_ns
        self._new_id = new_delivery_id or _default_delivery_id
        self._seq = itertools.count(1)
        self._entries: dict[str, Entry] = {}  # every held entry, by delivery_id
        # waiting entries per priority, each in seq order (oldest first)
        self._waiting: dict[str, OrderedDict[int, Entry]] = {p: OrderedDict() for p in PRIORITIES}
        self._n_waiting = 0
        # (expires_at, seq, push number, entry): the push number is unique, so entries are never compared
        self._heap: list[tuple[float, int, int, Entry]] = []
        self._pushes = itertools.count()
        # totals
        self.offered_total = 0
        self.queued_total = 0  # accepted
        self.delivered_total = 0  # acked
        self.evicted_total = 0
        self.discarded_total = 0
        self.rejected_total = 0
        self.expired_total = 0
        self.redelivered_total = 0
        self.ack_unknown_total = 0

    # ------------------------------------------------------------------ views

    @property
    def held(self) -> int:
        """Entries held for the user: waiting + unacked."""
        return len(self._entries)

    @property
    def waiting_count(self) -> int:
        return self._n_waiting

    @property
    def unacked_count(self) -> int:
        return len(self._entries) - self._n_waiting

    @property
    def dropped_total(self) -> int:
        """Evicted entries plus discarded incoming messages."""
        return self.evicted_total + self.discarded_total

    def get(self, delivery_id: str) -> Entry | None:
        return self._entries.get(delivery_id)

    def peek(self) -> list[Entry]:
        """The waiting entries in delivery order (after a sweep); changes nothing else."""
        self._sweep(delivery=False)
        return self._ordered_waiting()

    def totals(self) -> dict[str, int]:
        return {
            "offered_total": self.offered_total,
            "queued_total": self.queued_total,
            "delivered_total": self.delivered_total,
            "dropped_total": self.dropped_total,
            "evicted_total": self.evicted_total,
            "discarded_total": self.discarded_total,
            "rejected_total": self.rejected_total,
            "expired_total": self.expired_total,
            "redelivered_total": self.redelivered_total,
            "ack_unknown_total": self.ack_unknown_total,
        }

    # ------------------------------------------------------------------ expiry

    def sweep(self) -> int:
        """Expire waiting entries whose ``expires_at <= now``; return how many expired.

        This is what queries and the server's expiry timer call. Under the
        ``lazy_expiry`` fault it does nothing (only a delivery pass expires).
        """
        return self._sweep(delivery=False)

    def next_expiry(self) -> float | None:
        """Earliest ``expires_at`` (monotonic) among waiting entries, or None.

        None as well when expiry is not continuous (``ignore_ttl``, ``lazy_expiry``),
        so the server arms no timer.
        """
        if self.ignore_ttl or self.lazy_expiry:
            return None
        heap = self._heap
        while heap and heap[0][3].state != WAITING:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _sweep(self, *, delivery: bool) -> int:
        if self.ignore_ttl or (self.lazy_expiry and not delivery):
            return 0
        now = self.clock()
        heap = self._heap
        expired = 0
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[3]
            if entry.state != WAITING:
                continue  # stale item: acked, evicted, delivered, or a duplicate push
            self._unwait(entry)
            self._forget(entry)
            self.expired_total += 1
            expired += 1
        return expired

    # ------------------------------------------------------------------ offer

    def offer(
        self,
        message_id: str,
        priority: str,
        kind: str,
        frame: dict[str, Any],
        *,
        ttl_s: float | None = None,
        owner: Any = None,
    ) -> Outcome:
        """Offer one message for the user.

        ``owner`` is the connection to deliver to now (the user is online), or
        None (offline: the entry waits). ``ttl_s`` overrides the user's
        ``offline_ttl_s``. ``frame`` must not contain the delivery fields.
        """
        if priority not in PRIORITY_RANK:
            raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if ttl_s is not None and (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, (int, float))
            or not (math.isfinite(ttl_s) and ttl_s > 0)
        ):
            raise ValueError(f"ttl_s must be a finite number > 0, not {ttl_s!r}")
        self._sweep(delivery=False)
        self.offered_total += 1
        settings = self._settings()
        held, capacity = len(self._entries), settings.offline_capacity
        evicted: Entry | None = None
        if held >= capacity and not self.unbounded:
            policy = settings.overflow_policy
            full = f"offline queue full ({held} of {capacity}, policy {policy})"
            if policy == "reject" and not self.policy_confusion:
                self.rejected_total += 1
                return Outcome(REJECTED, None, None, full)
            if policy != "drop_oldest":  # drop_newest (or reject under policy_confusion)
                self.discarded_total += 1
                return Outcome(DROPPED, None, None, full + ": the incoming message is discarded")
            evicted = self._eviction_victim(priority)
            if evicted is None:
                self.discarded_total += 1
                if self._n_waiting:
                    why = f"every waiting entry has a higher priority than the incoming {priority} message"
                else:
                    why = f"nothing is waiting to evict (all {held} held entries are delivered but unacked)"
                return Outcome(DROPPED, None, None, f"{full}: {why}; the incoming message is discarded")
            self._unwait(evicted)
            self._forget(evicted)
            self.evicted_total += 1

        ttl = ttl_s if ttl_s is not None else settings.offline_ttl_s
        entry = Entry(
            delivery_id=self._new_id(),
            message_id=message_id,
            priority=priority,
            kind=kind,
            frame=frame,
            queued_at=self.wall_ns(),
            expires_at=self.clock() + ttl,
            seq=next(self._seq),
        )
        self._entries[entry.delivery_id] = entry
        self.queued_total += 1
        if owner is not None:
            entry.state = UNACKED
            entry.owner = owner
            return Outcome(DELIVERED, entry, evicted, None, self._delivery_frame(entry))
        self._wait(entry)
        self._compact()
        return Outcome(QUEUED, entry, evicted, None)

    def _eviction_victim(self, incoming: str) -> Entry | None:
        """The waiting entry ``drop_oldest`` evicts for an incoming ``incoming`` priority, or None."""
        present = [p for p in PRIORITIES if self._waiting[p]]
        if not present:
            return None
        if self.evict_highest:  # the original suites' bug: pop(0) of a priority-sorted list
            p = present[0]
        else:
            p = PRIORITIES[max(PRIORITY_RANK[incoming], PRIORITY_RANK[present[-1]])]
            if not self._waiting[p]:  # the incoming one is strictly the lowest
                return None
        return next(iter(self._waiting[p].values()))

    # ------------------------------------------------------------------ delivery

    def connect(self, owner: Any) -> ConnectPass:
        """A connection of the user opened: what to announce and deliver on it.

        ``queued`` is the number of waiting entries after the sweep (the value of
        ``session_started.queued``; one more under ``wrong_queued_count`` when any are waiting);
        ``frames`` are their deliveries in order.
        """
        self._sweep(delivery=True)
        queued = self._n_waiting
        announced = queued + 1 if self.wrong_queued_count and queued > 0 else queued
        if self.lose_offline:  # announce, then lose them without a trace
            for entry in self._ordered_waiting():
                self._unwait(entry)
                self._forget(entry)
            self._compact()
            return ConnectPass(announced, [])
        return ConnectPass(announced, self._take(owner))

    def take_for_delivery(self, owner: Any) -> list[dict[str, Any]]:
        """Sweep, then hand every waiting entry to ``owner`` in delivery order.

        Order: priority (critical, high, normal, low), FIFO by acceptance within a
        priority. The entries become unacked, owned by ``owner``. Each frame is
        ``entry.frame`` plus ``delivery_id``, ``queued_at`` and ``redelivered``.
        """
        self._sweep(delivery=True)
        return self._take(owner)

    def _take(self, owner: Any) -> list[dict[str, Any]]:
        entries = self._ordered_waiting()
        for waiting in self._waiting.values():
            waiting.clear()
        self._n_waiting = 0
        frames = []
        for entry in entries:
            entry.state = UNACKED
            entry.owner = owner
            frames.append(self._delivery_frame(entry))
        if self.duplicate_delivery and frames:
            frames.insert(1, dict(frames[0]))  # the same frame again, redelivered unchanged
        self._compact()
        return frames

    def _delivery_frame(self, entry: Entry) -> dict[str, Any]:
        redelivered = entry.deliveries > 0
        if redelivered:
            self.redelivered_total += 1
        entry.deliveries += 1
        return {
            **entry.frame,
            "delivery_id": entry.delivery_id,
            "queued_at": entry.queued_at,
            "redelivered": redelivered or self.false_redelivered,  # false_redelivered: the flag lies
        }

    def ack(self, delivery_ids: Iterable[str]) -> int:
        """Remove the acknowledged entries (unacked or waiting); unknown ids are counted and ignored."""
        self._sweep(delivery=False)
        acked = 0
        for delivery_id in delivery_ids:
            entry = self._entries.get(delivery_id)
            if entry is None:
                self.ack_unknown_total += 1
                continue
            if entry.state == WAITING:
                self._unwait(entry)
            self._forget(entry)
            self.delivered_total += 1
            acked += 1
        self._compact()
        return acked

    def release(self, owner: Any) -> list[Entry]:
        """The connection ``owner`` closed: its unacked entries wait again; return them.

        They rejoin their priority in acceptance order, so they come before later
        entries of the same priority, and are marked ``redelivered`` next time.
        A returned entry already past its TTL expires at the sweep that follows.
        """
        mine = sorted(
            (e for e in self._entries.values() if e.state == UNACKED and e.owner is owner),
            key=lambda e: e.seq,
        )
        if not mine:
            return []
        if self.no_redelivery:  # treated as acked: never sent again
            for entry in mine:
                self._forget(entry)
                self.delivered_total += 1
            return []
        by_priority: dict[str, list[Entry]] = {}
        for entry in mine:
            entry.state = WAITING
            entry.owner = None
            by_priority.setdefault(entry.priority, []).append(entry)
            self._push_heap(entry)
        for priority, returned in by_priority.items():
            waiting = self._waiting[priority]
            merged = sorted([*waiting.values(), *returned], key=lambda e: e.seq)
            waiting.clear()
            waiting.update((e.seq, e) for e in merged)
            self._n_waiting += len(returned)
        self._sweep(delivery=False)
        self._compact()
        return [e for e in mine if e.state == WAITING]

    # ------------------------------------------------------------------ internals

    def _ordered_waiting(self) -> list[Entry]:
        entries = [e for p in PRIORITIES for e in self._waiting[p].values()]
        if self.ignore_priority:
            entries.sort(key=lambda e: e.seq)
        return entries

    def _wait(self, entry: Entry) -> None:
        entry.state = WAITING
        entry.owner = None
        self._waiting[entry.priority][entry.seq] = entry  # seq is the newest: stays in order
        self._n_waiting += 1
        self._push_heap(entry)

    def _push_heap(self, entry: Entry) -> None:
        heapq.heappush(self._heap, (entry.expires_at, entry.seq, next(self._pushes), entry))

    def _unwait(self, entry: Entry) -> None:
        del self._waiting[entry.priority][entry.seq]
        self._n_waiting -= 1

    def _forget(self, entry: Entry) -> None:
        del self._entries[entry.delivery_id]
        entry.state = GONE
        entry.owner = None

    def _compact(self) -> None:
        """Rebuild the expiry heap when stale items outnumber the live ones (bounded memory)."""
        if len(self._heap) > 2 * self._n_waiting + _HEAP_SLACK:
            pushes = self._pushes
            self._heap = [
                (e.expires_at, e.seq, next(pushes), e)
                for p in PRIORITIES
                for e in self._waiting[p].values()
            ]
            heapq.heapify(self._heap)
