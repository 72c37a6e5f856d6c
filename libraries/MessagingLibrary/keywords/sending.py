"""Keywords that send chat messages: one, numbered on an open-loop schedule, duplicates, bursts, a conversation."""

from __future__ import annotations

import asyncio
import enum
import time
from datetime import timedelta
from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from ..context import LibraryComponent, seconds
from ..engine.history import OUTCOME_TYPES
from ..engine.session import Session, SendReport, ServerError, jittered_offsets

NS = 1_000_000_000


class Priority(enum.Enum):
    """Message priority, highest first."""

    critical = "critical"
    high = "high"
    normal = "normal"
    low = "low"


def user_message(
    message_id: str,
    content: str,
    *,
    sequence_id: int | None = None,
    priority: Priority | None = None,
    target_agents: list[str] | None = None,
    shared_state_key: str | None = None,
    end_of_conversation: bool = False,
) -> dict[str, Any]:
    """A ``user_message`` frame with only the fields that are set."""
    frame: dict[str, Any] = {"type": "user_message", "message_id": message_id, "content": content}
    if sequence_id is not None:
        frame["sequence_id"] = sequence_id
    if priority is not None:
        frame["priority"] = priority.value
    if target_agents:
        frame["target_agents"] = list(target_agents)
    if shared_state_key:
        frame["shared_state_key"] = shared_state_key
    if end_of_conversation:
        frame["end_of_conversation"] = True
    return frame


def _template(text: str, **values: Any) -> str:
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError) as error:
        names = ", ".join("{" + name + "}" for name in values)
        raise ValueError(f"Bad template '{text}': {error}. Available placeholders: {names}.") from None


