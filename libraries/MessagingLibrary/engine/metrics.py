"""Latency histograms (HdrHistogram) and small statistics helpers.

Latencies are recorded in microseconds into an HDR histogram with 3 significant figures, from
1 µs to 1 hour: memory is bounded however many values are recorded, and percentiles are exact
to 0.1%. Values above the range are clamped to the maximum and counted in ``clamped``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3

#: Confidence of the intervals reported with every percentile.
CONFIDENCE = 0.95
#: The percentiles a summary carries, by the key prefix of ``as_dict`` (``p99`` → ``p99_s``).
SUMMARY_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
#: Where a spectrum is sampled: HdrHistogram's halving steps towards 100.
SPECTRUM_PERCENTILES = (
    10.0, 25.0, 50.0, 75.0, 87.5, 90.0, 93.75, 95.0, 96.875, 98.4375, 99.0, 99.21875, 99.6094, 99.8047,
    99.9, 99.9512, 99.9756, 99.99, 99.9939, 99.9969, 99.999,
)


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

    # -- between processes (engine.workers) --------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as HdrHistogram's own compressed encoding (its counts array does not pickle)."""
        histogram = self._flush()
        return {
            "settings": _settings(histogram),
            "encoded": histogram.encode() if histogram.get_total_count() else b"",
            "clamped": self.clamped,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pending = {}
        self.clamped = state["clamped"]
        if state["encoded"]:
            self._histogram = HdrHistogram.decode(state["encoded"])
        else:
            self._histogram = HdrHistogram(*state["settings"])
        if _settings(self._histogram) != tuple(state["settings"]):
            raise ValueError(
                f"A latency histogram decoded with settings {_settings(self._histogram)}, "
                f"but was recorded with {tuple(state['settings'])}."
            )

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add every value of ``other`` to this histogram (exact: counts are added, never percentiles).

        Both must have the same range and precision, or the merge refuses (a merged histogram
        with another resolution would silently change every percentile). An empty one adds nothing.
        """
        mine, theirs = self._flush(), other._flush()  # noqa: SLF001 (the same class)
        if _settings(mine) != _settings(theirs):
            raise ValueError(
                f"Cannot merge latency histograms with different settings: {_settings(mine)} "
                f"and {_settings(theirs)} (lowest, highest, significant figures)."
            )
        if theirs.get_total_count():
            mine.add(theirs)
        self.clamped += other.clamped
        return self

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

    def value_at_rank(self, rank: int) -> float:
        """The ``rank``-th smallest value (1-based order statistic) in seconds."""
        count = self.count
        if not 1 <= rank <= count:
            raise ValueError(f"Rank must be between 1 and {count}, got {rank}.")
        return self._flush().get_value_at_percentile(100.0 * rank / count) / 1e6

    def interval(self, percentile: float, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """The distribution-free confidence interval of ``percentile`` in seconds, or ``None``.

        ``None`` when the sample is too small to support the percentile (see :func:`rank_interval`).
        """
        ranks = rank_interval(self.count, percentile, confidence)
        if ranks is None:
            return None
        return self.value_at_rank(ranks[0]), self.value_at_rank(ranks[1])

    def spectrum(self) -> list[tuple[float, float]]:
        """``(percentile, seconds)`` pairs HdrHistogram-style, halving the distance to 100 each step.

        Stops at the first percentile the sample cannot resolve (past one sample in the tail) and
        ends with the maximum at 100: what a percentile spectrum chart draws.
        """
        count = self.count
        if count == 0:
            return []
        points = [(0.0, self.min)]
        for percentile in SPECTRUM_PERCENTILES:
            if count * (1 - percentile / 100) < 1:
                break
            points.append((percentile, self.percentile(percentile)))
        points.append((100.0, self.max))
        return points

    def summary(self) -> LatencySummary:
        count = self.count
        return LatencySummary(
            count=count,
            mean=self.mean,
            p50=self.percentile(50),
            p90=self.percentile(90),
            p95=self.percentile(95),
            p99=self.percentile(99),
            p999=self.percentile(99.9),
            max=self.max,
            intervals={name: self.interval(value) for name, value in SUMMARY_PERCENTILES.items()},
            spectrum=self.spectrum(),
        )


def _settings(histogram: HdrHistogram) -> tuple[int, int, int]:
    """An HDR histogram's range and precision: two can be merged only when these agree."""
    return (
        histogram.lowest_trackable_value,
        histogram.highest_trackable_value,
        histogram.significant_figures,
    )


def merge_hdr(into: HdrHistogram, other: HdrHistogram, what: str) -> None:
    """Add ``other``'s counts to ``into`` (a plain HdrHistogram), refusing differing settings."""
    if _settings(into) != _settings(other):
        raise ValueError(f"Cannot merge {what} histograms with different settings: {_settings(into)} and {_settings(other)}.")
    if other.get_total_count():
        into.add(other)


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
    #: Each summary percentile's 95% confidence interval in seconds (None: too few samples).
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    #: ``(percentile, seconds)`` points for a percentile spectrum chart.
    spectrum: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ci_s": {name: list(ci) if ci else None for name, ci in self.intervals.items()},
            "spectrum": [list(point) for point in self.spectrum],
            "count": self.count,
            "mean_s": self.mean,
            "p50_s": self.p50,
            "p90_s": self.p90,
            "p95_s": self.p95,
            "p99_s": self.p99,
            "p99.9_s": self.p999,
            "max_s": self.max,
        }


