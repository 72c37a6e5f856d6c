"""Checks over the History: ordering, duplicates, loss, outcomes, delivery, response times.

Every check looks at what happened since the current test started (optionally on one
connection) and fails naming the offending messages. Measuring keywords return the value and
take an optional assertion operator and threshold, recorded in the test's measurement table.
"""

from __future__ import annotations

import enum
from typing import Any

from assertionengine import AssertionOperator
from robot.api.deco import keyword

from ..context import LibraryComponent
from ..engine import checks
from ..engine.history import RECEIVED, SENT, Event
from ..engine.metrics import LatencyHistogram


class Statistic(enum.Enum):
    """A summary statistic of a set of times."""

    mean = "mean"
    max = "max"
    min = "min"
    p50 = "p50"
    p90 = "p90"
    p95 = "p95"
    p99 = "p99"
    p999 = "p99.9"


def percentile_of(statistic: Statistic) -> float | None:
    """The percentile (0–100) a statistic names, or ``None`` for mean, min and max."""
    return None if statistic in (Statistic.mean, Statistic.max, Statistic.min) else float(statistic.value[1:])


def sample_figures(count: int, statistic: Statistic, interval: Any) -> dict[str, Any]:
    """The ``percentile``/``samples``/``interval`` arguments of ``Context.check`` for a statistic.

    ``interval`` is the statistic's confidence interval (a pair, or None: too few samples).
    Mean, min and max carry their sample count only.
    """
    percentile = percentile_of(statistic)
    if percentile is None:
        return {"samples": count}
    return {"percentile": percentile, "samples": count, "interval": tuple(interval) if interval else None}


def measured_statistic(histogram: LatencyHistogram, statistic: Statistic) -> tuple[float, dict[str, Any]]:
    """A statistic of ``histogram`` and what its row carries: the sample count and, for a
    percentile, its confidence interval (the keyword arguments of ``Context.check``)."""
    percentile = percentile_of(statistic)
    interval = histogram.interval(percentile) if percentile is not None else None
    return statistic_of(histogram, statistic), sample_figures(histogram.count, statistic, interval)


def statistic_of(histogram: LatencyHistogram, statistic: Statistic) -> float:
    if statistic is Statistic.mean:
        return histogram.mean
    if statistic is Statistic.max:
        return histogram.max
    if statistic is Statistic.min:
        return histogram.min
    return histogram.percentile(float(statistic.value[1:]))