class SendingKeywords(LibraryComponent):
    """Sending chat messages, alone or on open-loop schedules."""

    def _send_schedule(
        self, session: Session, frames: list[dict[str, Any]], offsets_ns: list[int], timeout: timedelta | None, what: str
    ) -> dict[str, Any]:
        span = (offsets_ns[-1] / NS) if offsets_ns else 0.0
        limit = seconds(timeout) if timeout is not None else span + self.ctx.default_timeout
        report: SendReport = self.ctx.run(session.send_scheduled(frames, offsets_ns), limit, what)
        result = {**report.as_dict(), "scheduled_s": round(span, 6), "connection": session.alias}
        logger.info(
            f"{what}: sent {report.count} in {report.duration_s:.3f} s (schedule {span:.3f} s); "
            f"lateness max {report.max_lateness_s * 1000:.1f} ms, mean {report.mean_lateness_s * 1000:.2f} ms."
        )
        self.ctx.note_generator(report.health, f"the send schedule on '{session.alias}'")
        return result

    @keyword(tags=("sending",))
    def send_message(
        self,
        content: str,
        message_id: str | None = None,
        *,
        sequence_id: int | None = None,
        priority: Priority | None = None,
        target_agents: list[str] | None = None,
        shared_state_key: str | None = None,
        end_of_conversation: bool = False,
        connection: str | None = None,
    ) -> str:
        """Sends one ``user_message`` and returns its ``message_id``.

        Without ``message_id`` a unique one (``msg-N``) is made. ``target_agents`` routes the
        message to configured agents (see `Configure Agents`); ``shared_state_key`` is where
        they record the shared value. Does not wait for the answer: see `Wait For Responses`.

        | ${id} =    Send Message    Hello
        | Send Message    Load customer database    m1    sequence_id=0    target_agents=${{["data"]}}
        """
        session = self.ctx.session(connection)
        message_id = message_id or self.ctx.generated_id(f"msg-{self.ctx.next_id()}")
        frame = user_message(
            message_id,
            content,
            sequence_id=sequence_id,
            priority=priority,
            target_agents=target_agents,
            shared_state_key=shared_state_key,
            end_of_conversation=end_of_conversation,
        )
        self.ctx.run(session.send(frame), self.ctx.default_timeout, f"Sending {message_id}")
        return message_id

    @keyword(tags=("sending",))
    def send_numbered_messages(
        self,
        count: int,
        interval: timedelta = timedelta(milliseconds=100),
        *,
        content: str = "Message sequence {i:03d}: What is 2+2?",
        message_id: str = "seq-msg-{i}",
        first: int = 0,
        priority: Priority | None = None,
        high_priority_every: int = 0,
        connection: str | None = None,
        timeout: timedelta | None = None,
    ) -> dict[str, Any]:
        """Sends ``count`` numbered messages on an open-loop schedule, one every ``interval``.

        Message ``i`` (from ``first``) gets ``sequence_id`` i, and ``content`` and
        ``message_id`` from their templates (``{i}`` is the number, ``{i:03d}`` zero-padded).
        With ``high_priority_every`` N > 0, every message whose number is a multiple of N is
        sent with priority ``high``; the others with ``priority`` (server default if unset).
        ``interval`` 0 sends as fast as the connection takes them.

        The schedule is fixed in advance: a late send goes out as soon as it can and its
        lateness is recorded, and response times count from the scheduled time. Returns
        ``sent``, ``duration_s`` (first to last send), ``scheduled_s``, ``max_lateness_s``
        and ``mean_lateness_s``.

        | ${report} =    Send Numbered Messages    20    100 ms
        | Send Numbered Messages    550    0 s    content=Process data batch {i}    message_id=batch-{i}    high_priority_every=10
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}.")
        if high_priority_every < 0:
            raise ValueError(f"high_priority_every must be 0 (off) or positive, got {high_priority_every}.")
        session = self.ctx.session(connection)
        step = int((seconds(interval) or 0.0) * NS)
        frames = []
        for i in range(first, first + count):
            chosen = Priority.high if high_priority_every and i % high_priority_every == 0 else priority
            frames.append(
                user_message(
                    self.ctx.generated_id(_template(message_id, i=i)),
                    _template(content, i=i),
                    sequence_id=i,
                    priority=chosen,
                )
            )
        offsets = [n * step for n in range(count)]
        return self._send_schedule(session, frames, offsets, timeout, f"Sent {count} numbered messages")

    @keyword(tags=("sending",))
    def send_messages(
        self,
        messages: list[dict[str, Any]],
        interval: timedelta = timedelta(milliseconds=100),
        *,
        connection: str | None = None,
    ) -> dict[str, Any]:
        """Sends prepared messages in order on an open-loop schedule, one every ``interval``.

        Each item is a dictionary with ``content`` and optionally ``message_id`` (default
        ``m-<position>``), ``sequence_id`` (default the position), ``priority``,
        ``target_agents`` (a list, or names separated by commas) and ``shared_state_key``.
        Returns the same report as `Send Numbered Messages`.

        | &{load} =    Create Dictionary    content=Load customer database    target_agents=data    shared_state_key=customer_data
        | Send Messages    ${{[$load]}}    100 ms
        """
        if not messages:
            raise ValueError("Send Messages needs at least one message.")
        session = self.ctx.session(connection)
        frames = [self._frame_from_spec(position, spec) for position, spec in enumerate(messages)]
        step = int((seconds(interval) or 0.0) * NS)
        return self._send_schedule(
            session, frames, [n * step for n in range(len(frames))], None, f"Sent {len(frames)} messages"
        )

    def _frame_from_spec(self, position: int, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, dict) or "content" not in spec:
            raise ValueError(f"Message {position} must be a dictionary with at least 'content', got {spec!r}.")
        unknown = set(spec) - {"content", "message_id", "sequence_id", "priority", "target_agents", "shared_state_key"}
        if unknown:
            raise ValueError(f"Message {position} has unknown field(s): {', '.join(sorted(unknown))}.")
        agents = spec.get("target_agents")
        if isinstance(agents, str):
            agents = [name.strip() for name in agents.split(",") if name.strip()]
        priority = spec.get("priority")
        try:
            chosen = Priority(str(priority).lower()) if priority is not None else None
        except ValueError:
            names = ", ".join(p.value for p in Priority)
            raise ValueError(f"Message {position} has priority {priority!r}; use one of {names}.") from None
        sequence = spec.get("sequence_id", position)
        return user_message(
            str(spec.get("message_id") or self.ctx.generated_id(f"m-{position}")),
            str(spec["content"]),
            sequence_id=int(sequence) if sequence is not None else None,
            priority=chosen,
            target_agents=agents,
            shared_state_key=spec.get("shared_state_key"),
        )

    @keyword(tags=("sending",))
    def send_duplicate_messages(
        self,
        content: str,
        message_id: str,
        count: int = 10,
        *,
        max_jitter: timedelta = timedelta(milliseconds=50),
        seed: int = 0,
        sequence_id: int | None = 0,
        connection: str | None = None,
    ) -> dict[str, Any]:
        """Sends the same message (one ``message_id``) ``count`` times with random jitter.

        Send times are drawn uniformly from 0 to ``max_jitter`` with a seeded generator, so a
        run is repeatable (change ``seed`` for another pattern). Simulates a UI that resends.

        | Send Duplicate Messages    Analyze the Q3 sales data trends    unique-message-12345    10
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}.")
        session = self.ctx.session(connection)
        frame = user_message(message_id, content, sequence_id=sequence_id)
        offsets = jittered_offsets(count, int((seconds(max_jitter) or 0.0) * NS), seed)
        return self._send_schedule(
            session, [dict(frame) for _ in range(count)], offsets, None, f"Sent {message_id} {count} times"
        )

    @keyword(tags=("sending",))
    def send_message_bursts(
        self,
        bursts: int,
        burst_size: int,
        interval: timedelta = timedelta(milliseconds=50),
        pause: timedelta = timedelta(seconds=2),
        *,
        message_id: str = "burst-{b}-msg-{m}",
        content: str = "Burst {b} message {m}",
        connection: str | None = None,
    ) -> dict[str, Any]:
        """Sends ``bursts`` bursts of ``burst_size`` messages on an open-loop schedule.

        Within a burst, messages are ``interval`` apart; a burst starts ``pause`` after the
        previous one's last message. ``{b}`` and ``{m}`` in the templates are the burst and
        message numbers; ``sequence_id`` counts all messages from 0.

        | Send Message Bursts    15    10    50 ms    2 s
        """
        if bursts < 1 or burst_size < 1:
            raise ValueError(f"bursts and burst_size must be at least 1, got {bursts} and {burst_size}.")
        session = self.ctx.session(connection)
        step = int((seconds(interval) or 0.0) * NS)
        gap = int((seconds(pause) or 0.0) * NS)
        frames, offsets = [], []
        for b in range(bursts):
            burst_start = b * ((burst_size - 1) * step + gap)
            for m in range(burst_size):
                frames.append(
                    user_message(
                        self.ctx.generated_id(_template(message_id, b=b, m=m)),
                        _template(content, b=b, m=m),
                        sequence_id=len(frames),
                    )
                )
                offsets.append(burst_start + m * step)
        return self._send_schedule(session, frames, offsets, None, f"Sent {bursts} bursts of {burst_size}")

    @keyword(tags=("sending", "state"))
    def send_conversation(
        self,
        *contents: str,
        interval: timedelta = timedelta(milliseconds=200),
        check_state_after_each: bool = True,
        message_id: str = "conv-{i}",
        connection: str | None = None,
        timeout: timedelta = timedelta(seconds=10),
    ) -> list[dict[str, Any]]:
        """Holds a conversation: sends each content in turn, ``interval`` apart, waiting for each answer.

        The last message carries ``end_of_conversation``. With ``check_state_after_each``, the
        agent state is read after every answer and must show the message counted (count one
        more than before the conversation per message) and its content last in
        ``conversation_context.history``; the first step where it does not fails, naming the
        message and what the state showed. ``timeout`` limits the wait for each answer.
        Returns one row per message: ``message_id``, ``content``, ``message_count``,
        ``last_history``.

        | Send Conversation    Let's analyze sales data    Focus on Q3 2024    Compare with Q2
        """
        if not contents:
            raise ValueError("Send Conversation needs at least one message.")
        session = self.ctx.session(connection)
        limit = seconds(timeout) or 10.0
        step = int((seconds(interval) or 0.0) * NS)
        mark = self.ctx.history.mark()

        async def _state() -> dict[str, Any]:
            try:
                return await session.request({"type": "get_agent_state"}, limit)
            except ServerError as error:
                if error.code == "unsupported":
                    raise self.ctx.unsupported("get_agent_state", error.frame.get("message") or "") from None
                raise AssertionError(f"get_agent_state failed: {error}") from None

        async def _converse() -> list[dict[str, Any]]:
            base = (await _state()).get("message_count", 0) if check_state_after_each else 0
            rows: list[dict[str, Any]] = []
            start = time.perf_counter_ns()
            for i, content in enumerate(contents):
                delay = start + i * step - time.perf_counter_ns()
                if delay > 0:
                    await asyncio.sleep(delay / NS)
                mid = self.ctx.generated_id(_template(message_id, i=i))
                frame = user_message(mid, content, sequence_id=i, end_of_conversation=i == len(contents) - 1)
                await session.send(frame, intended_ns=start + i * step)
                await session.wait_until(
                    lambda mid=mid: session.replies_since(mid, mark, OUTCOME_TYPES) > 0,
                    limit,
                    lambda mid=mid: f"waiting for the answer to conversation message {mid}",
                )
                row: dict[str, Any] = {"message_id": mid, "content": content}
                if check_state_after_each:
                    state = await _state()
                    history = (state.get("conversation_context") or {}).get("history") or []
                    row["message_count"] = state.get("message_count")
                    row["last_history"] = history[-1] if history else None
                    expected_count = base + i + 1
                    if row["message_count"] != expected_count or row["last_history"] != content:
                        raise AssertionError(
                            f"Agent state after message {i + 1} of {len(contents)} ({mid}, '{content}'): "
                            f"message_count was {row['message_count']}, expected {expected_count}; last history "
                            f"entry was {row['last_history']!r}, expected {content!r}."
                        )
                rows.append(row)
            return rows

        total = limit * len(contents) * 2 + len(contents) * step / NS
        rows = self.ctx.run(_converse(), total, "Conversation")
        logger.info(f"Conversation of {len(rows)} messages; agent state checked after each: {check_state_after_each}.")
        return rows

    @keyword(tags=("sending",))
    def send_raw_frame(self, text: str, connection: str | None = None) -> None:
        """Sends ``text`` as one WebSocket text frame exactly as given (no JSON encoding).

        For protocol-robustness checks: not JSON, JSON that is not an object, unknown types.

        | Send Raw Frame    this is not json
        """
        session = self.ctx.session(connection)
        self.ctx.run(session.send_raw(text), self.ctx.default_timeout, "Sending a raw frame")
