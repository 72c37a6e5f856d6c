"""The thin shared context every keyword component gets, and the component base class."""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from assertionengine import AssertionOperator, verify_assertion
from robot.api import SkipExecution, logger
from robot.libraries.BuiltIn import BuiltIn, RobotNotRunningError
from robot.utils import is_truthy, timestr_to_secs

from .dialects import ApexDialect, Dialect, OperationUnsupported
from .engine.checks import CheckResult
from .engine.history import FAULT, History
from .engine.loop import LoopThread
from .engine.metrics import min_samples
from .engine.trust import TrustChecker
from .engine.session import Session, SessionError
from .parallel import pabot_process


class UserStrategy(enum.Enum):
    """How a test gets its own fresh user (see docs/protocol.md, "Test users")."""

    derive = "derive"
    auth_url = "auth_url"
    fixed = "fixed"


@dataclass
class Target:
    """Where the suites connect, and as whom. Tokens are kept out of every log line."""

    url: str | None = None
    token: str | None = None
    admin_token: str | None = None
    strategy: UserStrategy = UserStrategy.derive
    auth_url: str | None = None
    name: str = "unset"
    #: The wire protocol (MessagingLibrary.dialects): apex unless Configure Target says otherwise.
    dialect: Dialect = field(default_factory=ApexDialect)
    #: Signs the test users' JWTs in a dialect whose tokens are JWTs (``APEX_JWT_SECRET``).
    jwt_secret: str | None = None
    #: The end-to-end test login's bypass key (``APEX_E2E_BYPASS_KEY``) and its header.
    bypass_key: str | None = None
    bypass_header: str = "X-E2E-Bypass-Key"