class CheckKeywords(LibraryComponent):
    """Delivery-guarantee checks and measurements over everything this test sent and received."""

    def _events(self, connection: str | None) -> list[Event]:
        events = self.ctx.history.snapshot(self.ctx.test_mark)
        return [e for e in events if e.connection == connection] if connection else events


    @keyword(tags=("check", "ordering"))
    def responses_should_be_in_send_order(self, response_type: str = "ai_response", *, connection: str | None = None) -> int:
        """Fails if any message was answered after a message sent later on the same connection.

        The failure names each pair: ``seq-msg-7 (sequence 7) was answered after seq-msg-9
        (sequence 9), which was sent later, on connection main``. Returns how many answered
        messages were checked; fails too if none was.

        | Responses Should Be In Send Order
        """
        result = checks.responses_in_send_order(self._events(connection), response_type)
        if result.checked == 0:
            result.problems.append(f"no {response_type} to check")
        return self._enforce(result)

    @keyword(tags=("check", "idempotency"))
    def responses_should_have_no_duplicates(self, response_type: str = "ai_response", *, connection: str | None = None) -> int:
        """Fails if any message got more than one ``response_type``, naming each and how many it got.

        | Responses Should Have No Duplicates
        """
        return self._enforce(checks.no_duplicate_responses(self._events(connection), response_type))

    @keyword(tags=("check", "loss"))
    def every_message_should_be_answered(self, response_type: str = "ai_response", *, connection: str | None = None) -> int:
        """Fails if any message sent in this test has no ``response_type``, naming each one.

        | Every Message Should Be Answered
        """
        result = checks.every_message_answered(self._events(connection), response_type)
        if result.checked == 0:
            result.problems.append("no user_message was sent in this test")
        return self._enforce(result)

    @keyword(tags=("check", "loss", "idempotency"))
    def every_message_should_have_exactly_one_outcome(self, *, connection: str | None = None) -> int:
        """Fails unless every send attempt got exactly one reply and no message was processed twice.

        Replies are ``ai_response``, ``duplicate_rejected``, ``queue_full`` and ``error``.
        The failure names each message with its attempts and replies.

        | Every Message Should Have Exactly One Outcome
        """
        result = checks.exactly_one_outcome(self._events(connection))
        if result.checked == 0:
            result.problems.append("no user_message was sent in this test")
        return self._enforce(result)

    @keyword(tags=("check", "measure", "loss"))
    def get_delivery_ratio(
        self,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        response_type: str = "ai_response",
        connection: str | None = None,
    ) -> float:
        """Returns answered ÷ sent distinct messages in this test (0.0–1.0), optionally asserting it.

        | Get Delivery Ratio    >=    0.95
        """
        delivered = checks.delivery(self._events(connection), response_type)
        if delivered.sent == 0:
            raise AssertionError("No user_message was sent in this test: there is no delivery ratio.")
        return self.ctx.check(
            "delivery ratio",
            round(delivered.ratio, 6),
            operator,
            expected,
            unit="ratio",
            message=f"{delivered.answered} of {delivered.sent} messages answered",
        )

    @keyword(tags=("check", "measure", "latency"))
    def get_response_time(
        self,
        statistic: Statistic = Statistic.p95,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        response_type: str = "ai_response",
        connection: str | None = None,
    ) -> float:
        """Returns a statistic of response times in seconds, optionally asserting it.

        A response time runs from the message's *intended* send time (its slot in the
        open-loop schedule) to its first ``response_type``, on one monotonic clock, recorded
        in an HDR histogram. ``statistic`` is ``mean``, ``min``, ``max``, ``p50``, ``p90``,
        ``p95``, ``p99`` or ``p99.9``. Thresholds accept Robot times (``500 ms``, ``1 s``).
        Unanswered messages have no response time: check delivery separately.

        | Get Response Time    p95    <=    1 s
        | Get Response Time    mean    <    500 ms
        """
        times = checks.response_times_ns(self._events(connection), response_type)
        if not times:
            raise AssertionError(f"No {response_type} in this test: there are no response times.")
        value, samples = measured_statistic(LatencyHistogram.of(times), statistic)
        return self.ctx.check(f"response time {statistic.value}", round(value, 6), operator, expected, unit="s", **samples)

    @keyword(tags=("check", "measure", "throughput"))
    def get_answered_throughput(
        self,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        response_type: str = "ai_response",
        connection: str | None = None,
    ) -> float:
        """Returns answered messages per second, optionally asserting it.

        Measured at the client: distinct messages answered ÷ time from the first message's
        intended send to the last answer. Not ``1 / interval``: a slow server lowers it.

        | Get Answered Throughput    >=    10
        """
        events = self._events(connection)
        sent = [e for e in events if e.direction == SENT and e.type == "user_message" and e.message_id]
        answered = {}
        for e in events:
            if e.direction == RECEIVED and e.type == response_type and e.message_id and e.message_id not in answered:
                answered[e.message_id] = e.ts_ns
        if not sent or not answered:
            raise AssertionError(f"No answered messages in this test: there is no throughput ({len(sent)} sent).")
        span_s = (max(answered.values()) - min(e.scheduled_ns for e in sent)) / 1e9
        rate = len(answered) / span_s if span_s > 0 else float(len(answered))
        return self.ctx.check(
            "answered throughput",
            round(rate, 3),
            operator,
            expected,
            unit="msg/s",
            message=f"{len(answered)} answered in {span_s:.3f} s",
        )

    @keyword(tags=("check", "measure", "backpressure"))
    def get_priority_preservation(
        self,
        priority: str = "high",
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        under_backpressure: bool = False,
        connection: str | None = None,
    ) -> float:
        """Returns the share (0.0–1.0) of ``priority`` messages that were processed, optionally asserting it.

        With ``under_backpressure``, only messages sent at or after the first message the
        server refused with ``queue_full`` count: the ones whose fate the priority decides.
        Fails when no such message exists (nothing to measure).

        | Get Priority Preservation    high    >=    0.8
        | Get Priority Preservation    high    >=    0.8    under_backpressure=True
        """
        events = self._events(connection)
        sent = [e for e in events if e.direction == SENT and e.type == "user_message" and e.message_id]
        full = {e.message_id for e in events if e.direction == RECEIVED and e.type == "queue_full"}
        answered = {e.message_id for e in events if e.direction == RECEIVED and e.type == "ai_response"}
        if under_backpressure:
            first_refused = next((i for i, e in enumerate(sent) if e.message_id in full), None)
            if first_refused is None:
                raise AssertionError("The server never answered queue_full: there was no backpressure to measure under.")
            sent = sent[first_refused:]
        chosen = {e.message_id for e in sent if e.frame.get("priority", "normal") == priority}
        if not chosen:
            where = " under backpressure" if under_backpressure else ""
            raise AssertionError(f"No {priority}-priority message was sent{where}: nothing to measure.")
        kept = chosen & answered
        refused = sorted(chosen & full)
        name = f"{priority}-priority processed" + (" under backpressure" if under_backpressure else "")
        detail = f"{len(kept)} of {len(chosen)} processed" + (
            f"; refused: {', '.join(refused[:10])}" if refused else ""
        )
        return self.ctx.check(name, round(len(kept) / len(chosen), 6), operator, expected, unit="ratio", message=detail)

