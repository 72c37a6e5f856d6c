"""Per-connection delivery tracking with bounded state: order, gaps, duplicates and loss.

A connection sends sequence numbers 0, 1, 2, … in order. Which of them have been answered is
kept as a set of disjoint intervals: with no loss that is one interval however long the run,
and every lost message adds at most one. Past :data:`MAX_INTERVALS` the oldest interval is
forgotten and answers below it are counted as ``untracked`` instead of being judged, so even a
server that loses every other message cannot make the client's memory grow without bound.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Intervals kept per set before the oldest is forgotten.
MAX_INTERVALS = 4096
#: Ordering violations kept per connection as examples for the failure message.
MAX_EXAMPLES = 5


class IntervalSet:
    """A set of non-negative integers kept as sorted disjoint half-open intervals."""

    __slots__ = ("_ends", "_starts", "forgotten", "horizon")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        #: Members below ``horizon`` are no longer known (see :data:`MAX_INTERVALS`).
        self.horizon = 0
        self.forgotten = 0

    def __len__(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True)) + self.forgotten

    @property
    def intervals(self) -> int:
        return len(self._starts)

    def add(self, x: int) -> bool | None:
        """Add ``x``; True if it was new, False if already present, None if below the horizon."""
        if x < self.horizon:
            return None
        starts, ends = self._starts, self._ends
        if ends and ends[-1] == x:  # the common case: the next one in order
            ends[-1] = x + 1
            return True
        i = bisect.bisect_right(starts, x) - 1
        if i >= 0 and x < ends[i]:
            return False
        joins_left = i >= 0 and ends[i] == x
        joins_right = i + 1 < len(starts) and starts[i + 1] == x + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = x + 1
        elif joins_right:
            starts[i + 1] = x
        else:
            starts.insert(i + 1, x)
            ends.insert(i + 1, x + 1)
            if len(starts) > MAX_INTERVALS:
                self.forgotten += ends[0] - starts[0]
                self.horizon = starts[1]
                del starts[0], ends[0]
        return True

    def __contains__(self, x: int) -> bool:
        i = bisect.bisect_right(self._starts, x) - 1
        return i >= 0 and x < self._ends[i]

    def missing(self, below: int) -> Iterator[tuple[int, int]]:
        """The gaps ``[start, end)`` of ``[horizon, below)`` that are not in the set."""
        position = self.horizon
        for start, end in zip(self._starts, self._ends, strict=True):
            if start >= below:
                break
            if start > position:
                yield position, start
            position = max(position, end)
        if position < below:
            yield position, below

    def count_missing(self, below: int) -> int:
        return sum(end - start for start, end in self.missing(below))


@dataclass(slots=True)
class ConnectionTracker:
    """What one load connection sent and what came back, in bounded memory."""

    index: int
    #: Sequence numbers handed to this connection by the schedule (sent or not).
    scheduled: int = 0
    #: Sequence numbers sent at least once (always the prefix ``[0, sent)``).
    sent: int = 0
    resent: int = 0
    answered: IntervalSet = field(default_factory=IntervalSet)
    #: Answered or confirmed (``duplicate_rejected``: the server already processed it).
    delivered: IntervalSet = field(default_factory=IntervalSet)
    #: Any outcome: answered, confirmed, refused (``queue_full``) or error.
    settled: IntervalSet = field(default_factory=IntervalSet)
    duplicated: int = 0
    reordered: int = 0
    untracked: int = 0
    refused: int = 0
    confirmed: int = 0
    errors: int = 0
    highest_answered: int = -1
    examples: list[str] = field(default_factory=list)
    latency_sum_ns: int = 0
    latency_max_ns: int = 0
    disconnects: int = 0
    injected_drops: int = 0
    reconnects: int = 0

    def on_answer(self, seq: int, latency_ns: int, name: str) -> bool:
        """Record an answer (``ai_response``/``throughput_response``); True if it is the first for ``seq``."""
        new = self.answered.add(seq)
        if new is None:
            self.untracked += 1
            return False
        if not new:
            self.duplicated += 1
            self._example(f"sequence {seq} answered twice on connection {name}")
            return False
        self.delivered.add(seq)
        self.settled.add(seq)
        if seq < self.highest_answered:
            self.reordered += 1
            self._example(f"sequence {seq} arrived after {self.highest_answered} on connection {name}")
        else:
            self.highest_answered = seq
        self.latency_sum_ns += latency_ns
        self.latency_max_ns = max(self.latency_max_ns, latency_ns)
        return True

    def on_other_outcome(self, seq: int, kind: str) -> None:
        """A ``duplicate_rejected`` (confirmed), ``queue_full`` (refused) or ``error`` for ``seq``."""
        self.settled.add(seq)
        if kind == "duplicate_rejected":
            self.confirmed += 1
            self.delivered.add(seq)
        elif kind == "queue_full":
            self.refused += 1
        else:
            self.errors += 1

    def _example(self, text: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text)

    @property
    def answered_count(self) -> int:
        return len(self.answered)

    @property
    def delivered_count(self) -> int:
        return len(self.delivered)

    @property
    def unsettled(self) -> int:
        """Sent messages with no outcome at all (lost, unless still in flight)."""
        return self.settled.count_missing(self.sent)

    @property
    def unanswered(self) -> int:
        return self.answered.count_missing(self.sent)

    @property
    def gaps(self) -> int:
        """Runs of consecutive sent sequence numbers that got no outcome."""
        return sum(1 for _ in self.settled.missing(self.sent))

    def unsettled_sequences(self) -> Iterator[int]:
        for start, end in self.settled.missing(self.sent):
            yield from range(start, end)

    @property
    def mean_latency_s(self) -> float:
        answered = self.answered_count - self.answered.forgotten
        return self.latency_sum_ns / answered / 1e9 if answered > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "connection": self.index,
            "scheduled": self.scheduled,
            "sent": self.sent,
            "resent": self.resent,
            "answered": self.answered_count,
            "delivered": self.delivered_count,
            "confirmed": self.confirmed,
            "refused": self.refused,
            "errors": self.errors,
            "unsettled": self.unsettled,
            "gaps": self.gaps,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "untracked": self.untracked,
            "mean_latency_s": round(self.mean_latency_s, 6),
            "max_latency_s": round(self.latency_max_ns / 1e9, 6),
            "disconnects": self.disconnects,
            "injected_drops": self.injected_drops,
            "reconnects": self.reconnects,
            "examples": list(self.examples),
        }
