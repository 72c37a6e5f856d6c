"""Latency histograms (HdrHistogram) and small statistics helpers.

Latencies are recorded in microseconds into an HDR histogram with 3 significant figures, from
1 µs to 1 hour: memory is bounded however many values are recorded, and percentiles are exact
to 0.1%. Values above the range are clamped to the maximum and counted in ``clamped``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3


#: Values recorded since the last flush into the HDR histogram are counted in a dict first
#: (recording into hdrh is pure Python and costs about 1 µs); flushed at this many keys.
PENDING_KEYS = 256
#: Significant bits an HDR histogram with 3 significant figures keeps (its sub-bucket count).
_KEPT_BITS = 11


class LatencyHistogram:
    """An HDR histogram of latencies; record nanoseconds, read seconds.

    Recording is batched: each value is first rounded to the histogram's own resolution and
    counted in a small dict, which is flushed into the histogram every :data:`PENDING_KEYS`
    distinct values and before every read. Memory stays bounded; results are identical.
    """

    def __init__(self) -> None:
        self._histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        self._pending: dict[int, int] = {}
        self.clamped = 0

    @classmethod
    def of(cls, values_ns: Iterable[int]) -> LatencyHistogram:
        histogram = cls()
        for value in values_ns:
            histogram.record_ns(value)
        return histogram

    def record_ns(self, value_ns: int) -> None:
        micros = value_ns // 1000
        if micros < LOWEST_US:
            micros = LOWEST_US
        elif micros > HIGHEST_US:
            self.clamped += 1
            micros = HIGHEST_US
        if micros >= 1 << _KEPT_BITS:  # round down to the histogram's resolution
            shift = micros.bit_length() - _KEPT_BITS
            micros = micros >> shift << shift
        pending = self._pending
        pending[micros] = pending.get(micros, 0) + 1
        if len(pending) >= PENDING_KEYS:
            self._flush()

    def _flush(self) -> HdrHistogram:
        if self._pending:
            record = self._histogram.record_value
            for micros, count in self._pending.items():
                record(micros, count)
            self._pending = {}
        return self._histogram

    @property
    def count(self) -> int:
        return self._flush().get_total_count()

    def percentile(self, percentile: float) -> float:
        """The value at ``percentile`` (0–100) in seconds; 0.0 when empty."""
        if not 0 <= percentile <= 100:
            raise ValueError(f"Percentile must be between 0 and 100, got {percentile}.")
        if self.count == 0:
            return 0.0
        return self._flush().get_value_at_percentile(percentile) / 1e6

    @property
    def max(self) -> float:
        return self._flush().get_max_value() / 1e6 if self.count else 0.0

    @property
    def min(self) -> float:
        return self._flush().get_min_value() / 1e6 if self.count else 0.0

    @property
    def mean(self) -> float:
        return self._flush().get_mean_value() / 1e6 if self.count else 0.0

    def summary(self) -> LatencySummary:
        return LatencySummary(
            count=self.count,
            mean=self.mean,
            p50=self.percentile(50),
            p90=self.percentile(90),
            p95=self.percentile(95),
            p99=self.percentile(99),
            p999=self.percentile(99.9),
            max=self.max,
        )


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles in seconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_s": self.mean,
            "p50_s": self.p50,
            "p90_s": self.p90,
            "p95_s": self.p95,
            "p99_s": self.p99,
            "p99.9_s": self.p999,
            "max_s": self.max,
        }