@dataclass
class Measurement:
    """One measured value, what it was checked against, and whether it passed."""

    name: str
    value: Any
    unit: str = ""
    operator: str = ""
    expected: Any = None
    passed: bool | None = None
    #: Why this assertion could not judge the server (the load generator fell behind), or "".
    inconclusive: str = ""
    #: Whose figure it is: ``server`` (what the test judges) or ``generator`` (the load
    #: generator's own health, shown beside the server's figures).
    source: str = "server"
    #: How many samples a percentile rests on, and its 95% confidence interval (order statistics).
    samples: int | None = None
    interval: tuple[float, float] | None = None
    #: The step of the test that measured it: a template row (``row 3: rate=2500``) or "".
    step: str = ""
    #: What it measured, for charts: ``load`` (run name), ``phase``, ``figure``, ``percentile``,
    #: ``process``. Not shown.
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def exact(cls, name: str, value: Any, expected: Any, unit: str = "count") -> Measurement:
        """A row for a value that must equal ``expected`` (a count of violations, say)."""
        return cls(name, value, unit, "==", expected, value == expected)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "operator": self.operator,
            "threshold": self.expected,
            "passed": self.passed,
            "inconclusive": bool(self.inconclusive),
            "source": self.source,
            "samples": self.samples,
            "interval": list(self.interval) if self.interval else None,
            "step": self.step,
        }

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL``, ``INCONCLUSIVE`` or ``""`` (recorded, not asserted)."""
        if self.inconclusive:
            return "INCONCLUSIVE"
        return {True: "PASS", False: "FAIL", None: ""}[self.passed]


@dataclass
class Artefact:
    """Something a test measured that a chart can draw: ``kind`` ``load`` (a LoadResult),
    ``monitor`` (a ResourceMonitor) or ``offline`` (an accounting's counts), and the test's step."""

    kind: str
    data: Any
    step: str = ""


@dataclass
class Owned:
    """A resource and the scope (a test, or a suite by its id) that must close it."""

    scope: str
    resource: Any


@dataclass
class Context:
    """State shared by the keyword components. Kept deliberately small."""

    loop: LoopThread = field(default_factory=LoopThread)
    history: History = field(default_factory=History)
    sessions: dict[str, Session] = field(default_factory=dict)
    current: str | None = None
    target: Target = field(default_factory=Target)
    measurements: list[Measurement] = field(default_factory=list)
    owners: list[Owned] = field(default_factory=list)
    scope: str = "library"
    suite_scope: str = "library"
    test_mark: int = 0
    #: perf_counter_ns when the current test started (the library's creation outside a test);
    #: times of injected faults are shown relative to it.
    test_started_ns: int = field(default_factory=time.perf_counter_ns)
    default_timeout: float = 10.0
    #: The running resource monitor (engine.monitor.ResourceMonitor), if any: load runs mark it.
    monitor: Any = None
    #: The load run in progress (engine.load.LoadEngine), if any: the fault proxy names its connections.
    load_engine: Any = None
    #: Appended to generated message ids when test users are not fresh (strategy ``fixed``),
    #: so a rerun's ``seq-msg-0`` is not rejected as a duplicate of the last run's.
    id_suffix: str = ""
    #: The health of the latest open-loop generator in this test (engine.health.GeneratorHealth):
    #: when it fell behind, rate and latency assertions are inconclusive. Reset per test.
    generator: Any = None
    #: Why this test's rate or latency could not be judged (one reason per run); the listener
    #: turns a test that otherwise passed into SKIP with ``Inconclusive: ...``.
    inconclusive: list[str] = field(default_factory=list)
    #: Every frame's claims against what the client sent (engine.trust); the listener fails
    #: each test in which it recorded a violation.
    trust: TrustChecker = field(default_factory=TrustChecker)
    #: The current step of the test (a template row), set by the listener; rows carry it.
    step: str = ""
    #: (number of measurement rows when the step began, step): every row gets its step from
    #: these, however it was made (see `Log Measurements`).
    step_marks: list[tuple[int, str]] = field(default_factory=list)
    #: What this test measured that a chart can draw (load runs, monitors, agent runs, offline
    #: queues), in order; the reporting keywords draw them with the rows' thresholds.
    artefacts: list[Any] = field(default_factory=list)
    #: What this run tested (`Set Run Metadata`): the summary's header.
    run_metadata: dict[str, str] = field(default_factory=dict)
    #: The current test's figures and charts once `Log Measurements` ran (for summary.html).
    test_record: dict[str, Any] | None = None
    #: This process as an item of a pabot run (MessagingLibrary.parallel.PabotProcess), set by
    #: the listener when the run starts; None when pabot did not start it.
    pabot: Any = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> int:
        """A number unique within this library instance (for generated message ids)."""
        return next(self._ids)

    def generated_id(self, message_id: str) -> str:
        """A message id the library made up, with the per-test suffix when users are not fresh."""
        return message_id + self.id_suffix

    # -- connections -------------------------------------------------------------------------

    def session(self, alias: str | None = None) -> Session:
        alias = alias or self.current
        if alias is None:
            raise RuntimeError("No connection is open: use 'Connect' first.")
        try:
            return self.sessions[alias]
        except KeyError:
            known = ", ".join(sorted(self.sessions)) or "none"
            raise RuntimeError(f"No connection with alias '{alias}' (open connections: {known}).") from None

    def unsupported(self, operation: str, detail: str = "") -> SkipExecution:
        """The skip for a scenario that needs ``operation``, which the target lacks.

        Names the operation and the dialect, so a skipped scenario against the real platform
        says what is missing (a query or test-control operation), never passes by accident.
        """
        why = f" ({detail})" if detail else ""
        return SkipExecution(
            f"The target has no '{operation}' operation in dialect '{self.target.dialect.name}'{why}: "
            "this scenario needs it, so it is skipped."
        )

    def run(self, coro, timeout: float | None, what: str) -> Any:
        """Run a coroutine on the loop thread; the outer limit is ``timeout`` plus a margin."""
        limit = None if timeout is None else timeout + 2.0
        try:
            return self.loop.run(coro, limit, what)
        except OperationUnsupported as error:
            # The dialect cannot even express the operation: a skip naming it, as for a server
            # that answers it 'unsupported'.
            raise self.unsupported(error.operation, str(error)) from None

    def own(self, resource: Any) -> None:
        self.owners.append(Owned(self.scope, resource))

    # -- measurements ------------------------------------------------------------------------

    def check(
        self,
        name: str,
        value: Any,
        operator: AssertionOperator | None,
        expected: Any,
        unit: str = "",
        message: str = "",
        timing: bool | None = None,
        percentile: float | None = None,
        samples: int | None = None,
        interval: tuple[float, float] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Record ``value`` and, when an operator is given, assert it against ``expected``.

        The row (measured, operator, threshold, passed) is kept for the test's measurement
        table whether the assertion passes or fails. ``expected`` is converted to the type of
        ``value``: a Robot time string (``500 ms``) when the unit is seconds.

        ``timing``: the figure is a rate or a latency (by default: its unit is ``s`` or
        ``msg/s``, or it is an achieved ratio or a degradation). Such an assertion is
        *inconclusive* when the latest open-loop generator of this test fell behind its
        schedule: the row says so, the reason is kept for the test's verdict, and nothing is
        asserted (see :func:`is_timing`).

        ``percentile`` (0–100) with ``samples``: the value is that percentile of ``samples``
        values. The row shows the count and ``interval`` (its 95% confidence interval), and an
        assertion on a percentile the sample is too small to support (``interval`` is None:
        see :func:`engine.metrics.rank_interval`) is inconclusive, naming the count and the
        fewest samples it needs.
        """
        row = Measurement(name, value, unit, samples=samples, interval=interval, step=self.step, meta=meta or {})
        self.measurements.append(row)
        if operator is None:
            if expected not in (None, ""):
                raise ValueError(f"'{name}': an expected value needs an assertion operator (for example '<=').")
            return value
        converted = coerce_expected(expected, value, unit, operator)
        row.operator, row.expected = operator.value, converted
        reason = self.generator_problem() if (is_timing(name, unit) if timing is None else timing) else ""
        if reason:
            row.inconclusive = reason
            self.mark_inconclusive(reason)
            logger.info(f"Inconclusive: {name} {operator.value} {plain_value(converted, unit)} not judged: the load generator fell behind.")
            return value
        if percentile is not None and samples is not None and interval is None:
            reason = too_few_samples(name, percentile, samples)
            row.inconclusive = reason
            self.mark_inconclusive(reason)
            logger.info(f"Inconclusive: {reason}.")
            return value
        try:
            verify_assertion(
                value,
                operator,
                converted,
                message,
                custom_message=f"{name} was {plain_value(value, unit)}, expected {operator.value} "
                f"{plain_value(converted, unit)}{'. ' + message if message else ''}",
            )
        except AssertionError:
            row.passed = False
            raise
        row.passed = True
        return value

    # -- the generator's own health ----------------------------------------------------------

    def note_generator(self, health: Any, what: str) -> None:
        """Keep ``health`` (engine.health.GeneratorHealth) as this test's latest generator, with its rows.

        The table then shows the generator's figures beside the server's: its late sends
        against the bound (the judged one), writes that waited on the server, event-loop lag
        and client CPU.
        """
        self.generator = health
        reason = health.inconclusive_reason()
        late = Measurement(
            f"late sends (over {health.behind_threshold_s * 1000:g} ms, the generator's own) of {what}",
            health.generator_late_sends, "count", "<=", health.allowed_late_sends,
            None if reason else True, reason, "generator",
        )
        rows = [late, Measurement(
            f"late sends (over {health.late_threshold_s * 1000:g} ms, any reason) of {what}",
            health.late_sends, "count", source="generator"), Measurement(f"writes waiting on the server of {what}", health.write_waits, "count", source="generator")]
        lag = health.loop_lag.get("p99_s")
        if lag is not None:
            rows.append(Measurement(f"event-loop lag p99 of {what}", round(lag, 6), "s", source="generator"))
        rows.append(Measurement(f"client CPU (share of a core) of {what}", health.cpu_share, "ratio", source="generator"))
        for worker in getattr(health, "workers", ()):  # a run split over workers: each judged as one
            behind = worker.inconclusive_reason()
            rows.append(Measurement(
                f"late sends (over {worker.behind_threshold_s * 1000:g} ms, the generator's own) of {what}, {worker.run}",
                worker.generator_late_sends, "count", "<=", worker.allowed_late_sends,
                None if behind else True, behind, "generator",
            ))
        self.measurements.extend(rows)
        if reason:
            logger.warn(f"Inconclusive: {reason}.")
        else:
            logger.info(f"The load generator kept its schedule ({what}): {health.describe()}.")

    def generator_problem(self) -> str:
        """Why this test's latest open-loop run cannot judge rate or latency, or ``""``."""
        return self.generator.inconclusive_reason() if self.generator is not None else ""

    def mark_inconclusive(self, reason: str) -> None:
        if reason not in self.inconclusive:
            self.inconclusive.append(reason)

    def fault_note(self) -> str:
        """`` [Network faults injected in this test: ...]`` when the fault proxy injected any, else ``""``.

        Appended to a failed test's message so the cause shows next to the effect.
        """
        events = [e for e in self.history.select(self.test_mark, direction=FAULT) if e.frame.get("fault") != "rule added"]
        if not events:
            return ""
        counts = Counter(str(e.frame.get("fault")) for e in events)
        first = events[0]
        frame = first.frame.get("frame") or {}
        what = " ".join(str(frame[k]) for k in ("type", "message_id", "delivery_id") if frame.get(k) is not None)
        at = (first.ts_ns - self.test_started_ns) / 1e9
        when = f" at +{at:.3f} s" if at >= 0 else ""
        return (
            " [Network faults injected in this test: "
            + ", ".join(f"{n} {fault}" for fault, n in counts.items())
            + f"; the first: {first.frame.get('fault')}{' of ' + what if what else ''}{when} on {first.connection}]"
        )

    # -- Robot environment -------------------------------------------------------------------

    @staticmethod
    def output_dir() -> Path:
        try:
            return Path(BuiltIn().get_variable_value("${OUTPUT DIR}"))
        except RobotNotRunningError:
            return Path.cwd() / "results"

    @staticmethod
    def pabot_process(output_dir: Path) -> Any:
        """This process as an item of a pabot run (a PabotProcess), or None (see MessagingLibrary.parallel)."""
        try:
            return pabot_process(BuiltIn(), output_dir)
        except RobotNotRunningError:
            return None


def seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def coerce_expected(expected: Any, value: Any, unit: str, operator: AssertionOperator) -> Any:
    """Convert an expected value from Robot data to the measured value's type."""
    if operator in (AssertionOperator["validate"], AssertionOperator["then"]):
        return str(expected)
    if isinstance(value, bool):
        return expected if isinstance(expected, bool) else is_truthy(expected)
    if isinstance(value, (int, float)):
        if isinstance(expected, (int, float)) and not isinstance(expected, bool):
            return expected
        text = str(expected).strip()
        if unit == "s":
            return timestr_to_secs(text, round_to=None)
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"Expected a number to compare with, got '{expected}'.") from None
        return int(number) if isinstance(value, int) and number.is_integer() else number
    if value is None and isinstance(expected, str) and expected.strip().lower() in ("none", "null", "${none}"):
        return None
    return expected


