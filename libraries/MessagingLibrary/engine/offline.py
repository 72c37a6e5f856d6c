"""The offline queue, seen from the client: pushes, their results, deliveries, and the checks.

A *push* is a ``push`` frame an admin connection sent to a user, joined with the
``push_result`` that answered it (by ``request_id``). A *delivery* is any frame the user
received that carries a ``delivery_id`` (a ``pushed_message``, or an ``ai_response`` that
waited in the offline queue). Both are rebuilt from the History, so the checks below see
exactly what crossed the wire, timestamped on one monotonic clock.

The checks are plain functions with no I/O (unit-tested directly). Each returns a
:class:`~.checks.CheckResult` whose problems name the messages involved by their label (the
pushed ``content``), so a failure reads "C (critical) was evicted while N1 (normal) was
queued", not "assertion failed".
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checks import CheckResult
from .history import CONNECTION, RECEIVED, SENT, Event

#: Priorities from highest to lowest, as the protocol names them.
PRIORITIES = ("critical", "high", "normal", "low")
RANK = {name: rank for rank, name in enumerate(PRIORITIES)}

#: Connection events that start a new delivery pass on a connection.
CONNECT_EVENTS = frozenset({"opened", "reconnected"})


def parse_label(text: str, default_priority: str = "normal") -> tuple[str, str]:
    """``"H1:high"`` → ``("H1", "high")``; ``"N1"`` → ``("N1", default_priority)``.

    Only a final ``:word`` (letters, no space) is read as the priority, so a sentence such as
    ``"Note: meet at 10:30"`` stays one label; a final ``:word`` that is not a priority is an
    error (``H1:hihg`` is a typo, not a label).
    """
    label, sep, suffix = text.rpartition(":")
    if not sep or not suffix.isalpha():
        label, priority = text.strip(), default_priority
    else:
        label, priority = label.strip(), suffix.lower()
    if not label:
        raise ValueError(f"Empty message label in '{text}': write LABEL or LABEL:PRIORITY, for example 'H1:high'.")
    if priority not in RANK:
        raise ValueError(
            f"Unknown priority '{priority}' in '{text}': use one of {', '.join(PRIORITIES)} (for example 'H1:high')."
        )
    return label, priority


def split_labels(values: Iterable[str]) -> list[str]:
    """Labels given as separate arguments or as one space-separated cell (Test Template rows)."""
    return [part for value in values for part in str(value).split()]


@dataclass
class Push:
    """One push and what the server said about it."""

    index: int
    sent_ns: int
    pusher: str
    message_id: str
    label: str
    priority: str
    to_user: str
    ttl_s: float | None
    request_id: Any
    status: str | None = None
    result_ns: int | None = None
    evicted_message_id: str | None = None
    offline_size: int | None = None
    reason: str | None = None

    def describe(self) -> str:
        return f"{self.label} ({self.priority})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "message_id": self.message_id,
            "priority": self.priority,
            "pusher": self.pusher,
            "status": self.status,
            "evicted_message_id": self.evicted_message_id,
            "offline_size": self.offline_size,
            "reason": self.reason,
        }


@dataclass
class Delivery:
    """One frame with a ``delivery_id`` received by the user."""

    index: int
    ts_ns: int
    connection: str
    #: History index of the connect event that started this delivery pass.
    epoch: int
    type: str
    delivery_id: str
    message_id: str | None
    label: str
    priority: str
    redelivered: bool
    queued_at: Any

    def describe(self) -> str:
        return f"{self.label} ({self.priority})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "message_id": self.message_id,
            "delivery_id": self.delivery_id,
            "priority": self.priority,
            "redelivered": self.redelivered,
            "queued_at": self.queued_at,
            "type": self.type,
            "connection": self.connection,
        }


def pushes_to(events: Sequence[Event], user_id: str) -> list[Push]:
    """Every push sent to ``user_id`` in ``events``, in send order, joined with its result."""
    pushes: list[Push] = []
    waiting: dict[tuple[str, Any], Push] = {}
    for event in events:
        frame = event.frame
        if event.direction == SENT and event.type == "push" and frame.get("to_user") == user_id:
            ttl = frame.get("ttl_s")
            push = Push(
                index=event.index,
                sent_ns=event.ts_ns,
                pusher=event.connection,
                message_id=str(frame.get("message_id")),
                label=str(frame.get("content", frame.get("message_id"))),
                priority=str(frame.get("priority", "normal")),
                to_user=user_id,
                ttl_s=float(ttl) if isinstance(ttl, (int, float)) else None,
                request_id=frame.get("request_id"),
            )
            pushes.append(push)
            waiting[(event.connection, push.request_id)] = push
        elif event.direction == RECEIVED and event.type in ("push_result", "error"):
            push = waiting.pop((event.connection, frame.get("request_id")), None)
            if push is not None:
                push.result_ns = event.ts_ns
                push.status = str(frame.get("status")) if event.type == "push_result" else f"error {frame.get('code')}"
                evicted = frame.get("evicted_message_id")
                push.evicted_message_id = evicted if isinstance(evicted, str) else None
                size = frame.get("offline_size")
                push.offline_size = size if isinstance(size, int) else None
                push.reason = frame.get("reason") or frame.get("message")
    return pushes


def deliveries_on(events: Sequence[Event], connection: str) -> list[Delivery]:
    """Every frame with a ``delivery_id`` received on ``connection``, in arrival order."""
    deliveries: list[Delivery] = []
    epoch = -1
    for event in events:
        if event.connection != connection:
            continue
        if event.direction == CONNECTION and event.type in CONNECT_EVENTS:
            epoch = event.index
        elif event.direction == RECEIVED and isinstance(event.frame.get("delivery_id"), str):
            frame = event.frame
            message_id = frame.get("message_id")
            label = frame.get("content") if event.type == "pushed_message" else message_id
            deliveries.append(
                Delivery(
                    index=event.index,
                    ts_ns=event.ts_ns,
                    connection=connection,
                    epoch=epoch,
                    type=event.type,
                    delivery_id=frame["delivery_id"],
                    message_id=message_id if isinstance(message_id, str) else None,
                    label=str(label),
                    priority=str(frame.get("priority", "normal")),
                    redelivered=frame.get("redelivered") is True,
                    queued_at=frame.get("queued_at"),
                )
            )
    return deliveries


def unique(deliveries: Iterable[Delivery]) -> list[Delivery]:
    """The first receipt of each ``delivery_id`` (client-side de-duplication)."""
    seen: set[str] = set()
    kept = []
    for delivery in deliveries:
        if delivery.delivery_id not in seen:
            seen.add(delivery.delivery_id)
            kept.append(delivery)
    return kept


# -- checks --------------------------------------------------------------------------------


def priority_order(deliveries: Sequence[Delivery], pushes: Sequence[Push]) -> CheckResult:
    """Within each delivery pass: higher priority first, and FIFO within a priority.

    FIFO is judged per source: a pusher's messages of one priority must arrive in the order
    that pusher pushed them (several concurrent pushers have no order between them); replies
    that waited in the queue, by their ``queued_at``. Repeated receipts of a ``delivery_id``
    are left to :func:`no_duplicate_deliveries`.
    """
    push_of = {p.message_id: p for p in pushes}
    result = CheckResult("Offline delivery order (priority, then FIFO)", 0)
    passes: dict[int, list[Delivery]] = defaultdict(list)
    for delivery in unique_per_pass(deliveries):
        passes[delivery.epoch].append(delivery)
    for batch in passes.values():
        result.checked += len(batch)
        for before, after in zip(batch, batch[1:]):
            if RANK.get(after.priority, 9) < RANK.get(before.priority, 9):
                result.problems.append(
                    f"{after.describe()} was delivered after {before.describe()}: higher priority must come first"
                )
        latest: dict[tuple[str, str], tuple[Any, Delivery]] = {}
        for delivery in batch:
            push = push_of.get(delivery.message_id or "")
            source, order = (push.pusher, push.index) if push else ("queued replies", delivery.queued_at)
            key = (delivery.priority, source)
            previous = latest.get(key)
            if previous is not None and _before(order, previous[0]):
                result.problems.append(
                    f"{delivery.describe()} was delivered after {previous[1].describe()} although "
                    f"{'pushed' if push else 'queued'} earlier by {source}: FIFO within a priority"
                )
            else:
                latest[key] = (order, delivery)
    return result


def _before(a: Any, b: Any) -> bool:
    try:
        return a < b
    except TypeError:
        return False


def unique_per_pass(deliveries: Iterable[Delivery]) -> list[Delivery]:
    seen: set[tuple[int, str]] = set()
    kept = []
    for delivery in deliveries:
        key = (delivery.epoch, delivery.delivery_id)
        if key not in seen:
            seen.add(key)
            kept.append(delivery)
    return kept


def no_duplicate_deliveries(deliveries: Sequence[Delivery]) -> CheckResult:
    """Each queued message reaches the client once per delivery pass, and a repeat says so.

    Fails when a ``delivery_id`` arrives twice in one connection's pass, when it arrives again
    without ``redelivered: true``, or when one message comes under two ``delivery_id`` values.
    """
    result = CheckResult("No duplicate deliveries", len({d.delivery_id for d in deliveries}))
    per_pass = Counter((d.epoch, d.delivery_id) for d in deliveries)
    label_of = {d.delivery_id: d.describe() for d in deliveries}
    for (_, delivery_id), count in per_pass.items():
        if count > 1:
            unflagged = sum(1 for d in deliveries if d.delivery_id == delivery_id and not d.redelivered)
            result.problems.append(
                f"{label_of[delivery_id]} (delivery {delivery_id}) arrived {count} times in one delivery pass"
                + (f", {unflagged} of them without redelivered: true" if unflagged > 1 else "")
            )
    seen: set[str] = set()
    for delivery in deliveries:
        repeated_in_pass = per_pass[(delivery.epoch, delivery.delivery_id)] > 1
        if delivery.delivery_id in seen and not delivery.redelivered and not repeated_in_pass:
            result.problems.append(
                f"{delivery.describe()} (delivery {delivery.delivery_id}) arrived again without redelivered: true"
            )
        seen.add(delivery.delivery_id)
    ids_of: dict[str, set[str]] = defaultdict(set)
    for delivery in deliveries:
        if delivery.message_id:
            ids_of[delivery.message_id].add(delivery.delivery_id)
    for message_id, ids in ids_of.items():
        if len(ids) > 1:
            result.problems.append(f"message {message_id} was delivered under {len(ids)} delivery ids ({', '.join(sorted(ids))})")
    # one problem per receipt is enough: drop exact repeats of the same text
    result.problems = list(dict.fromkeys(result.problems))
    return result


def evictions_respect_priority(pushes: Sequence[Push]) -> CheckResult:
    """No push evicted a queued message while a lower-priority one was queued.

    Replays the pushes to an offline user in order: an accepted push joins the model queue, an
    eviction leaves it. An eviction is wrong when the evicted message outranks another queued
    message, or the incoming push itself (then the incoming one should have been dropped).
    Valid while the user stays offline between the pushes (nothing delivered or expired).
    """
    result = CheckResult("Overflow evicts the lowest priority first", 0)
    queued: dict[str, Push] = {}
    for push in pushes:
        evicted = queued.pop(push.evicted_message_id, None) if push.evicted_message_id else None
        if push.evicted_message_id:
            result.checked += 1
            if evicted is None:
                result.problems.append(
                    f"pushing {push.describe()} evicted {push.evicted_message_id}, which was not queued"
                )
            else:
                lower = [p for p in [*queued.values(), push] if RANK[p.priority] > RANK[evicted.priority]]
                if lower:
                    result.problems.append(
                        f"pushing {push.describe()} evicted {evicted.describe()} while "
                        + ", ".join(p.describe() for p in lower[:5])
                        + " (lower priority) "
                        + ("was" if len(lower) == 1 else "were")
                        + " queued or incoming"
                    )
        if push.status in ("queued", "delivered"):
            queued[push.message_id] = push
    return result


@dataclass
class Accounting:
    """Where every pushed message went."""

    pushed: int = 0
    delivered: list[Push] = field(default_factory=list)
    dropped: list[Push] = field(default_factory=list)
    rejected: list[Push] = field(default_factory=list)
    expired: list[Push] = field(default_factory=list)
    unaccounted: list[Push] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "pushed": self.pushed,
            "delivered": len(self.delivered),
            "dropped": len(self.dropped),
            "rejected": len(self.rejected),
            "expired": len(self.expired),
            "unaccounted": len(self.unaccounted),
        }

    def result(self) -> CheckResult:
        counts = self.counts()
        name = (
            "Offline accounting (pushed {pushed} = delivered {delivered} + dropped {dropped} + "
            "rejected {rejected} + expired {expired})"
        ).format(**counts)
        return CheckResult(name, self.pushed, list(self.problems))


def connects_on(events: Sequence[Event], connection: str) -> list[tuple[int, int]]:
    """``(history index, start of the attempt in ns)`` of every connect of ``connection``."""
    return [
        (e.index, int(e.frame.get("started_ns", e.ts_ns)))
        for e in events
        if e.connection == connection and e.direction == CONNECTION and e.type in CONNECT_EVENTS
    ]


def account(
    pushes: Sequence[Push],
    deliveries: Sequence[Delivery],
    *,
    connects: Sequence[tuple[int, int]],
    default_ttl_s: float | None,
    server_expired: int | None,
    tolerance_s: float = 0.25,
) -> Accounting:
    """Sort every push into delivered, dropped, rejected or expired, and find what is missing.

    A push not delivered, dropped (by its result or by a later eviction) or rejected may only
    have expired: that needs its TTL (``ttl_s`` of the push, else ``default_ttl_s``) to have run
    out before the user's first connect after the push (``connects``: index and start time),
    within ``tolerance_s``; otherwise it is unaccounted for (lost). A message first received
    although its TTL had clearly run out is a problem too. ``server_expired`` (the server's
    own count of expiries for the user) must match the messages that could have expired.
    """
    books = Accounting(pushed=len(pushes))
    first_receipt: dict[str, int] = {}
    for delivery in deliveries:
        if delivery.message_id is not None:
            first_receipt.setdefault(delivery.message_id, delivery.ts_ns)
    delivered_ids = set(first_receipt)
    evicted_ids = {p.evicted_message_id for p in pushes if p.evicted_message_id}
    tolerance_ns = int(tolerance_s * 1e9)
    for push in pushes:
        reconnect_ns = next((started for index, started in connects if index > push.index), None)
        ttl = push.ttl_s if push.ttl_s is not None else default_ttl_s
        deadline_early = push.sent_ns + int(ttl * 1e9) if ttl is not None else None
        deadline_late = (push.result_ns or push.sent_ns) + int(ttl * 1e9) if ttl is not None else None
        was_dropped = push.status == "dropped" or push.message_id in evicted_ids
        if push.message_id in delivered_ids:
            books.delivered.append(push)
            if was_dropped:
                books.problems.append(f"{push.describe()} was reported dropped but was delivered")
            received = first_receipt[push.message_id]
            if deadline_late is not None and received > deadline_late + tolerance_ns:
                books.problems.append(
                    f"{push.describe()} was delivered {(received - deadline_late) / 1e9:.2f} s after its TTL "
                    f"of {ttl:g} s ran out"
                )
        elif was_dropped:
            books.dropped.append(push)
        elif push.status == "rejected":
            books.rejected.append(push)
        elif push.status is None or push.status.startswith("error"):
            books.unaccounted.append(push)
            books.problems.append(f"{push.describe()} got no push_result ({push.status or 'no reply'})")
        elif (
            reconnect_ns is not None
            and deadline_early is not None
            and reconnect_ns >= deadline_early - tolerance_ns
        ):
            books.expired.append(push)
        else:
            books.unaccounted.append(push)
            when = "before its TTL ran out" if reconnect_ns is not None else "(the user has not reconnected since)"
            books.problems.append(f"{push.describe()} was {push.status} but never delivered {when}: lost")
    if server_expired is not None and server_expired != len(books.expired):
        listed = ", ".join(p.describe() for p in books.expired) or "none"
        books.problems.append(
            f"the server counts {server_expired} expired, but {len(books.expired)} pushed message(s) could "
            f"have expired by their TTL ({listed})"
        )
    return books
