"""Open-loop send schedules: named phases of constant or linearly ramping arrival rate.

A schedule is fixed before the first send. Message ``k`` (0-based, over the whole run) has an
intended send time ``intended_offset_ns(k)`` after the run's start; it is computed from the
phases, never stored, so a schedule of any length takes the same memory.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from robot.utils import timestr_to_secs

#: ``1000/s for 2 s`` (constant) or ``1000..5000/s for 2 s`` (a linear ramp).
_PHASE_RE = re.compile(
    r"^\s*(?:(?P<start>\d+(?:\.\d+)?)\s*(?:\.\.|->|→)\s*)?(?P<rate>\d+(?:\.\d+)?)\s*(?:/s|msg/s)\s+for\s+(?P<duration>.+?)\s*$"
)


@dataclass(frozen=True)
class Phase:
    """``duration_s`` seconds of arrivals at ``rate`` msg/s (ramping from ``start_rate`` when given)."""

    name: str
    rate: float
    duration_s: float
    start_rate: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("A load phase needs a name.")
        if not math.isfinite(self.rate) or self.rate < 0:
            raise ValueError(f"Phase '{self.name}': rate must be a number >= 0 msg/s, got {self.rate}.")
        if self.start_rate is not None and (not math.isfinite(self.start_rate) or self.start_rate < 0):
            raise ValueError(f"Phase '{self.name}': start rate must be >= 0 msg/s, got {self.start_rate}.")
        if not math.isfinite(self.duration_s) or self.duration_s <= 0:
            raise ValueError(f"Phase '{self.name}': duration must be > 0 s, got {self.duration_s} s.")

    @property
    def initial_rate(self) -> float:
        return self.rate if self.start_rate is None else self.start_rate

    @property
    def count(self) -> int:
        """How many messages the phase sends: the integral of its rate over its duration."""
        return int(round((self.initial_rate + self.rate) / 2 * self.duration_s))

    @property
    def mean_rate(self) -> float:
        return self.count / self.duration_s

    def offset_s(self, i: int) -> float:
        """When the phase's ``i``-th message is due, in seconds after the phase starts.

        Message ``i`` is due when the cumulative arrivals ``r0·t + (r1 − r0)·t²/(2D)`` reach
        ``i``: evenly spaced for a constant rate, closer and closer together on a ramp up.
        """
        r0, r1, duration = self.initial_rate, self.rate, self.duration_s
        slope = (r1 - r0) / duration
        if abs(slope) < 1e-12:
            return i / r0
        return (-r0 + math.sqrt(max(0.0, r0 * r0 + 2 * slope * i))) / slope

    def describe(self) -> str:
        rate = f"{self.start_rate:g}..{self.rate:g}" if self.start_rate is not None else f"{self.rate:g}"
        return f"{self.name}: {rate} msg/s for {self.duration_s:g} s ({self.count} messages)"

    @classmethod
    def parse(cls, name: str, text: str) -> Phase:
        """A phase from ``1000/s for 2 s`` or ``1000..5000/s for 30 s`` (a ramp)."""
        match = _PHASE_RE.match(str(text))
        if match is None:
            raise ValueError(
                f"Load phase '{name}': cannot read '{text}'. Write a rate and a duration, "
                "for example '1000/s for 2 s', or a ramp '1000..5000/s for 30 s'."
            )
        try:
            duration = timestr_to_secs(match["duration"], round_to=None)
        except ValueError:
            raise ValueError(f"Load phase '{name}': '{match['duration']}' is not a duration (try '2 s').") from None
        start = float(match["start"]) if match["start"] is not None else None
        return cls(name, float(match["rate"]), float(duration), start)


class Schedule:
    """Phases one after another; ``intended_offset_ns(k)`` for any message of the run."""

    def __init__(self, phases: Sequence[Phase]) -> None:
        if not phases:
            raise ValueError("A load run needs at least one phase.")
        names = [p.name for p in phases]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"Load phase names must be unique; repeated: {', '.join(duplicated)}.")
        self.phases = tuple(phases)
        self._first_index: list[int] = []
        self._start_ns: list[int] = []
        index, start = 0, 0.0
        for phase in self.phases:
            self._first_index.append(index)
            self._start_ns.append(int(start * 1e9))
            index += phase.count
            start += phase.duration_s
        self.total = index
        self.duration_s = start
        only = self.phases[0]
        #: One constant phase (the common case): offsets are k × interval, no search.
        self._interval_ns = 1e9 / only.rate if len(self.phases) == 1 and only.start_rate is None and only.rate else 0.0

    def phase_of(self, k: int) -> int:
        """The index of the phase message ``k`` belongs to."""
        if len(self._first_index) == 1:
            return 0
        return max(0, bisect.bisect_right(self._first_index, k) - 1)

    def phase_bounds(self, p: int) -> tuple[int, int]:
        """First message index and count of phase ``p``."""
        return self._first_index[p], self.phases[p].count

    def phase_start_ns(self, p: int) -> int:
        return self._start_ns[p]

    def intended_offset_ns(self, k: int) -> int:
        if self._interval_ns:
            return int(k * self._interval_ns)
        p = self.phase_of(k)
        return self._start_ns[p] + int(self.phases[p].offset_s(k - self._first_index[p]) * 1e9)

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.phases)
