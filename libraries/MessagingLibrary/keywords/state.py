"""Keywords for server-side state: agent and queue state, session and agent configuration."""

from __future__ import annotations

import enum
import time
from datetime import timedelta
from typing import Any

from assertionengine import AssertionOperator
from robot.api import logger
from robot.api.deco import keyword

from ..context import LibraryComponent, Measurement, seconds
from ..engine.history import RECEIVED
from ..engine.session import ServerError


class OverflowPolicy(enum.Enum):
    """What a full offline queue does with one more message."""

    drop_oldest = "drop_oldest"
    drop_newest = "drop_newest"
    reject = "reject"


def field_value(frame: dict[str, Any], path: str, what: str) -> Any:
    """``frame[a][b]`` for ``path`` ``a.b``; a clear error naming the missing part."""
    value: Any = frame
    walked: list[str] = []
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            where = ".".join(walked) or what
            keys = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise AssertionError(f"{what} has no field '{path}': '{part}' is not in {where} (has: {keys}).")
        walked.append(part)
    return value


class StateKeywords(LibraryComponent):
    """Querying and configuring the server's per-user state."""

    def _request(
        self, frame: dict[str, Any], timeout: timedelta | None = None, connection: str | None = None
    ) -> dict[str, Any]:
        session = self.ctx.session(connection)
        limit = self._timeout(timeout)
        try:
            return self.ctx.run(session.request(frame, limit), limit, f"{frame['type']} request")
        except ServerError as error:
            if error.code == "unsupported":
                raise self.ctx.unsupported(frame["type"], error.frame.get("message") or "") from None
            raise RuntimeError(f"{frame['type']} was refused: {error}") from None

    def _state_field(
        self,
        request: str,
        field: str | None,
        operator: AssertionOperator | None,
        expected: Any,
        connection: str | None,
        timeout: timedelta | None,
    ) -> Any:
        reply = self._request({"type": request}, timeout, connection)
        if field is None:
            if operator is not None:
                raise ValueError(f"Name the field of {reply.get('type')} to assert on, for example 'message_count'.")
            return reply
        value = field_value(reply, field, str(reply.get("type")))
        unit = "count" if isinstance(value, int) and not isinstance(value, bool) else ""
        return self.ctx.check(f"{reply.get('type')}.{field}", value, operator, expected, unit=unit)

    @keyword(tags=("state", "measure"))
    def get_agent_state(
        self,
        field: str | None = None,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        connection: str | None = None,
        timeout: timedelta | None = None,
    ) -> Any:
        """Returns the user's agent state, or one ``field`` of it, optionally asserting the field.

        ``field`` is a dotted path (``conversation_context.history``, ``memory_usage.rss``).
        The query is matched to its reply by ``request_id``, so it never takes a chat reply.

        | Get Agent State    message_count    ==    20
        | Get Agent State    conversation_complete    ==    ${True}
        | ${state} =    Get Agent State
        """
        return self._state_field("get_agent_state", field, operator, expected, connection, timeout)

    @keyword(tags=("state", "measure"))
    def get_queue_state(
        self,
        field: str | None = None,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        connection: str | None = None,
        timeout: timedelta | None = None,
    ) -> Any:
        """Returns the user's inbound queue state, or one ``field`` of it, optionally asserting it.

        Fields include ``queue_size``, ``capacity``, ``max_queue_size_seen`` and the offline
        queue's ``offline_size``, ``offline_unacked``, ``offline_expired_total`` (see
        `Get Offline Queue State` for a user who is away).

        | Get Queue State    max_queue_size_seen    <=    550
        """
        return self._state_field("get_queue_state", field, operator, expected, connection, timeout)

    @keyword(tags=("state", "measure"))
    def get_server_stats(
        self,
        field: str | None = None,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        connection: str | None = None,
        timeout: timedelta | None = None,
    ) -> Any:
        """Returns the server's statistics (connections, users, messages_total, rss_bytes, uptime_s).

        | Get Server Stats    connections    >=    1
        """
        return self._state_field("get_server_stats", field, operator, expected, connection, timeout)

    @keyword(tags=("state", "agents"))
    def get_all_agent_states(self, *, connection: str | None = None, timeout: timedelta | None = None) -> dict[str, Any]:
        """Returns every configured agent's state: ``{name: {messages_processed, last_processed_sequence, shared_state}}``.

        | ${agents} =    Get All Agent States
        """
        return dict(self._request({"type": "get_all_agent_states"}, timeout, connection).get("agents") or {})

    @keyword(tags=("state", "configuration"))
    def configure_session(
        self,
        *,
        processing_ms: int | None = None,
        queue_capacity: int | None = None,
        duplicate_window: timedelta | None = None,
        offline_capacity: int | None = None,
        overflow_policy: OverflowPolicy | None = None,
        offline_ttl: timedelta | None = None,
        connection: str | None = None,
    ) -> dict[str, Any]:
        """Sets the user's test-control settings and returns the values the server put in effect.

        Only the arguments given are sent. Against a server without test control (error
        ``unsupported``) the test is skipped with that reason, never passed silently.

        | Configure Session    processing_ms=10    queue_capacity=500
        """
        frame: dict[str, Any] = {"type": "configure_session"}
        for name, value in (
            ("processing_ms", processing_ms),
            ("queue_capacity", queue_capacity),
            ("offline_capacity", offline_capacity),
        ):
            if value is not None:
                frame[name] = value
        if duplicate_window is not None:
            frame["duplicate_window_s"] = seconds(duplicate_window)
        if overflow_policy is not None:
            frame["overflow_policy"] = overflow_policy.value
        if offline_ttl is not None:
            frame["offline_ttl_s"] = seconds(offline_ttl)
        reply = self._request(frame, None, connection)
        effective = {k: v for k, v in reply.items() if k not in ("type", "request_id")}
        logger.info(f"Session configured: {effective}")
        return effective

    @keyword(tags=("state", "agents", "configuration"))
    def configure_agents(self, *agents: str, connection: str | None = None) -> list[str]:
        """Configures the user's agents by name (their counters start at zero); returns the names.

        | Configure Agents    data    analysis    reporting
        """
        if not agents:
            raise ValueError("Configure Agents needs at least one agent name.")
        reply = self._request({"type": "configure_agents", "agents": list(agents)}, None, connection)
        return list(reply.get("agents") or agents)

    @keyword(tags=("state", "agents", "check"))
    def agent_processed_counts_should_be(self, connection: str | None = None, **expected: int) -> None:
        """Checks each named agent's ``messages_processed``; fails listing every agent that differs.

        | Agent Processed Counts Should Be    data=2    analysis=3    reporting=2
        """
        if not expected:
            raise ValueError("Give at least one agent=count pair.")
        agents = self.get_all_agent_states(connection=connection)
        wrong = []
        for name, count in expected.items():
            got = (agents.get(name) or {}).get("messages_processed")
            self.ctx.measurements.append(Measurement.exact(f"agent {name} messages_processed", got, int(count)))
            if got != int(count):
                wrong.append(f"agent {name} processed {got}, expected {count}")
        if wrong:
            raise AssertionError("Agent processed counts differ: " + "; ".join(wrong) + ".")

    @keyword(tags=("state", "agents", "check"))
    def shared_state_should_agree_across_agents(self, connection: str | None = None) -> int:
        """Checks that every shared-state key held by several agents has the same value in each.

        Fails naming the key and each agent's value. Returns how many keys were compared.

        | Shared State Should Agree Across Agents
        """
        agents = self.get_all_agent_states(connection=connection)
        values: dict[str, dict[str, Any]] = {}
        for name, state in agents.items():
            for key, value in ((state or {}).get("shared_state") or {}).items():
                values.setdefault(key, {})[name] = value
        shared = {key: held for key, held in values.items() if len(held) > 1}
        problems = [
            f"'{key}': " + ", ".join(f"{agent}={value!r}" for agent, value in sorted(held.items()))
            for key, held in sorted(shared.items())
            if len({repr(v) for v in held.values()}) > 1
        ]
        self.ctx.measurements.append(Measurement.exact("shared-state keys that disagree", len(problems), 0))
        if problems:
            raise AssertionError(f"Agents disagree on {len(problems)} shared-state key(s): " + "; ".join(problems) + ".")
        if not shared:
            raise AssertionError("No shared-state key is held by more than one agent: nothing to compare.")
        return len(shared)

    @keyword(tags=("state", "agents", "check"))
    def contributing_agents_should_match_sequence(self) -> int:
        """Checks every ``ai_response`` of this test: each contributing agent's ``processed_sequence``
        equals the message's ``sequence_id``. Returns how many contributions were checked.

        | Contributing Agents Should Match Sequence
        """
        sequence_of: dict[str, Any] = {
            e.message_id: e.sequence_id
            for e in self.ctx.history.select(self.ctx.test_mark, direction="sent", types="user_message")
            if e.message_id
        }
        checked, problems = 0, []
        for event in self.ctx.history.select(self.ctx.test_mark, direction=RECEIVED, types="ai_response"):
            for contribution in event.frame.get("contributing_agents") or []:
                checked += 1
                expected = sequence_of.get(event.message_id)
                got = contribution.get("processed_sequence") if isinstance(contribution, dict) else None
                if got != expected:
                    agent = contribution.get("agent") if isinstance(contribution, dict) else contribution
                    problems.append(f"{event.message_id}: agent {agent} processed sequence {got}, expected {expected}")
        self.ctx.measurements.append(Measurement.exact("contributions with the wrong sequence", len(problems), 0))
        if problems:
            raise AssertionError("Contributing agents out of step: " + "; ".join(problems) + ".")
        if checked == 0:
            raise AssertionError("No ai_response in this test listed contributing agents: nothing to check.")
        return checked

    @keyword(tags=("state", "check"))
    def agent_state_should_not_be_corrupted(self, connection: str | None = None) -> None:
        """Fails if the server reports its own agent-state invariants broken (``corrupted``).

        | Agent State Should Not Be Corrupted
        """
        state = self._request({"type": "get_agent_state"}, None, connection)
        agents = self._request({"type": "get_all_agent_states"}, None, connection)
        if state.get("corrupted") or agents.get("corrupted"):
            raise AssertionError(
                f"Server reports corrupted state: agent_state.corrupted={state.get('corrupted')}, "
                f"all_agent_states.corrupted={agents.get('corrupted')}."
            )

    @keyword(tags=("state", "measure"))
    def probe_latency(
        self, count: int = 5, *, connection: str | None = None, timeout: timedelta | None = None
    ) -> dict[str, float]:
        """Sends ``count`` latency probes one after another; returns round-trip min/mean/max in seconds.

        | ${rtt} =    Probe Latency    10
        """
        session = self.ctx.session(connection)
        limit = self._timeout(timeout)
        rtts = []
        for n in range(count):
            started = time.perf_counter_ns()
            try:
                self.ctx.run(
                    session.request({"type": "latency_probe", "probe_id": n, "client_send_ns": started}, limit),
                    limit,
                    "latency_probe",
                )
            except ServerError as error:
                if error.code == "unsupported":
                    raise self.ctx.unsupported("latency_probe", error.frame.get("message") or "") from None
                raise
            rtts.append((time.perf_counter_ns() - started) / 1e9)
        return {"min_s": min(rtts), "mean_s": sum(rtts) / len(rtts), "max_s": max(rtts)}

