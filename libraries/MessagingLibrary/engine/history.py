"""The History: an append-only log of every frame sent and received, and of connection events.

Every event carries a monotonic timestamp (``time.perf_counter_ns``) taken on the library's
loop thread at the moment the frame was handed to the socket or read from it. Sent frames may
also carry the *intended* send time of an open-loop schedule, so latency can be measured from
when a message should have gone out, not from when a stalled sender got round to it.

Events are appended only by the loop thread; readers take snapshots (``list`` copies are safe
under the GIL). Checkers in :mod:`.checks` work on such snapshots.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SENT = "sent"
RECEIVED = "received"
CONNECTION = "connection"
#: A fault the fault proxy injected (type ``fault``; the frame says which and where).
FAULT = "fault"

#: Reply types that settle one ``user_message`` attempt.
OUTCOME_TYPES = frozenset({"ai_response", "duplicate_rejected", "queue_full", "error"})


@dataclass(slots=True)
class Event:
    """One thing that happened on a connection."""

    index: int
    ts_ns: int
    direction: str
    connection: str
    type: str
    #: The canonical frame (what the checks read; see MessagingLibrary.dialects).
    frame: dict[str, Any] = field(default_factory=dict)
    intended_ns: int | None = None
    #: The frame as it was on the wire, when the dialect translated it (None: ``frame`` is it).
    raw: dict[str, Any] | None = None

    @property
    def message_id(self) -> str | None:
        value = self.frame.get("message_id")
        return value if isinstance(value, str) else None

    @property
    def sequence_id(self) -> Any:
        return self.frame.get("sequence_id")

    @property
    def request_id(self) -> Any:
        return self.frame.get("request_id")

    @property
    def scheduled_ns(self) -> int:
        """The intended send time when there was one, else the actual time."""
        return self.intended_ns if self.intended_ns is not None else self.ts_ns

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "i": self.index,
            "ts_ns": self.ts_ns,
            "dir": self.direction,
            "conn": self.connection,
            "type": self.type,
        }
        if self.intended_ns is not None:
            record["intended_ns"] = self.intended_ns
        record["frame"] = self.frame
        if self.raw is not None:
            record["raw"] = self.raw
        return record


class History:
    """Append-only event log shared by every connection of the library."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.snapshot())

    def _append(
        self,
        direction: str,
        connection: str,
        frame: dict[str, Any],
        ts_ns: int | None = None,
        intended_ns: int | None = None,
        raw: dict[str, Any] | None = None,
    ) -> Event:
        kind = frame.get("type")
        event = Event(
            index=next(self._counter),
            ts_ns=time.perf_counter_ns() if ts_ns is None else ts_ns,
            direction=direction,
            connection=connection,
            type=kind if isinstance(kind, str) else "<no type>",
            frame=frame,
            intended_ns=intended_ns,
            raw=raw,
        )
        self._events.append(event)
        return event

    def record_sent(
        self,
        connection: str,
        frame: dict[str, Any],
        ts_ns: int | None = None,
        intended_ns: int | None = None,
        raw: dict[str, Any] | None = None,
    ) -> Event:
        """A frame sent: ``frame`` canonical, ``raw`` the wire frame when the dialect translated it."""
        return self._append(SENT, connection, frame, ts_ns, intended_ns, raw)

    def record_received(
        self, connection: str, frame: dict[str, Any], ts_ns: int | None = None, raw: dict[str, Any] | None = None
    ) -> Event:
        """A frame received: ``frame`` its canonical classification, ``raw`` the wire frame if different."""
        return self._append(RECEIVED, connection, frame, ts_ns, None, raw)

    def record_connection(self, connection: str, what: str, **details: Any) -> Event:
        """A connection event: ``opened``, ``closed``, ``dropped``, ``lost``, ``reconnected``."""
        return self._append(CONNECTION, connection, {"type": what, **details})

    def record_fault(self, connection: str, ts_ns: int, **details: Any) -> Event:
        """A fault injected by the fault proxy, at ``ts_ns``: ``{"type": "fault", "fault": "drop", ...}``."""
        return self._append(FAULT, connection, {"type": "fault", **details}, ts_ns)

    def mark(self) -> int:
        """The index the next event will get: pass it as ``since`` to look only at what follows."""
        return len(self._events)

    def snapshot(self, since: int = 0) -> list[Event]:
        return self._events[since:]

    def select(
        self,
        since: int = 0,
        *,
        direction: str | None = None,
        types: Iterable[str] | str | None = None,
        connection: str | None = None,
        message_id: str | None = None,
    ) -> list[Event]:
        if isinstance(types, str):
            types = {types}
        elif types is not None:
            types = set(types)
        return [
            e
            for e in self.snapshot(since)
            if (direction is None or e.direction == direction)
            and (types is None or e.type in types)
            and (connection is None or e.connection == connection)
            and (message_id is None or e.message_id == message_id)
        ]

    def write_jsonl(self, path: Path, since: int = 0) -> int:
        """Write events (from ``since``) as JSON lines; return how many were written."""
        events = self.snapshot(since)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for event in events:
                out.write(orjson.dumps(event.to_json(), option=orjson.OPT_NON_STR_KEYS))
                out.write(b"\n")
        return len(events)
