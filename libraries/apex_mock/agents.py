"""Agent runs that stream events (docs/protocol.md §4.9): the plan of a run, and the runs in flight.

When a user's session asks for it (``configure_session`` ``agent_stream``, or the server's
default ``apex-mock --agent-stream``), a processed ``user_message`` is not answered at once: it
starts a *run* that sends ``agent_progress`` events one gap apart (``agent_started``, thinking
steps interleaved with tool calls, answer chunks) and then the final ``ai_response`` through the
usual reply path. This module holds what does not need a socket, so it can be tested alone:

* the settings: :data:`STREAM_DEFAULTS`, :func:`normalize_stream` (validation, naming the key),
  :func:`parse_stream_spec` (the CLI's ``key=value,...``);
* the plan of one run (:func:`plan_run`): its events, the wait before each of them and before the
  final, and what the stream faults change, deterministic for a seed and a message id (the gaps
  come from a PRNG seeded by both), so the same message always streams the same way;
* :class:`AgentRuns`: run numbering, per-user concurrency slots, the counters, the run tasks.

Everything about delivery (which connection, the netra translation) stays in ``server.py``
and ``netra.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import faults as F

#: Every key of ``agent_stream`` and its default.
STREAM_DEFAULTS: dict[str, Any] = {
    "thinking_steps": 2,
    "tools": 1,
    "first_event_ms": 50.0,
    "gap_ms": 30.0,
    "jitter": 0.5,
    "answer_chars": 0,
    "chunks": 0,
    "max_concurrent_runs": 4,
    "seed": 0,
}


def _int(lo: int, hi: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi), f"an integer {lo}..{hi}"


def _number(lo: float, hi: float) -> tuple[Callable[[Any], bool], str]:
    return (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi,  # NaN fails both
        f"a number {lo:g}..{hi:g}",
    )


#: key -> (check, what it must be); the order is the order error messages list the keys in.
STREAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "thinking_steps": _int(0, 50),
    "tools": _int(0, 20),
    "first_event_ms": _number(0, 60_000),
    "gap_ms": _number(0, 60_000),
    "jitter": _number(0, 1),
    "answer_chars": _int(0, 100_000),
    "chunks": _int(0, 1000),
    "max_concurrent_runs": _int(1, 1000),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
}
assert STREAM_RULES.keys() == STREAM_DEFAULTS.keys()

AGENT_NAME = "apex_mock_agent"  # the agent of a run whose message named no target agent
TOOL_PREFIX = "apex_lookup_"  # tool i (from 0) is apex_lookup_<i+1>
#: Deterministic filler words that pad an answer to ``answer_chars``.
FILLER = " and here is some more detail about it"


def normalize_stream(value: Any) -> dict[str, Any] | None:
    """``agent_stream`` with the defaults filled in (None: streaming off).

    ValueError names the key and its rule (``field 'agent_stream.tools' must be an integer
    0..20, got 99``), or lists the known keys for an unknown one. A new dict every time: a
    session's settings never share it with the server's defaults.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("field 'agent_stream' must be null or an object (docs/protocol.md §4.9)")
    out = dict(STREAM_DEFAULTS)
    for key, item in value.items():
        rule = STREAM_RULES.get(key)
        if rule is None:
            raise ValueError(f"unknown field 'agent_stream.{str(key)[:64]}' (known: {', '.join(STREAM_RULES)})")
        check, expected = rule
        if not check(item):
            raise ValueError(f"field 'agent_stream.{key}' must be {expected}, got {str(item)[:64]}")
        out[key] = item
    return out


def parse_stream_spec(text: str) -> dict[str, Any]:
    """The CLI's ``thinking_steps=3,tools=0`` (empty: every default) -> a normalized ``agent_stream``.

    Values are JSON-like numbers (``3``, ``0.5``, ``-7``); ValueError names the key."""
    raw: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"'{part}' is not key=value (for example thinking_steps=3,tools=1)")
        if key in raw:
            raise ValueError(f"agent_stream.{key} given twice")
        number: Any
        try:
            number = int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"field 'agent_stream.{key}' must be a number, got '{value}'") from None
        raw[key] = number
    normalized = normalize_stream(raw)
    assert normalized is not None
    return normalized