# --------------------------------------------------------------------------- honest percentiles

#: Above this n·p·(1−p) the binomial is close enough to normal to use its approximation.
_NORMAL_ENOUGH = 100.0


def _z(confidence: float) -> float:
    """The two-sided standard normal quantile for ``confidence`` (bisection on erf; no SciPy)."""
    target = 1 - (1 - confidence) / 2
    low, high = 0.0, 10.0
    for _ in range(80):
        middle = (low + high) / 2
        if 0.5 * (1 + math.erf(middle / math.sqrt(2))) < target:
            low = middle
        else:
            high = middle
    return high


def rank_interval(count: int, percentile: float, confidence: float = CONFIDENCE) -> tuple[int, int] | None:
    """The 1-based ranks ``(l, u)`` of the order statistics that bracket ``percentile`` with ``confidence``.

    Distribution-free (order statistics, as GuideLLM reports them): the true percentile lies
    between the ``l``-th and the ``u``-th smallest of ``count`` samples with probability at
    least ``confidence``, because the number of samples below it is binomial(count, p).
    Exact binomial tails while n·p·(1−p) ≤ 100, the normal approximation above.

    Returns ``None`` when the sample is too small to support the percentile: the interval
    would reach past the largest (or below the smallest) sample. For a 95% interval that
    means ``count < ln(0.025) / ln(p)``: p99 needs 367 samples, p95 72, p50 6, p99.9 3,688
    (see :func:`min_samples`).
    """
    if not 0 < percentile < 100:
        raise ValueError(f"A confidence interval needs a percentile strictly between 0 and 100, got {percentile}.")
    if not 0 < confidence < 1:
        raise ValueError(f"Confidence must be between 0 and 1, got {confidence}.")
    if count <= 0:
        return None
    p = percentile / 100
    alpha = (1 - confidence) / 2
    if count * p * (1 - p) > _NORMAL_ENOUGH:
        z = _z(confidence)
        spread = z * math.sqrt(count * p * (1 - p))
        lower, upper = math.floor(count * p - spread), math.ceil(count * p + spread) + 1
        return (lower, upper) if lower >= 1 and upper <= count else None
    # Exact: scan the binomial's tail from the nearer end (few terms: n·p·(1−p) is small).
    flip = p < 0.5
    q_p = 1 - p if flip else p
    log_p, log_q = math.log(q_p), math.log1p(-q_p)
    log_n = math.lgamma(count + 1)

    def pmf(k: int) -> float:
        return math.exp(log_n - math.lgamma(k + 1) - math.lgamma(count - k + 1) + k * log_p + (count - k) * log_q)

    # upper tail S(k) = P(B >= k), from k = count downwards
    tail, upper, lower = 0.0, None, None
    for k in range(count, -1, -1):
        tail += pmf(k)
        if upper is None and tail > alpha:
            upper = k + 1  # S(k + 1) <= alpha < S(k): the smallest u with P(B >= u) <= alpha
        if tail >= 1 - alpha:
            lower = k  # the largest l with P(B < l) <= alpha
            break
    if upper is None or lower is None or upper > count or lower < 1:
        return None
    if flip:  # ranks of the mirrored sample
        lower, upper = count + 1 - upper, count + 1 - lower
        if lower < 1 or upper > count:
            return None
    return lower, upper


def min_samples(percentile: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples whose confidence interval for ``percentile`` stays within the sample."""
    p = max(percentile, 100 - percentile) / 100
    estimate = max(1, math.ceil(math.log((1 - confidence) / 2) / math.log(p)))
    count = max(1, estimate - 2)
    while rank_interval(count, percentile, confidence) is None:
        count += 1
    return count
