"""Trust nothing the server says without checking it: every frame's claims against what the client knows.

Every received canonical frame passes through :meth:`TrustChecker.observe` (the session's
observer), and so does every sent one. A claim that contradicts what this process sent or saw
is a defect in its own right, recorded as a *violation*; the library's listener fails every
test in which one was recorded, whatever the test was looking at (``MessagingLibrary._end_test``).

| defect       | the frame claims                                          | but                                      |
|--------------|-----------------------------------------------------------|------------------------------------------|
| cross-talk   | it answers message M (a reply, on a user's connection)    | no connection of this user ever sent M   |
| wrong echo   | M was sent with sequence_id / priority / content X         | M was never sent with X                  |
| false flag   | delivery D is ``redelivered``                              | this user never received D before        |
| wrong count  | ``session_started.queued`` = N messages follow             | fewer than N deliveries followed          |

What the client cannot know is never judged: with ``user_strategy=fixed`` the user existed
before the run (earlier runs' replies may still be queued for it), so cross-talk and false
flags are not judged; a delivery written to a connection just before it closed may never have
been read (a client that sent its close frame ignores data frames), so a first-seen
``redelivered`` is a false flag only when no other connection of that user was open at any
moment after the entry's ``queued_at`` (judged only when the server's clock is ours: a target on
this machine); a queued count is judged only on a connection we closed
cleanly (so every frame the server wrote before our close was read) that stayed open at least
``COUNT_GRACE_S`` after ``session_started``.

Memory is bounded per message: one small record per message id sent in the run's History.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .history import CONNECTION, RECEIVED, SENT

#: Replies that claim to answer (or refuse) one message the client sent.
REPLY_TYPES = frozenset({"ai_response", "throughput_response", "duplicate_rejected", "queue_full"})
#: How long after ``session_started`` a connection must have stayed open for a short count of
#: its deliveries to count as a wrong ``queued`` (a slow server may send them late).
COUNT_GRACE_S = 2.0
#: Violations kept in full (the rest are counted).
MAX_VIOLATIONS = 20
ANSWER_PREFIX = "Response to: "


@dataclass
class _Sent:
    """What was sent under one message id by one user."""

    sequences: set[Any] = field(default_factory=set)
    priorities: set[Any] = field(default_factory=set)
    contents: set[str] = field(default_factory=set)


@dataclass
class _User:
    messages: dict[str, _Sent] = field(default_factory=dict)
    deliveries: set[str] = field(default_factory=set)
    #: Wall-clock end (ns) of each of this user's connections (None: still open), by epoch key.
    connections: dict[tuple[int, int], int | None] = field(default_factory=dict)


@dataclass
class _Epoch:
    """One connection's current session: what was announced and what arrived."""

    announced: int | None = None
    announced_ns: int = 0
    delivered: set[str] = field(default_factory=set)


