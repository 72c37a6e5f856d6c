"""Checkers over the History: ordering, duplicates, loss, outcomes, delivery.

Each checker takes a list of :class:`~.history.Event` (usually everything since the start of
the test) and returns a :class:`CheckResult`. A result that failed names the offending messages
and the connection they were on, so the failure message tells a reader what broke and where.
Checkers are plain functions with no I/O, so they are unit-tested directly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .history import OUTCOME_TYPES, RECEIVED, SENT, Event

#: How many offending messages a failure message lists before summarising the rest.
MAX_LISTED = 10


@dataclass
class CheckResult:
    """What a checker found."""

    name: str
    checked: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.name}: OK ({self.checked} checked)"
        listed = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(listed)
        tail = f"; and {more} more" if more > 0 else ""
        if self.checked == 0:
            return f"{self.name}: nothing to check: " + "; ".join(listed) + tail
        return f"{self.name}: {len(self.problems)} of {self.checked} failed: " + "; ".join(listed) + tail

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise AssertionError(self.summary())


def _sent_messages(events: Iterable[Event], message_type: str = "user_message") -> list[Event]:
    return [e for e in events if e.direction == SENT and e.type == message_type and e.message_id]


def _received(events: Iterable[Event], types: Iterable[str] | str) -> list[Event]:
    wanted = {types} if isinstance(types, str) else set(types)
    return [e for e in events if e.direction == RECEIVED and e.type in wanted]


def _describe(event: Event) -> str:
    seq = event.sequence_id
    return f"{event.message_id}" + (f" (sequence {seq})" if seq is not None else "")


def responses_in_send_order(
    events: Sequence[Event], response_type: str = "ai_response", message_type: str = "user_message"
) -> CheckResult:
    """Responses arrive in the order their messages were first sent, per connection.

    A response to a message sent earlier than one already answered on the same connection is
    an ordering violation. Repeated responses to the same message are ignored here (that is
    :func:`no_duplicate_responses`' job); so are responses to messages not sent in ``events``.
    """
    first_sent: dict[tuple[str, str], int] = {}
    sent_event: dict[tuple[str, str], Event] = {}
    order = 0
    for event in _sent_messages(events, message_type):
        key = (event.connection, event.message_id)
        if key not in first_sent:
            first_sent[key] = order
            sent_event[key] = event
            order += 1
    result = CheckResult("Responses in send order", 0)
    latest: dict[str, tuple[int, Event]] = {}
    seen: set[tuple[str, str]] = set()
    for response in _received(events, response_type):
        key = (response.connection, response.message_id or "")
        if key not in first_sent or key in seen:
            continue
        seen.add(key)
        result.checked += 1
        position = first_sent[key]
        previous = latest.get(response.connection)
        if previous is not None and position < previous[0]:
            result.problems.append(
                f"{_describe(sent_event[key])} was answered after {_describe(previous[1])}, "
                f"which was sent later, on connection {response.connection}"
            )
        else:
            latest[response.connection] = (position, sent_event[key])
    return result


def no_duplicate_responses(events: Sequence[Event], response_type: str = "ai_response") -> CheckResult:
    """No message is answered (processed) more than once."""
    counts = Counter((e.connection, e.message_id) for e in _received(events, response_type) if e.message_id)
    result = CheckResult(f"No duplicate {response_type}", len(counts))
    for (connection, message_id), count in counts.items():
        if count > 1:
            result.problems.append(f"{message_id} got {count} {response_type} on connection {connection}")
    return result


def every_message_answered(
    events: Sequence[Event], response_type: str = "ai_response", message_type: str = "user_message"
) -> CheckResult:
    """Every distinct message sent got at least one response of ``response_type``."""
    answered = {e.message_id for e in _received(events, response_type)}
    sent: dict[str, Event] = {}
    for event in _sent_messages(events, message_type):
        sent.setdefault(event.message_id, event)
    result = CheckResult(f"Every message got an {response_type}", len(sent))
    for message_id, event in sent.items():
        if message_id not in answered:
            result.problems.append(f"{_describe(event)} sent on connection {event.connection} got no {response_type}")
    return result


def exactly_one_outcome(events: Sequence[Event], message_type: str = "user_message") -> CheckResult:
    """Every send attempt got exactly one reply, and no message was processed twice.

    A reply is any of ``ai_response``, ``duplicate_rejected``, ``queue_full`` or ``error``
    carrying the message's ``message_id``. A message whose attempts got fewer replies than
    attempts lost an outcome; more replies than attempts, or two ``ai_response``, means it was
    answered twice.
    """
    attempts: Counter[str] = Counter()
    first: dict[str, Event] = {}
    for event in _sent_messages(events, message_type):
        attempts[event.message_id] += 1
        first.setdefault(event.message_id, event)
    replies: dict[str, Counter[str]] = defaultdict(Counter)
    for event in _received(events, OUTCOME_TYPES):
        if event.message_id in attempts:
            replies[event.message_id][event.type] += 1
    result = CheckResult("Exactly one outcome per message", len(attempts))
    for message_id, tried in attempts.items():
        got = replies.get(message_id, Counter())
        total = sum(got.values())
        what = ", ".join(f"{n} {kind}" for kind, n in sorted(got.items())) or "no reply"
        if got["ai_response"] > 1:
            result.problems.append(f"{_describe(first[message_id])} was answered {got['ai_response']} times ({what})")
        elif total < tried:
            result.problems.append(f"{_describe(first[message_id])}: {tried} attempt(s) but {what}")
        elif total > tried:
            result.problems.append(f"{_describe(first[message_id])}: {tried} attempt(s) but {total} replies ({what})")
    return result


@dataclass
class Delivery:
    sent: int
    answered: int

    @property
    def ratio(self) -> float:
        return self.answered / self.sent if self.sent else 0.0


def delivery(events: Sequence[Event], response_type: str = "ai_response", message_type: str = "user_message") -> Delivery:
    """How many distinct messages were sent, and how many of them got a ``response_type``."""
    sent = {e.message_id for e in _sent_messages(events, message_type)}
    answered = {e.message_id for e in _received(events, response_type)} & sent
    return Delivery(len(sent), len(answered))


def response_times_ns(
    events: Sequence[Event], response_type: str = "ai_response", message_type: str = "user_message"
) -> list[int]:
    """Per answered message: first response time minus the first attempt's *intended* send time.

    Measured on one monotonic clock. For messages sent on an open-loop schedule the intended
    time is the scheduled one, so a sender that fell behind does not hide server delay.
    """
    start: dict[str, int] = {}
    for event in _sent_messages(events, message_type):
        start.setdefault(event.message_id, event.scheduled_ns)
    times: list[int] = []
    done: set[str] = set()
    for event in _received(events, response_type):
        message_id = event.message_id
        if message_id in start and message_id not in done:
            done.add(message_id)
            times.append(max(0, event.ts_ns - start[message_id]))
    return times