# --------------------------------------------------------------------------- the plan of a run


def answer_text(base: str, answer_chars: int) -> str:
    """The run's answer: ``base`` (today's ``Response to: <content>``), padded with the filler
    words to exactly ``answer_chars`` characters when that is longer (else ``base`` as it is)."""
    if answer_chars <= len(base):
        return base
    repeats = -(-(answer_chars - len(base)) // len(FILLER))
    return (base + FILLER * repeats)[:answer_chars]


def split_chunks(text: str, chunks: int) -> list[str]:
    """``text`` in exactly ``chunks`` nearly equal consecutive parts (lengths differ by at most
    one, the longer first) whose concatenation is ``text``; with more chunks than characters
    the last parts are empty."""
    if chunks <= 0:
        return []
    size, extra = divmod(len(text), chunks)
    parts, start = [], 0
    for i in range(chunks):
        end = start + size + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts


def gaps_s(stream: Mapping[str, Any], message_id: Any, count: int) -> list[float]:
    """``count`` gaps in seconds, each uniform in gap_ms·(1 - jitter) .. gap_ms·(1 + jitter), from a
    PRNG seeded by (seed, message_id): the same message gets the same gaps, in any process (a
    hash of the text, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"{stream['seed']}\x00{message_id}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    gap, jitter = float(stream["gap_ms"]), float(stream["jitter"])
    lo, hi = gap * (1 - jitter), gap * (1 + jitter)
    return [rng.uniform(lo, hi) / 1000 for _ in range(count)]


def plan_events(stream: Mapping[str, Any], answer: str, agent: str = AGENT_NAME) -> list[dict[str, Any]]:
    """The progress events of an unfaulted run, in order (``event`` and its own fields; the
    server adds ``type``, ``message_id``, ``run_id``, ``seq``)."""
    events: list[dict[str, Any]] = [{"event": "agent_started", "agent": agent}]
    steps, tools = int(stream["thinking_steps"]), int(stream["tools"])
    for i in range(max(steps, tools)):
        if i < steps:
            events.append({"event": "agent_thinking", "step": i + 1, "text": f"Step {i + 1}: working out the answer"})
        if i < tools:
            name = f"{TOOL_PREFIX}{i + 1}"
            events.append({"event": "tool_executing", "tool_name": name})
            events.append({"event": "tool_completed", "tool_name": name, "status": "success"})
    for index, part in enumerate(split_chunks(answer, int(stream["chunks"]))):
        events.append({"event": "answer_chunk", "index": index, "text": part})
    return events


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What run #n does, decided when it starts (faults included), so the server only executes it.

    ``waits_s[i]`` is the wait before ``events[i]`` (from the run start for the first one, else
    from the previous event); ``waits_s[len(events)]`` the wait before the final. Waits are
    relative to a schedule (the server sleeps until run start + their running sum), so lateness
    does not accumulate.
    """

    answer: str
    events: tuple[dict[str, Any], ...]
    waits_s: tuple[float, ...]
    #: False: truncate_stream, no final ever
    final: bool = True
    #: duplicate_final: the final twice, back to back
    duplicate_final: bool = False
    #: event_after_final: this progress event, ``after_final_s`` after the final
    after_final: dict[str, Any] | None = None
    after_final_s: float = 0.0
    #: cross_talk: every event also copied to another user's newest readable connection
    cross_talk: bool = False


def plan_run(stream: Mapping[str, Any], message_id: Any, base_answer: str, n: int = 1,
             faults: Mapping[str, float] | None = None, agent: str = AGENT_NAME) -> RunPlan:
    """The plan of run #n (server-wide, from 1) for ``message_id``; ``faults`` maps each active
    stream fault (and ``cross_talk``) to its parameter. Each fault changes one property, and
    only on the runs it names (``n`` a multiple of its N); ``slow_first_event`` on every run."""
    faults = faults or {}

    def every(name: str) -> bool:
        value = faults.get(name)
        return value is not None and n % int(value) == 0

    answer = answer_text(base_answer, int(stream["answer_chars"]))
    events = plan_events(stream, answer, agent)
    steps = int(stream["thinking_steps"])
    # Every gap of the unfaulted run, plus one after its final: the faults below drop events
    # but never change the gaps that remain (same message, same timings).
    gaps = gaps_s(stream, message_id, len(events) + 1)
    truncated = every(F.TRUNCATE_STREAM)
    if truncated:  # up to the first agent_thinking (agent_started alone without thinking steps)
        events = events[:2] if steps > 0 else events[:1]
    if every(F.MISSING_STARTED):
        events = events[1:]
    if every(F.UNPAIRED_TOOL):
        first_tool = next((i for i, e in enumerate(events) if e["event"] == "tool_executing"), None)
        if first_tool is not None:
            del events[first_tool]
    first_s = float(stream["first_event_ms"]) / 1000 + float(faults.get(F.SLOW_FIRST_EVENT, 0)) / 1000
    waits = [first_s, *gaps[: len(events)]]  # before each event, then before the final
    if every(F.STALL_STREAM) and len(waits) > 1:
        waits[1] += F.STALL_STREAM_S  # before the second event (the final if there is none)
    after_final = None
    if every(F.EVENT_AFTER_FINAL) and not truncated:
        after_final = {"event": "agent_thinking", "step": steps + 1, "text": f"Step {steps + 1}: one more thought"}
    return RunPlan(
        answer=answer,
        events=tuple(events),
        waits_s=tuple(waits),
        final=not truncated,
        duplicate_final=every(F.DUPLICATE_FINAL) and not truncated,
        after_final=after_final,
        after_final_s=gaps[-1],
        cross_talk=every(F.CROSS_TALK),
    )


# --------------------------------------------------------------------------- runs in flight


class AgentRuns:
    """The runs of a server: run numbers, per-user slots, counters, and the run tasks.

    ``faults`` maps each active stream fault (and ``cross_talk``) to its parameter (faults.py);
    :meth:`plan` applies them to run #n (server-wide, from 1, in start order).
    """

    def __init__(self, faults: Mapping[str, float] | None = None) -> None:
        self.faults = dict(faults or {})
        self.started = 0
        self.completed = 0
        self.tasks: set[asyncio.Task] = set()
        #: user id -> runs active (absent: none), and an event set whenever one of them ends
        self.active: dict[str, int] = {}
        self._freed: dict[str, asyncio.Event] = {}

    def stats(self) -> dict[str, int]:
        """``server_stats.agent_runs``: started, completed (with a final), active (truncated runs
        are neither completed nor active once they stopped)."""
        return {"started": self.started, "completed": self.completed, "active": sum(self.active.values())}

    def has_slot(self, user_id: str, limit: int) -> bool:
        return self.active.get(user_id, 0) < limit

    async def slot_freed(self, user_id: str) -> None:
        """Until one of the user's runs ends, or :meth:`wake` (the caller checks again)."""
        event = self._freed.get(user_id)
        if event is None:
            event = self._freed[user_id] = asyncio.Event()
        await event.wait()

    def plan(self, stream: Mapping[str, Any], message_id: Any, base_answer: str, n: int, agent: str) -> RunPlan:
        return plan_run(stream, message_id, base_answer, n, self.faults, agent)

    def begin(self, user_id: str) -> int:
        """A run of ``user_id`` starts: its number (server-wide, from 1)."""
        self.started += 1
        self.active[user_id] = self.active.get(user_id, 0) + 1
        return self.started

    def end(self, user_id: str, completed: bool) -> None:
        """A run of ``user_id`` ended (``completed``: its final went out): its slot is free."""
        left = self.active.get(user_id, 1) - 1
        if left > 0:
            self.active[user_id] = left
        else:
            self.active.pop(user_id, None)
        if completed:
            self.completed += 1
        self.wake(user_id)

    def wake(self, user_id: str) -> None:
        """Wake the user's worker if it waits for a slot, to check again (a run ended, or the
        session's settings changed: streaming off, a higher ``max_concurrent_runs``)."""
        event = self._freed.pop(user_id, None)
        if event is not None:
            event.set()  # a later wait makes a new event

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` as a task kept until it ends (asyncio holds tasks weakly)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel(self) -> list[asyncio.Task]:
        """Cancel every run (server stop); the tasks, to await."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        return tasks