#: Units of rate and latency figures (judged only while the generator keeps its schedule).
TIMING_UNITS = frozenset({"s", "msg/s"})


def is_timing(name: str, unit: str) -> bool:
    """Whether a figure is a rate or a latency: what a generator that fell behind cannot judge."""
    return unit in TIMING_UNITS or "achieved ratio" in name or "degradation" in name


def too_few_samples(name: str, percentile: float, samples: int) -> str:
    """Why an assertion on ``percentile`` of ``samples`` values cannot be judged."""
    need = min_samples(percentile)
    return (
        f"{name} rests on {samples:,} sample{'s' if samples != 1 else ''}, too few to support "
        f"p{percentile:g} (its 95% confidence interval needs at least {need:,})"
    )


def plain_value(value: Any, unit: str) -> str:
    """A value as failure messages print it: 4 significant digits in the measured unit (``0.4042 s``).

    Stable on purpose: the fault catalogue matches failure messages by these words. Never
    scientific notation (a value from 10,000 up is a whole number with thousands separators).
    """
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-4:
            text = f"{value:.7f}".rstrip("0")
        else:
            text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip() if unit and unit not in ("ratio", "count") else text


def _number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant figures, thousands separated, never in scientific notation."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{round(value, decimals):,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: Any, unit: str) -> str:
    """A value in human units: seconds as ms (or s from 10 s), bytes as KB/MB, rates with
    thousands separators, ratios with 3 decimals, counts as integers; never scientific notation.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value} {unit}".strip() if unit and unit not in ("ratio", "count") and value is not None else str(value)
    if unit == "s":
        if abs(value) >= 10:
            return f"{_number(value)} s"
        return f"{_number(value * 1000)} ms"
    if unit.startswith("B/") or unit == "B":
        per = unit[1:]
        if abs(value) >= 1024 * 1024:
            return f"{_number(value / (1024 * 1024))} MB{per}"
        if abs(value) >= 1024:
            return f"{_number(value / 1024)} KB{per}"
        return f"{_number(value)} B{per}"
    if unit == "ratio":
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    if isinstance(value, int):
        text = f"{value:,}"
    elif float(value).is_integer() and abs(value) < 1e15:
        text = f"{int(value):,}"
    else:
        text = _number(value, 4 if abs(value) < 1000 else 3) if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{text} {unit}".strip() if unit and unit != "count" else text


def format_interval(interval: tuple[float, float] | None, unit: str) -> str:
    """``95% CI 11.8 ms – 13.1 ms``, or "" without an interval."""
    if not interval:
        return ""
    return f"95% CI {format_value(interval[0], unit)} – {format_value(interval[1], unit)}"


class LibraryComponent:
    """Base of every keyword component: holds the shared :class:`Context`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _enforce(self, result: CheckResult) -> int:
        """Record a checker's violations as a measurement row, log its summary, fail if any."""
        self.ctx.measurements.append(Measurement.exact(result.name, len(result.problems), 0, "violations"))
        logger.info(result.summary())
        result.raise_if_failed()
        return result.checked

    def _timeout(self, timeout: timedelta | None) -> float:
        return seconds(timeout) if timeout is not None else self.ctx.default_timeout


__all__ = ["Artefact", "Context", "LibraryComponent", "Measurement", "SessionError", "Target", "UserStrategy", "seconds"]