class TrustChecker:
    """Judges each frame's claims; keeps the violations until the listener takes them."""

    def __init__(self) -> None:
        self.users: dict[str, _User] = {}
        self.epochs: dict[int, _Epoch] = {}
        self.violations: list[str] = []
        self.dropped_violations = 0
        #: ``user_strategy=fixed``: cross-talk and false flags cannot be judged.
        self.pre_existing_users = False
        #: The server's wall clock is ours (a target on this machine): its ``queued_at`` can be
        #: compared with when our connections ended, which judging a false flag needs.
        self.same_clock = True

    # -- the session's observer ----------------------------------------------------------------

    def observe(self, session: Any, event: Any) -> None:
        user = self.users.setdefault(session.user_key, _User())
        direction = event.direction
        if direction == SENT:
            self._sent(user, event.frame)
        elif direction == RECEIVED:
            self._received(session, user, event)
        elif direction == CONNECTION:
            self._connection(session, user, event.frame)

    def _sent(self, user: _User, frame: dict[str, Any]) -> None:
        if frame.get("type") not in ("user_message", "throughput_test"):
            return
        message_id = frame.get("message_id")
        if not isinstance(message_id, str):
            return
        record = user.messages.setdefault(message_id, _Sent())
        record.sequences.add(_hashable(frame.get("sequence_id")))
        record.priorities.add(frame.get("priority") or "normal")
        content = frame.get("content")
        if isinstance(content, str):
            record.contents.add(content)

    def _received(self, session: Any, user: _User, event: Any) -> None:
        frame, kind = event.frame, event.type
        epoch = self.epochs.setdefault(id(session), _Epoch())
        if kind == "session_started":
            queued = frame.get("queued")
            if epoch.announced is None and isinstance(queued, int) and not isinstance(queued, bool):
                epoch.announced, epoch.announced_ns = queued, event.ts_ns
            return
        delivery_id = frame.get("delivery_id")
        if isinstance(delivery_id, str):
            self._delivery(session, user, epoch, delivery_id, frame)
        if kind not in REPLY_TYPES:
            return
        message_id = frame.get("message_id")
        if not isinstance(message_id, str):
            return
        sent = user.messages.get(message_id)
        if sent is None:
            if not self.pre_existing_users:
                self.note(
                    f"Cross-talk (a privacy failure): connection '{session.alias}' received {kind} for message "
                    f"'{message_id}', which this user never sent"
                )
            return
        self._echoes(session, kind, message_id, sent, frame)

    def _echoes(self, session: Any, kind: str, message_id: str, sent: _Sent, frame: dict[str, Any]) -> None:
        where = f"{kind} for message '{message_id}' on connection '{session.alias}'"
        for key in ("sequence_id", "original_sequence_id"):
            if key in frame and _hashable(frame[key]) not in sent.sequences:
                shown = ", ".join(sorted(repr(s) if s is not None else "none" for s in sent.sequences))
                self.note(f"Wrong echo: {where} echoes {key} {frame[key]!r}, but {shown} was sent")
                return
        priority = frame.get("priority")
        if kind in ("ai_response", "queue_full") and priority is not None and priority not in sent.priorities:
            self.note(f"Wrong echo: {where} echoes priority {priority!r}, but {', '.join(sorted(map(str, sent.priorities)))} was sent")
            return
        content = frame.get("content")
        if kind == "ai_response" and isinstance(content, str) and content.startswith(ANSWER_PREFIX) and sent.contents:
            if content[len(ANSWER_PREFIX):] not in sent.contents:
                self.note(f"Wrong echo: {where} answers text that was never sent with it")

    def _delivery(self, session: Any, user: _User, epoch: _Epoch, delivery_id: str, frame: dict[str, Any]) -> None:
        epoch.delivered.add(delivery_id)
        first = delivery_id not in user.deliveries
        user.deliveries.add(delivery_id)
        if not (first and frame.get("redelivered") is True) or self.pre_existing_users or not self.same_clock:
            return
        queued_at = frame.get("queued_at")
        if not isinstance(queued_at, int) or isinstance(queued_at, bool):
            return
        here = (id(session), session.connects)
        # Redelivered is possible only if another connection of this user was open at some
        # moment after the entry was queued (the delivery may have died unread in its close).
        if any(key != here and (ended is None or ended >= queued_at) for key, ended in user.connections.items()):
            return
        self.note(
            f"False flag: delivery '{delivery_id}' on connection '{session.alias}' is flagged redelivered, "
            "but this user never received it before (no other connection of the user was open since it was queued)"
        )

    def _connection(self, session: Any, user: _User, frame: dict[str, Any]) -> None:
        what = frame.get("type")
        key = (id(session), session.connects)
        if what in ("opened", "reconnected"):
            self.epochs[id(session)] = _Epoch()
            user.connections[key] = None
            return
        user.connections[key] = time.time_ns()
        epoch = self.epochs.pop(id(session), None)
        if what != "closed" or epoch is None or not epoch.announced:
            return
        if time.perf_counter_ns() - epoch.announced_ns < COUNT_GRACE_S * 1e9:
            return
        if len(epoch.delivered) < epoch.announced:
            self.note(
                f"Wrong count: session_started on connection '{session.alias}' announced {epoch.announced} "
                f"queued message(s), but {len(epoch.delivered)} were delivered"
            )

    # -- load runs and the listener --------------------------------------------------------------

    def note_load(self, name: str, trust: dict[str, int], examples: dict[str, list[str]]) -> None:
        """A load run's own trust counts (the load engine checks its replies itself)."""
        labels = {"cross_talk": "Cross-talk (a privacy failure)", "wrong_echo": "Wrong echo"}
        for defect, count in sorted(trust.items()):
            sample = (examples.get(defect) or [""])[0]
            plural = "reply" if count == 1 else "replies"
            self.note(f"{labels.get(defect, defect)}: load run '{name}': {count} {plural} contradicted what was sent; e.g. {sample}")

    def note(self, violation: str) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(violation)
        else:
            self.dropped_violations += 1

    def take(self) -> list[str]:
        """The violations recorded since the last call (and how many more were not kept)."""
        taken, self.violations = self.violations, []
        if self.dropped_violations:
            taken.append(f"… and {self.dropped_violations} more")
            self.dropped_violations = 0
        return taken


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
