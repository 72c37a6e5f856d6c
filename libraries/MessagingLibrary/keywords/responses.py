"""Keywords that wait for and count the server's replies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from assertionengine import AssertionOperator
from robot.api import logger
from robot.api.deco import keyword

from ..context import LibraryComponent, seconds
from ..engine.history import OUTCOME_TYPES, RECEIVED, SENT
from ..engine.session import WaitTimeout


class ResponseKeywords(LibraryComponent):
    """Waiting for replies and counting them. Everything counts from the start of the test."""

    @keyword(tags=("responses", "wait"))
    def wait_for_responses(
        self,
        count: int,
        response_type: str = "ai_response",
        timeout: timedelta = timedelta(seconds=30),
        *,
        connection: str | None = None,
    ) -> int:
        """Waits until ``count`` frames of ``response_type`` arrived on the connection since the test started.

        Fails after ``timeout`` saying how many arrived, or at once if the connection closes,
        naming its close code. Returns how many have arrived (may be more than ``count``).

        | Wait For Responses    20
        | Wait For Responses    9    duplicate_rejected    timeout=5 s
        """
        session = self.ctx.session(connection)
        mark = self.ctx.test_mark
        limit = seconds(timeout) or 30.0
        self.ctx.run(
            session.wait_until(
                lambda: session.count_since(response_type, mark) >= count,
                limit,
                lambda: f"waiting for {count} {response_type} (got {session.count_since(response_type, mark)})",
            ),
            limit,
            f"Waiting for {count} {response_type}",
        )
        got = session.count_since(response_type, mark)
        logger.info(f"{got} {response_type} received on '{session.alias}'.")
        return got

    @keyword(tags=("responses", "wait"))
    def wait_until_messages_are_settled(
        self, timeout: timedelta = timedelta(seconds=30), *, must_settle: bool = True, connection: str | None = None
    ) -> int:
        """Waits until every ``user_message`` sent in this test got a reply for each attempt.

        A reply is an ``ai_response``, ``duplicate_rejected``, ``queue_full`` or ``error``
        with the message's ``message_id``. On timeout the failure names the messages still
        unanswered. With ``must_settle=False`` a timeout is not a failure: the keyword logs
        the unanswered messages and returns, for tests that measure the delivery ratio
        themselves. Returns how many messages are still unanswered (0 when all settled).

        | Wait Until Messages Are Settled    timeout=20 s
        | Wait Until Messages Are Settled    5 s    must_settle=False
        """
        session = self.ctx.session(connection)
        mark = self.ctx.test_mark
        attempts: dict[str, int] = {}
        for event in self.ctx.history.select(mark, direction=SENT, types="user_message", connection=session.alias):
            if event.message_id:
                attempts[event.message_id] = attempts.get(event.message_id, 0) + 1
        pending = dict.fromkeys(attempts)  # in send order

        def settled() -> bool:
            for message_id in list(pending):
                if session.replies_since(message_id, mark, OUTCOME_TYPES) >= attempts[message_id]:
                    del pending[message_id]
            return not pending

        def describe() -> str:
            waiting = list(pending)
            shown = ", ".join(waiting[:10]) + (f" and {len(waiting) - 10} more" if len(waiting) > 10 else "")
            return f"waiting for replies to {len(attempts)} messages; {len(waiting)} got no reply (lost or late): {shown}"

        limit = seconds(timeout) or 30.0
        try:
            self.ctx.run(session.wait_until(settled, limit, describe), limit, "Waiting for every message to settle")
        except WaitTimeout as error:
            if must_settle:
                raise
            logger.warn(f"Not every message settled: {error}")
        return len(pending)

    @keyword(tags=("responses", "measure"))
    def get_response_count(
        self,
        response_type: str = "ai_response",
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        message_id: str | None = None,
        connection: str | None = None,
        message: str = "",
    ) -> int:
        """Returns how many ``response_type`` frames arrived since the test started, optionally asserting it.

        ``message_id`` counts only frames about that message. Counts every connection unless
        ``connection`` is given. ``message`` is added to the failure message (say what it means).

        | Get Response Count    ai_response    ==    1    message_id=unique-message-12345
        | Get Response Count    queue_full    >    0    message=The server never signalled backpressure
        | ${full} =    Get Response Count    queue_full
        """
        events = self.ctx.history.select(
            self.ctx.test_mark, direction=RECEIVED, types=response_type, connection=connection, message_id=message_id
        )
        name = f"{response_type} count" + (f" for {message_id}" if message_id else "")
        return self.ctx.check(name, len(events), operator, expected, unit="count", message=message)

    @keyword(tags=("responses",))
    def get_responses(
        self, response_type: str = "ai_response", *, message_id: str | None = None, connection: str | None = None
    ) -> list[dict[str, Any]]:
        """Returns the frames of ``response_type`` received since the test started, in arrival order.

        | ${replies} =    Get Responses    duplicate_rejected
        """
        events = self.ctx.history.select(
            self.ctx.test_mark, direction=RECEIVED, types=response_type, connection=connection, message_id=message_id
        )
        return [dict(event.frame) for event in events]
