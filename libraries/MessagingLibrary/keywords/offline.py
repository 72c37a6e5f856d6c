"""Keywords for the offline queue: push to a user, reconnect, wait for and check the deliveries.

``user`` names the user a push is for (or whose offline queue is meant) by one of its
connections, open or closed (``alice``); ``connection`` names the connection deliveries arrive
on (default: the current one); ``pusher`` is the admin connection a push goes from (default
``admin``, opened on first use with the admin token). Messages are named by *labels*: the label is the pushed
``content`` and names the message in every failure, and ``LABEL:PRIORITY`` sets its priority
(``H1:high``). Deliveries are the frames the user receives with a ``delivery_id``; they are
acknowledged automatically unless `Set Automatic Acknowledgement` turned that off.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from assertionengine import AssertionOperator
from robot.api import SkipExecution, logger
from robot.api.deco import keyword

from ..context import Artefact, LibraryComponent, Measurement, seconds
from ..engine import offline
from ..engine.history import Event
from ..engine.metrics import LatencyHistogram
from ..engine.session import ServerError, Session
from .checks import Statistic, measured_statistic
from .connection import ConnectionKeywords
from .state import field_value

ADMIN_ALIAS = "admin"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


class OfflineQueueKeywords(LibraryComponent):
    """Pushing to users who are away, and checking what the offline queue delivers."""

    def __init__(self, ctx, connections: ConnectionKeywords) -> None:
        super().__init__(ctx)
        self._connections = connections

    # -- helpers -----------------------------------------------------------------------------

    def _events(self) -> list[Event]:
        return self.ctx.history.snapshot(self.ctx.test_mark)

    def _user_id(self, user: str) -> str:
        session = self.ctx.session(user)
        if session.user_id is None and session.is_open:
            self.ctx.run(
                session.wait_until(lambda: session.session_started is not None, 5.0, lambda: "waiting for session_started"),
                5.0,
                "Waiting for session_started",
            )
        if session.user_id is None:
            raise SkipExecution(
                f"Cannot address a push to '{user}': the server sent no session_started with a user_id on that "
                "connection, so the user's id is unknown."
            )
        return session.user_id

    def _admin(self, pusher: str | None) -> Session:
        connection = pusher or ADMIN_ALIAS
        session = self.ctx.sessions.get(connection)
        if session is not None and session.is_open:
            return session
        if pusher is not None:
            raise RuntimeError(f"The pushing connection '{pusher}' is not open.")
        current = self.ctx.current
        self._connections.connect(ADMIN_ALIAS, admin=True)
        self.ctx.current = current
        logger.info("Opened the admin connection 'admin' to push (closed when this test or suite ends).")
        return self.ctx.sessions[ADMIN_ALIAS]

    def _open_pusher(self, connection: str) -> Session:
        current = self.ctx.current
        self._connections.connect(connection, admin=True)
        self.ctx.current = current
        return self.ctx.sessions[connection]

    def _push_frame(self, user_id: str, text: str, default_priority: str, ttl: timedelta | None) -> dict[str, Any]:
        label, priority = offline.parse_label(text, default_priority)
        frame: dict[str, Any] = {
            "type": "push",
            "to_user": user_id,
            "message_id": self.ctx.generated_id(f"push-{self.ctx.next_id()}-{label}"),
            "content": label,
            "priority": priority,
        }
        if ttl is not None:
            frame["ttl_s"] = seconds(ttl)
        return frame

    def _send_pushes(self, plan: list[tuple[Session, list[dict[str, Any]]]], interval: float) -> list[dict[str, Any]]:
        limit = self.ctx.default_timeout
        total = sum(len(frames) for _, frames in plan)

        async def pusher(session: Session, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
            results = []
            for n, frame in enumerate(frames):
                if n and interval:
                    await asyncio.sleep(interval)
                results.append(await session.request(frame, limit))
            return results

        async def everyone() -> list[list[dict[str, Any]]]:
            return await asyncio.gather(*(pusher(session, frames) for session, frames in plan))

        try:
            per_pusher = self.ctx.run(everyone(), limit * total + interval * total, f"Pushing {total} message(s)")
        except ServerError as error:
            if error.code == "unsupported":
                raise self.ctx.unsupported("push", error.frame.get("message") or "") from None
            if error.code == "forbidden":
                raise AssertionError(
                    f"push was refused ({error}): the admin token (APEX_ADMIN_TOKEN) is not an admin on this server."
                ) from None
            raise RuntimeError(f"push was refused: {error}") from None
        results = [result for batch in per_pusher for result in batch]
        for result in results:
            logger.info(
                f"push {result.get('message_id')}: {result.get('status')}"
                + (f", evicted {result['evicted_message_id']}" if result.get("evicted_message_id") else "")
                + (f" ({result['reason']})" if result.get("reason") else "")
            )
        return results

    def _pushes(self, user: str) -> list[offline.Push]:
        return offline.pushes_to(self._events(), self._user_id(user))

    def _deliveries(self, connection: str | None, current_pass: bool = False) -> list[offline.Delivery]:
        session = self.ctx.session(connection)
        since = session.epoch_mark if current_pass else max(self.ctx.test_mark, session.first_mark)
        return offline.deliveries_on(self.ctx.history.snapshot(since), session.alias)

    def _queue_state_of(self, user: str, pusher: str | None = None) -> dict[str, Any]:
        """The user's queue state: on its own connection when open, else read by an admin."""
        session = self.ctx.session(user)
        limit = self.ctx.default_timeout
        if session.is_open:
            frame: dict[str, Any] = {"type": "get_queue_state"}
            asker = session
        else:
            frame = {"type": "get_queue_state", "user_id": self._user_id(user)}
            asker = self._admin(pusher)
        try:
            state = self.ctx.run(asker.request(frame, limit), limit, "get_queue_state")
        except ServerError as error:
            if error.code == "unsupported":
                raise self.ctx.unsupported("get_queue_state", error.frame.get("message") or "") from None
            if error.code in ("forbidden", "bad_field"):
                raise SkipExecution(
                    f"The server cannot show the queue state of user '{user}' while it is away ({error})."
                ) from None
            raise RuntimeError(f"get_queue_state was refused: {error}") from None
        if "user_id" in frame and state.get("user_id") != frame["user_id"]:
            raise SkipExecution(
                f"The server ignored user_id in get_queue_state (answered for {state.get('user_id')!r}): it cannot "
                f"show the queue state of user '{user}' while it is away."
            )
        return state

    # -- pushing -----------------------------------------------------------------------------

    @keyword(tags=("offline", "push"))
    def push_message(
        self,
        user: str,
        label: str,
        *,
        priority: str = "normal",
        ttl: timedelta | None = None,
        pusher: str | None = None,
    ) -> dict[str, Any]:
        """Pushes one message to ``user`` and returns the server's ``push_result``.

        ``label`` is the message's content and its name in every report; a final
        ``:PRIORITY`` (``H1:high``, ``Report ready:critical``) overrides ``priority``
        (``critical``, ``high``, ``normal``, ``low``); a colon followed by a space or digits
        (``Note: meet at 10:30``) is just text. ``ttl`` overrides
        the user's offline TTL for this message. The push goes from connection ``pusher``
        (default: the ``admin`` connection, opened with the admin token on first use). The
        result's ``status`` is ``delivered`` (the user is online), ``queued``, ``dropped`` or
        ``rejected``; an eviction is named in ``evicted_message_id``. A server without
        ``push`` skips the test with that reason.

        Unlike `Push Messages`, the label is not split at spaces: it may be a sentence.

        | ${result} =    Push Message    alice    Hello
        | Push Message    alice    C1:critical    ttl=30 s
        """
        return self._push_labels(user, [label], priority, ttl, pusher, 0.0)[0]

    @keyword(tags=("offline", "push"))
    def push_messages(
        self,
        user: str,
        *labels: str,
        priority: str = "normal",
        ttl: timedelta | None = None,
        interval: timedelta = timedelta(0),
        pusher: str | None = None,
    ) -> list[dict[str, Any]]:
        """Pushes one message per label to ``user``, in order; returns the results.

        Each push waits for its ``push_result`` before the next is sent, then ``interval``.
        Labels may be separate arguments or one space-separated cell, each ``LABEL`` or
        ``LABEL:PRIORITY`` (see `Push Message`).

        | Push Messages    alice    N1    H1:high    N2    C:critical    L:low    H2:high    N3
        | Push Messages    alice    I1 I2 I3    ttl=2 s
        """
        texts = offline.split_labels(labels)
        if not texts:
            raise ValueError("Push Messages needs at least one label.")
        return self._push_labels(user, texts, priority, ttl, pusher, seconds(interval) or 0.0)

    def _push_labels(
        self, user: str, texts: list[str], priority: str, ttl: timedelta | None, pusher: str | None, interval: float
    ) -> list[dict[str, Any]]:
        if priority not in offline.RANK:
            raise ValueError(f"Unknown priority '{priority}': use one of {', '.join(offline.PRIORITIES)}.")
        user_id = self._user_id(user)
        frames = [self._push_frame(user_id, text, priority, ttl) for text in texts]
        return self._send_pushes([(self._admin(pusher), frames)], interval)

    @keyword(tags=("offline", "push"))
    def push_numbered_messages(
        self,
        user: str,
        count: int,
        *,
        prefix: str = "M",
        priority: str = "normal",
        ttl: timedelta | None = None,
        pusher: str | None = None,
    ) -> list[dict[str, Any]]:
        """Pushes ``count`` messages labelled ``<prefix>1`` … ``<prefix><count>``; returns the results.

        | Push Numbered Messages    alice    50    prefix=S
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}.")
        return self.push_messages(
            user, *[f"{prefix}{n}" for n in range(1, count + 1)], priority=priority, ttl=ttl, pusher=pusher
        )

    @keyword(tags=("offline", "push", "concurrency"))
    def push_from_several_pushers(
        self, user: str, *counts: int, interval: timedelta = timedelta(milliseconds=5), priority: str = "normal"
    ) -> list[dict[str, Any]]:
        """Pushes from one admin connection per count, all at once, to ``user``.

        Pusher *i* (connection ``pusher-<i>``) pushes ``counts[i]`` messages labelled
        ``P<i>.1``, ``P<i>.2`` …, each after the previous one's result and ``interval``, while
        the other pushers do the same, so their pushes interleave at the server. Returns
        every result.

        | Push From Several Pushers    alice    3    3    2
        """
        if not counts or any(int(c) < 1 for c in counts):
            raise ValueError(f"Give one positive count per pusher, got {list(counts)}.")
        user_id = self._user_id(user)
        plan = []
        for i, count in enumerate(counts, start=1):
            session = self._open_pusher(f"pusher-{i}")
            frames = [self._push_frame(user_id, f"P{i}.{n}", priority, None) for n in range(1, int(count) + 1)]
            plan.append((session, frames))
        return self._send_pushes(plan, seconds(interval) or 0.0)

    @keyword(tags=("offline", "push"))
    def get_push_results(self, user: str) -> list[dict[str, Any]]:
        """Returns every push to ``user`` in this test, in push order, with its outcome.

        Each item has ``label``, ``message_id``, ``priority``, ``pusher``, ``status``,
        ``evicted_message_id``, ``offline_size`` and ``reason``.

        | ${results} =    Get Push Results    alice
        """
        return [push.as_dict() for push in self._pushes(user)]

    @keyword(tags=("offline", "push", "check"))
    def push_results_should_be(self, user: str, *, dropped: str = "", rejected: str = "", message: str = "") -> None:
        """Checks which pushes to ``user`` were dropped (or evicted) and which were rejected.

        ``dropped`` and ``rejected`` are space-separated labels; every other push must have
        been ``queued`` or ``delivered``. A push counts as dropped when its own result says
        so or when a later push evicted it. Fails listing each push whose fate differs, with
        the server's status and reason, so a reject policy that silently drops is named.
        ``message`` (the rule at stake) starts the failure message.

        | Push Results Should Be    alice    dropped=N1 N2
        | Push Results Should Be    alice    rejected=N4 N5    message=Policy reject must refuse
        """
        pushes = self._pushes(user)
        if not pushes:
            raise AssertionError(f"No push to '{user}' in this test: nothing to check.")
        expected_dropped, expected_rejected = set(dropped.split()), set(rejected.split())
        evicted = {p.evicted_message_id: p for p in pushes if p.evicted_message_id}
        problems = []
        for push in pushes:
            want = (
                "dropped"
                if push.label in expected_dropped
                else "rejected" if push.label in expected_rejected else "queued or delivered"
            )
            if push.message_id in evicted:
                got = f"dropped (evicted by {evicted[push.message_id].label})"
                ok = want == "dropped"
            else:
                got = str(push.status) + (f" ({push.reason})" if push.reason and push.status != "queued" else "")
                ok = push.status == want or (want == "queued or delivered" and push.status in ("queued", "delivered"))
            if not ok:
                problems.append(f"{push.describe()}: expected {want}, got {got}")
        unknown = (expected_dropped | expected_rejected) - {p.label for p in pushes}
        if unknown:
            problems.append("no push is labelled " + ", ".join(sorted(unknown)))
        self.ctx.measurements.append(Measurement.exact("pushes with an unexpected result", len(problems), 0))
        if problems:
            prefix = f"{message.rstrip('.')}: " if message else ""
            raise AssertionError(
                f"{prefix}Push results differ for {len(problems)} of {len(pushes)} push(es): " + "; ".join(problems) + "."
            )

    @keyword(tags=("offline", "push", "measure", "resources"))
    def get_offline_queue_peak(self, user: str, operator: AssertionOperator | None = None, expected: Any = None) -> int:
        """Returns the most messages the server held for ``user`` after any push in this test.

        Read from each ``push_result``'s ``offline_size`` (waiting plus delivered but not yet
        acknowledged). Optionally asserts it: the queue must stay within its capacity.

        | Get Offline Queue Peak    alice    <=    5
        """
        sizes = [p.offline_size for p in self._pushes(user) if p.offline_size is not None]
        if not sizes:
            raise AssertionError(f"No push_result to '{user}' reported offline_size: there is no peak to measure.")
        return self.ctx.check("offline queue peak", max(sizes), operator, expected, unit="count")

    @keyword(tags=("offline", "push", "measure"))
    def get_push_rate(
        self, operator: AssertionOperator | None = None, expected: Any = None, *, user: str | None = None
    ) -> float:
        """Returns pushes confirmed per second in this test (to ``user`` only, if given), optionally asserting it.

        Measured from the first push sent to the last ``push_result`` received.

        | Get Push Rate    >    10
        """
        events = self._events()
        if user is not None:
            pushes = offline.pushes_to(events, self._user_id(user))
        else:
            users = {e.frame.get("to_user") for e in events if e.type == "push" and e.direction == "sent"}
            pushes = [p for uid in users if isinstance(uid, str) for p in offline.pushes_to(events, uid)]
        done = [p for p in pushes if p.result_ns is not None]
        if not done:
            raise AssertionError("No push got a result in this test: there is no push rate.")
        span_s = (max(p.result_ns for p in done) - min(p.sent_ns for p in pushes)) / 1e9
        rate = len(done) / span_s if span_s > 0 else float(len(done))
        return self.ctx.check(
            "push rate", round(rate, 3), operator, expected, unit="msg/s", message=f"{len(done)} confirmed in {span_s:.3f} s"
        )

    # -- receiving ---------------------------------------------------------------------------

    @keyword(tags=("offline", "delivery"))
    def set_automatic_acknowledgement(self, enabled: bool, connection: str | None = None) -> None:
        """Turns automatic acknowledgement of deliveries on (the default) or off for a connection.

        With it off, deliveries are not acknowledged until `Acknowledge Deliveries`, so the
        server must deliver them again (``redelivered: true``) after the connection drops.
        The setting survives `Reconnect`.

        | Set Automatic Acknowledgement    ${False}    alice
        """
        session = self.ctx.session(connection)
        session.auto_ack = bool(enabled)
        logger.info(f"Automatic acknowledgement on '{session.alias}': {'on' if enabled else 'off'}.")

    @keyword(tags=("offline", "delivery"))
    def acknowledge_deliveries(self, *delivery_ids: str, connection: str | None = None) -> int:
        """Acknowledges deliveries on a connection and returns how many ids were sent in the ``ack``.

        Without ids, every delivery received on the connection and not yet acknowledged.

        | Acknowledge Deliveries    connection=alice
        """
        session = self.ctx.session(connection)
        ids = list(delivery_ids) if delivery_ids else None
        sent = self.ctx.run(session.acknowledge(ids), self.ctx.default_timeout, "Sending ack")
        logger.info(f"Acknowledged {len(sent)} deliveries on '{session.alias}'.")
        return len(sent)

    @keyword(tags=("offline", "delivery", "wait"))
    def wait_for_queued_deliveries(
        self, connection: str | None = None, *, count: int | None = None, timeout: timedelta | None = None
    ) -> list[dict[str, Any]]:
        """Waits until ``count`` distinct queued messages arrived since the connection last (re)connected.

        Without ``count``, waits for as many as the server announced in ``session_started``
        (``queued``). Deliveries are counted once per ``delivery_id``. Fails at ``timeout``
        naming how many arrived and which pushed messages are still missing. Returns the
        deliveries (``label``, ``message_id``, ``delivery_id``, ``priority``,
        ``redelivered``, ``queued_at``, ``type``) in arrival order.

        | Reconnect    alice
        | ${deliveries} =    Wait For Queued Deliveries    alice    count=3
        """
        session = self.ctx.session(connection)
        limit = self._timeout(timeout)
        if count is None:
            self.ctx.run(
                session.wait_until(lambda: session.session_started is not None, limit, lambda: "waiting for session_started"),
                limit,
                "Waiting for session_started",
            )
            announced = (session.session_started or {}).get("queued")
            if not isinstance(announced, int):
                raise AssertionError("session_started announced no 'queued' count: pass count= explicitly.")
            count = announced

        def describe() -> str:
            arrived = offline.unique(self._deliveries(session.alias, current_pass=True))
            announced = (session.session_started or {}).get("queued")
            text = f"waiting for {_plural(count, 'queued delivery', 'queued deliveries')} ({len(arrived)} arrived"
            text += f": {', '.join(d.label for d in arrived[:10])}" if arrived else ""
            text += f"; session_started announced {announced})" if announced is not None else ")"
            missing = self._missing(session)
            return text + (f"; pushed and not yet delivered: {', '.join(missing[:10])}" if missing else "")

        self.ctx.run(
            session.wait_until(lambda: len(session.epoch_deliveries) >= count, limit, describe),
            limit,
            f"Waiting for {count} queued deliveries",
        )
        deliveries = offline.unique(self._deliveries(session.alias, current_pass=True))
        logger.info(f"{len(deliveries)} queued deliveries on '{session.alias}': " + ", ".join(d.label for d in deliveries))
        return [d.as_dict() for d in deliveries]

    def _missing(self, session: Session) -> list[str]:
        if session.user_id is None:
            return []
        events = self._events()
        pushes = offline.pushes_to(events, session.user_id)
        received = {d.message_id for d in offline.deliveries_on(events, session.alias)}
        evicted = {p.evicted_message_id for p in pushes}
        return [
            p.label
            for p in pushes
            if p.status in ("queued", "delivered") and p.message_id not in evicted and p.message_id not in received
        ]

    @keyword(tags=("offline", "delivery", "check", "wait"))
    def unacknowledged_deliveries_should_be_redelivered(
        self, connection: str | None = None, *, timeout: timedelta | None = None
    ) -> int:
        """Checks at-least-once delivery: what was delivered but not acknowledged before the last connection ended comes again.

        Waits, after `Reconnect`, until every ``delivery_id`` left unacknowledged on the
        previous connection has arrived again, each flagged ``redelivered: true``. Fails at
        ``timeout`` naming the messages that did not come back, or naming a repeat without
        the flag. Fails too when nothing was left unacknowledged (nothing to test: turn
        `Set Automatic Acknowledgement` off first). Returns how many were redelivered.

        | Unacknowledged Deliveries Should Be Redelivered    alice
        """
        session = self.ctx.session(connection)
        owed = list(session.unacked_before)
        if not owed:
            raise AssertionError(
                f"Nothing was left unacknowledged on '{session.alias}' before it reconnected: turn automatic "
                "acknowledgement off (Set Automatic Acknowledgement) to test redelivery."
            )
        limit = self._timeout(timeout)
        earlier = {d.delivery_id: d for d in self._deliveries(session.alias)}

        def describe() -> str:
            missing = [earlier[i].describe() if i in earlier else i for i in owed if i not in session.epoch_deliveries]
            return (
                f"waiting for the redelivery of {len(owed)} unacknowledged message(s); not delivered again: "
                + ", ".join(missing)
                + " (at-least-once: a delivery not acknowledged before the connection ended must come again)"
            )

        self.ctx.run(
            session.wait_until(lambda: all(i in session.epoch_deliveries for i in owed), limit, describe),
            limit,
            "Waiting for redeliveries",
        )
        again = {d.delivery_id: d for d in offline.unique(self._deliveries(session.alias, current_pass=True))}
        unflagged = [again[i].describe() for i in owed if not again[i].redelivered]
        self.ctx.measurements.append(Measurement.exact("redeliveries without the redelivered flag", len(unflagged), 0))
        if unflagged:
            raise AssertionError("Delivered again without redelivered: true: " + ", ".join(unflagged) + ".")
        logger.info(f"{len(owed)} unacknowledged deliveries came again, flagged redelivered.")
        return len(owed)

    @keyword(tags=("offline", "delivery"))
    def get_queued_deliveries(self, connection: str | None = None, *, whole_test: bool = False) -> list[dict[str, Any]]:
        """Returns the deliveries received since the connection last (re)connected, one per ``delivery_id``.

        ``whole_test=True`` returns every delivery of this test instead (still one per id).

        | ${deliveries} =    Get Queued Deliveries    alice
        """
        return [d.as_dict() for d in offline.unique(self._deliveries(connection, current_pass=not whole_test))]

    @keyword(tags=("offline", "delivery", "check"))
    def delivered_messages_should_be(self, *labels: str, connection: str | None = None) -> None:
        """Checks the labels of the messages delivered since the last (re)connect, in order.

        Compares one entry per ``delivery_id``. Labels may be one space-separated cell.

        | Delivered Messages Should Be    C    H1    H2    N1    N2    N3    L    connection=alice
        """
        expected = offline.split_labels(labels)
        got = [d.label for d in offline.unique(self._deliveries(connection, current_pass=True))]
        self.ctx.measurements.append(Measurement.exact("delivered labels", " ".join(got), " ".join(expected), unit=""))
        if got != expected:
            missing = [label for label in expected if label not in got]
            extra = [label for label in got if label not in expected]
            detail = (f"; missing: {', '.join(missing)}" if missing else "") + (
                f"; not expected: {', '.join(extra)}" if extra else ""
            )
            raise AssertionError(
                f"Delivered {', '.join(got) or 'nothing'}; expected {', '.join(expected) or 'nothing'}{detail}."
            )

    @keyword(tags=("offline", "delivery", "check", "ordering"))
    def deliveries_should_follow_priority_order(self, connection: str | None = None, *, user: str | None = None) -> int:
        """Fails unless each delivery pass of this test came highest priority first, FIFO within a priority.

        FIFO is per pusher (concurrent pushers have no order between them). The failure names
        each pair: ``C (critical) was delivered after N1 (normal)``. Returns how many
        deliveries were checked; fails if there were none.

        | Deliveries Should Follow Priority Order    alice
        """
        session = self.ctx.session(connection)
        deliveries = self._deliveries(session.alias)
        pushes = self._pushes(user or session.alias)
        result = offline.priority_order(deliveries, pushes)
        if result.checked == 0:
            result.problems.append(f"no delivery on '{session.alias}' to check")
        return self._enforce(result)

    @keyword(tags=("offline", "delivery", "check", "idempotency"))
    def deliveries_should_have_no_duplicates(self, connection: str | None = None) -> int:
        """Fails if a queued message arrived twice in one delivery pass, or again without ``redelivered: true``.

        Also fails when one message arrives under two ``delivery_id`` values. Returns how many
        distinct deliveries were checked; fails if there were none.

        | Deliveries Should Have No Duplicates    alice
        """
        session = self.ctx.session(connection)
        result = offline.no_duplicate_deliveries(self._deliveries(session.alias))
        if result.checked == 0:
            result.problems.append(f"no delivery on '{session.alias}' to check")
        return self._enforce(result)

    @keyword(tags=("offline", "check", "overflow"))
    def evictions_should_respect_priority(self, user: str) -> int:
        """Fails if overflow evicted a message while a lower-priority one was queued (or incoming).

        Replays this test's pushes to ``user`` (while away). Returns how many
        evictions were checked; fails if there were none (nothing was tested).

        | Evictions Should Respect Priority    alice
        """
        result = offline.evictions_respect_priority(self._pushes(user))
        if result.checked == 0:
            result.problems.append(f"no push to '{user}' evicted anything")
        return self._enforce(result)

    @keyword(tags=("offline", "check", "loss"))
    def offline_messages_should_be_accounted_for(
        self, user: str, *, tolerance: timedelta = timedelta(milliseconds=250), pusher: str | None = None
    ) -> dict[str, int]:
        """Checks pushed = delivered + dropped + rejected + expired for ``user``, naming what is missing.

        Call it after the user reconnected and received its deliveries. A push counts as
        expired only if its TTL (the push's ``ttl``, else the user's ``offline_ttl_s``) had
        run out before the user's next connect (± ``tolerance``), and the server's
        ``offline_expired_total`` must agree. A message delivered after its TTL, or reported
        dropped and delivered anyway, fails too. Returns the counts.

        | Offline Messages Should Be Accounted For    alice
        """
        session = self.ctx.session(user)
        events = self._events()
        pushes = offline.pushes_to(events, self._user_id(user))
        if not pushes:
            raise AssertionError(f"No push to '{user}' in this test: nothing to account for.")
        state = self._queue_state_of(user, pusher)
        expired_total = state.get("offline_expired_total")
        ttl = state.get("offline_ttl_s")
        books = offline.account(
            pushes,
            offline.deliveries_on(events, session.alias),
            connects=offline.connects_on(events, session.alias),
            default_ttl_s=float(ttl) if isinstance(ttl, (int, float)) else None,
            server_expired=expired_total if isinstance(expired_total, int) else None,
            tolerance_s=seconds(tolerance) or 0.0,
        )
        counts = books.counts()
        for name, value in counts.items():
            if name != "unaccounted":
                self.ctx.measurements.append(Measurement(f"offline {name}", value, "count"))
        self.ctx.artefacts.append(Artefact("offline", {
            **counts, "user": user, "capacity": state.get("offline_capacity"), "policy": state.get("offline_policy"),
            "failed": bool(books.problems), "note": books.problems[0] if books.problems else "",
        }, self.ctx.step))
        self._enforce(books.result())
        return counts

    # -- timing and state --------------------------------------------------------------------

    @keyword(tags=("offline", "connection", "measure"))
    def get_reconnect_time(
        self,
        statistic: Statistic = Statistic.mean,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        connection: str | None = None,
    ) -> float:
        """Returns a statistic of this test's reconnect times in seconds, optionally asserting it.

        A reconnect time runs from the start of the attempt to the completed WebSocket
        handshake (`Reconnect`). ``statistic`` is ``mean``, ``min``, ``max`` or a percentile.

        | Get Reconnect Time    mean    <    300 ms
        | Get Reconnect Time    max    <    500 ms
        """
        times = [
            int(e.frame.get("handshake_ns", 0))
            for e in self._events()
            if e.direction == "connection" and e.type == "reconnected" and (connection is None or e.connection == connection)
        ]
        if not times:
            raise AssertionError("No reconnect in this test: there is no reconnect time.")
        value, samples = measured_statistic(LatencyHistogram.of(times), statistic)
        return self.ctx.check(
            f"reconnect time {statistic.value}", round(value, 6), operator, expected, unit="s",
            message=f"over {len(times)} reconnect(s)", **samples,
        )

    @keyword(tags=("offline", "delivery", "measure"))
    def get_delivery_time(
        self, operator: AssertionOperator | None = None, expected: Any = None, *, connection: str | None = None
    ) -> float:
        """Returns seconds from the start of the last (re)connect to the last queued delivery since, optionally asserting it.

        | Get Delivery Time    <    1 s
        """
        session = self.ctx.session(connection)
        deliveries = offline.unique(self._deliveries(session.alias, current_pass=True))
        if not deliveries:
            raise AssertionError(f"No queued delivery on '{session.alias}' since it last connected: no delivery time.")
        value = (deliveries[-1].ts_ns - session.connect_started_ns) / 1e9
        return self.ctx.check(
            "delivery time", round(value, 6), operator, expected, unit="s", message=f"{len(deliveries)} deliveries"
        )

    @keyword(tags=("offline", "state", "measure"))
    def get_offline_queue_state(
        self,
        user: str,
        field: str | None = None,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        pusher: str | None = None,
    ) -> Any:
        """Returns the queue state of ``user`` (or one field), optionally asserting the field.

        While the user is away it is read by the admin connection (``get_queue_state`` with
        ``user_id``); a server that cannot do that skips the test with the reason. Fields
        include ``offline_size``, ``offline_unacked``, ``offline_capacity``,
        ``offline_dropped_total``, ``offline_rejected_total`` and ``offline_expired_total``.

        | Get Offline Queue State    alice    offline_size    ==    3
        """
        state = self._queue_state_of(user, pusher)
        if field is None:
            return state
        value = field_value(state, field, "queue_state")
        unit = "count" if isinstance(value, int) and not isinstance(value, bool) else ""
        return self.ctx.check(f"queue_state.{field}", value, operator, expected, unit=unit)

    @keyword(tags=("offline", "state", "wait"))
    def wait_until_offline_queue_holds(
        self, user: str, count: int, *, timeout: timedelta | None = None, pusher: str | None = None
    ) -> int:
        """Waits until at least ``count`` messages wait in the offline queue of ``user`` (while away).

        Polls the queue state every 50 ms; fails at ``timeout`` with the last size seen.
        Returns the size.

        | Wait Until Offline Queue Holds    alice    1    timeout=5 s
        """
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        size = None
        while True:
            size = self._queue_state_of(user, pusher).get("offline_size")
            if isinstance(size, int) and size >= count:
                return size
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"Timed out after {limit:g} s waiting for {count} message(s) in the offline queue of '{user}' "
                    f"(it holds {size})."
                )
            time.sleep(0.05)

    @keyword(tags=("offline", "wait"))
    def wait_until_pushed_messages_expire(self, user: str, *labels: str, margin: timedelta = timedelta(milliseconds=250)) -> float:
        """Lets time pass until the TTL of the named pushes (default: all pushes to ``user``) has run out.

        The deadline is computed from each push's confirmation time and TTL (the push's
        ``ttl``, else the user's ``offline_ttl_s``) plus ``margin``: time the scenario needs to
        pass, not a guess at how long a result takes. Refuses to wait more than 5 minutes.
        Returns the seconds waited.

        | Wait Until Pushed Messages Expire    alice    I1 I2 I3
        """
        wanted = set(offline.split_labels(labels))
        pushes = [p for p in self._pushes(user) if not wanted or p.label in wanted]
        if not pushes:
            raise AssertionError(f"No push to '{user}' labelled {', '.join(sorted(wanted)) or 'anything'} in this test.")
        default_ttl = None
        if any(p.ttl_s is None for p in pushes):
            ttl = self._queue_state_of(user).get("offline_ttl_s")
            default_ttl = float(ttl) if isinstance(ttl, (int, float)) else None
            if default_ttl is None:
                raise AssertionError("The server did not report offline_ttl_s: push with ttl= to know when messages expire.")
        deadline = max(
            (p.result_ns or p.sent_ns) + int((p.ttl_s if p.ttl_s is not None else default_ttl) * 1e9) for p in pushes
        ) + int((seconds(margin) or 0) * 1e9)
        wait = max(0.0, (deadline - time.perf_counter_ns()) / 1e9)
        if wait > 300:
            raise ValueError(f"The TTL runs out in {wait:.0f} s: refusing to wait more than 5 minutes.")
        logger.info(f"Waiting {wait:.3f} s for the TTL of {len(pushes)} pushed message(s) to run out.")
        time.sleep(wait)
        return round(wait, 3)
