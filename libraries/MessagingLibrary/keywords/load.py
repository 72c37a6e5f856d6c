"""Keywords that drive the open-loop load engine and judge what it measured.

A run sends on a fixed schedule (constant rate, or named phases with ramps) over one or many
connections, measures latency from each message's intended send time into HDR histograms, and
tracks order, gaps, duplicates and loss per connection in bounded memory. Every run's figures
are written as JSON under ``${OUTPUT DIR}/load/`` and summarised in the log; the measuring
keywords below read the latest run.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
from datetime import timedelta
from html import escape
from typing import Any

import orjson
from assertionengine import AssertionOperator
from robot.api import logger
from robot.api.deco import keyword
from robot.libraries.BuiltIn import BuiltIn, RobotNotRunningError

from ..context import Artefact, LibraryComponent, Measurement, seconds
from ..engine.health import DEFAULT_MAX_LATE_FRACTION
from ..engine.load import LoadEngine, LoadPlan, LoadResult
from ..engine.workers import START_GRACE_S, REPORT_GRACE_S, progress_note, worker_run
from ..engine.schedule import Phase
from .checks import Statistic, sample_figures
from .reporting import _safe_name

#: Latencies below this count as this much when judging degradation, so jitter of a fast
#: server on a shared machine (15 ms becoming 68 ms beside a CPU hog) is not reported as a
#: degradation: a p95 under half the suites' p95 target (200 ms) has not degraded in any way
#: a user feels.
DEGRADATION_FLOOR_S = 0.100
_runs = itertools.count(1)


class MessageType(enum.Enum):
    """What a load run sends: the lean ``throughput_test`` or full ``user_message`` chat messages."""

    throughput_test = "throughput_test"
    user_message = "user_message"


class LoadFigure(enum.Enum):
    """A figure of the latest load run (see `Get Load Figure`)."""

    scheduled = "scheduled"
    sent = "sent"
    answered = "answered"
    delivered = "delivered"
    lost = "lost"
    duplicated = "duplicated"
    reordered = "reordered"
    refused = "refused"
    errors = "errors"
    missed_sends = "missed_sends"
    stalled_connections = "stalled_connections"
    blocked_sends = "blocked_sends"
    delivery_ratio = "delivery_ratio"
    send_rate = "send_rate"
    receive_rate = "receive_rate"
    achieved_ratio = "achieved_ratio"
    opened = "opened"
    connect_ratio = "connect_ratio"
    connect_time = "connect_time"
    disconnects = "disconnects"
    reconnects = "reconnects"
    reconnect_time = "reconnect_time"
    worst_connection_mean_latency = "worst_connection_mean_latency"


_UNITS = {
    LoadFigure.delivery_ratio: "ratio",
    LoadFigure.achieved_ratio: "ratio",
    LoadFigure.connect_ratio: "ratio",
    LoadFigure.send_rate: "msg/s",
    LoadFigure.receive_rate: "msg/s",
    LoadFigure.connect_time: "s",
    LoadFigure.reconnect_time: "s",
    LoadFigure.worst_connection_mean_latency: "s",
}


class LoadKeywords(LibraryComponent):
    """Open-loop load runs and their figures: rates, latency percentiles, order, loss."""

    def __init__(self, ctx, connections) -> None:
        super().__init__(ctx)
        self._connections = connections
        self.last: LoadResult | None = None

    # -- running -----------------------------------------------------------------------------

    @keyword(tags=("load",))
    def run_load(
        self,
        rate: float,
        duration: timedelta,
        *,
        connections: int = 1,
        message_type: MessageType = MessageType.throughput_test,
        message_size: int = 0,
        high_priority_every: int = 0,
        drop_every: int = 0,
        reconnect: bool = False,
        configure: dict[str, Any] | None = None,
        verify_processing: bool = False,
        name: str | None = None,
        drain_timeout: timedelta = timedelta(seconds=10),
        connect_timeout: timedelta = timedelta(seconds=10),
        late_threshold: timedelta = timedelta(milliseconds=10),
        behind_threshold: timedelta = timedelta(milliseconds=50),
        max_late_fraction: float = DEFAULT_MAX_LATE_FRACTION,
        workers: int | str | None = None,
        cluster: str | None = None,
    ) -> LoadResult:
        """Sends ``rate`` messages per second for ``duration`` on an open-loop schedule and returns the figures.

        Messages are spread round-robin over ``connections`` new connections, each a fresh
        test user (the target's user strategy decides). Each message has an intended send
        time fixed before the run; latency is measured from it to the reply, so a slow server
        cannot hide behind a slowed sender. A send later than ``late_threshold`` counts as a
        missed send: the generator says when it could not keep the schedule.

        *The generator judges itself.* Beside the server's figures every run measures its own
        health: late sends, writes that waited on a full socket buffer (the server not
        reading: lateness they explain is the server's, not the generator's), event-loop lag
        and the client's CPU. When more than ``max_late_fraction`` of the sends (1%, and at
        least 5 sends) were over ``behind_threshold`` (50 ms) late for the generator's own
        reasons, the generator *fell behind*: this run's rate and latency assertions are *inconclusive*
        (recorded, not asserted) and a test that otherwise passed ends ``SKIP`` with
        ``Inconclusive: the load generator fell behind its schedule ...`` and the tag
        ``inconclusive``. Loss, order and duplicate checks still judge the server. The
        measurement table shows the generator's rows (``generator: ...``) beside the server's.

        After the last send the run waits up to ``drain_timeout`` for outstanding replies;
        whatever has none by then is lost. ``message_size`` pads each ``user_message``'s
        content to that many characters. A connection whose server stops reading (its socket
        buffer full for 5 s: TCP backpressure) is *stalled*: its later messages are not sent,
        counted as ``blocked sends`` and lost, the server's doing, so the run still ends on
        time. ``high_priority_every=10`` sends one message in 10
        with priority ``high``, spread by a fixed hash (not strictly every 10th, which would line
        up with send batches). ``configure`` is sent as ``configure_session`` on each connection
        (for example ``${{ {'throughput_processing_ms': 0.5} }}``); a server that lacks it makes
        the keyword skip the test, saying so. ``drop_every=N`` aborts each connection after
        every N of its messages and reconnects; ``reconnect`` reconnects after any loss, and
        resends unanswered messages with the same ``message_id`` (use ``user_message``, whose
        ids the server de-duplicates). ``verify_processing`` then asks each user's agent state
        how often each message was processed.

        The figures go to ``${OUTPUT DIR}/load/NAME.json`` and a summary into the log; the
        `Get Load Figure`, `Get Load Latency` and check keywords read this run.

        *Workers.* ``workers=N`` (or ``auto``: one per core) splits the run over N processes
        on this machine, each with its own event loop: connection ``c`` and exactly its
        messages run on worker ``c mod N`` (never more workers than connections), all on the
        run's one schedule, so the sends together are the one-process schedule and each
        connection's order, gaps, duplicates and loss are judged where they happen. The
        results merge exactly (latency histograms merged, counters summed) and look the same
        as one process's, with a per-worker breakdown (``workers`` in the JSON, a table in the
        log); a worker that fell behind makes the run inconclusive. ``cluster=tcp://host:8786``
        runs the slices on a Dask cluster instead (``pip install 'apex-acceptance[distributed]'``,
        docs/distributed.md), ``workers`` then defaulting to one slice per worker of the
        cluster. A worker that dies is a *lost slice*: the figures are written and logged, its
        messages count as lost, and the keyword fails naming it. Without the arguments the
        variables ``${APEX_LOAD_WORKERS}`` and ``${APEX_LOAD_CLUSTER}`` (or the environment
        variables of the same names) decide; unset, the run is one process.

        | ${run} =    Run Load    1000    2 s
        | Run Load    100    3 s    connections=10
        | Run Load    200    5 s    connections=4    message_type=user_message    drop_every=100    verify_processing=True
        | Run Load    5000    3 s    connections=20    workers=2
        """
        phase = Phase("steady", _positive_rate(rate), _positive_seconds(duration, "duration"))
        return self._run(
            [phase],
            name=name,
            connections=connections,
            message_type=message_type,
            message_size=message_size,
            high_priority_every=high_priority_every,
            drop_every=drop_every,
            reconnect=reconnect,
            configure=configure,
            verify_processing=verify_processing,
            drain_timeout=drain_timeout,
            connect_timeout=connect_timeout,
            late_threshold=late_threshold,
            behind_threshold=behind_threshold,
            max_late_fraction=max_late_fraction,
            workers=workers,
            cluster=cluster,
        )

    @keyword(tags=("load",))
    def run_load_in_phases(
        self,
        *,
        connections: int = 1,
        message_type: MessageType = MessageType.throughput_test,
        high_priority_every: int = 0,
        configure: dict[str, Any] | None = None,
        name: str | None = None,
        drain_timeout: timedelta = timedelta(seconds=10),
        connect_timeout: timedelta = timedelta(seconds=10),
        late_threshold: timedelta = timedelta(milliseconds=10),
        behind_threshold: timedelta = timedelta(milliseconds=50),
        max_late_fraction: float = DEFAULT_MAX_LATE_FRACTION,
        workers: int | str | None = None,
        cluster: str | None = None,
        **phases: str,
    ) -> LoadResult:
        """Runs named phases one after another on one open-loop schedule and returns the figures.

        Each phase is ``NAME=RATE/s for DURATION`` or, for a linear ramp,
        ``NAME=FROM..TO/s for DURATION``, in the order given. Every figure is kept per phase
        as well as for the whole run: `Get Load Figure` and `Get Load Latency` take
        ``phase=NAME``. Other arguments (``workers`` and ``cluster`` too) are as in `Run Load`.

        | Run Load In Phases
        | ...    warm-up=1000/s for 2 s
        | ...    ramp=1000..5000/s for 2 s
        | ...    sustained=7500/s for 4 s
        """
        if not phases:
            raise ValueError("Give at least one phase, for example: warm-up=1000/s for 2 s")
        parsed = [Phase.parse(phase_name, text) for phase_name, text in phases.items()]
        return self._run(
            parsed,
            name=name,
            connections=connections,
            message_type=message_type,
            high_priority_every=high_priority_every,
            configure=configure,
            drain_timeout=drain_timeout,
            connect_timeout=connect_timeout,
            late_threshold=late_threshold,
            behind_threshold=behind_threshold,
            max_late_fraction=max_late_fraction,
            workers=workers,
            cluster=cluster,
        )

    def _run(self, phases: list[Phase], *, name: str | None, connections: int, message_type: MessageType,
             drain_timeout: timedelta, connect_timeout: timedelta, late_threshold: timedelta,
             behind_threshold: timedelta, users: int | None = None, configure_optional: bool = False,
             workers: int | str | None = None, cluster: str | None = None, **options: Any) -> LoadResult:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}.")
        if users is not None and not 1 <= users <= connections:
            raise ValueError(f"users must be between 1 and the number of connections ({connections}), got {users}.")
        target = self.ctx.target
        if target.url is None:
            raise RuntimeError("No target configured: call 'Configure Target' (or 'Set Up Apex Target') first.")
        label = _safe_name(name or _test_name() or "load")
        number = next(_runs)
        if users is None or users == connections:
            tokens = self._tokens(connections)
        else:  # several connections per user: connection i belongs to user i mod users
            own = self._tokens(users)
            tokens = [own[i % len(own)] for i in range(connections)]
        plan = LoadPlan(
            url=target.url,
            tokens=tokens,
            phases=phases,
            connections=connections,
            message_type=message_type.value,
            name=label,
            run_id=f"{label[:40]}~{number}{self.ctx.id_suffix}",
            drain_timeout_s=seconds(drain_timeout) or 0.0,
            connect_timeout_s=seconds(connect_timeout) or 10.0,
            late_threshold_s=seconds(late_threshold) or 0.0,
            behind_threshold_s=_positive_seconds(behind_threshold, "behind_threshold"),
            max_late_fraction=_fraction(options.pop("max_late_fraction")),
            dialect=target.dialect,
            **options,
        )
        cluster = _setting(cluster, "APEX_LOAD_CLUSTER")
        split = worker_run(plan, _setting(workers, "APEX_LOAD_WORKERS"), cluster)
        engine: Any = split if split is not None else LoadEngine(plan)
        limit = (
            plan.connect_timeout_s * 2
            + engine.schedule.duration_s
            + plan.drain_timeout_s
            + (30.0 if plan.verify_processing else 0.0)
            + 30.0
            + (START_GRACE_S + REPORT_GRACE_S if split is not None else 0.0)
        )
        monitor = self.ctx.monitor
        where = ""
        if split is not None:
            where = f" in {split.workers or 'one per cluster worker'} worker slices" + (
                f" on the Dask cluster {split.cluster}" if getattr(split, "cluster", None) else " on this machine")
            progress_note(plan, split)
        logger.info(f"Load run '{label}': {engine.schedule.describe()} over {connections} connection(s){where}.")
        result = self.ctx.run(self._drive(engine, monitor, configure_optional), limit, f"Load run '{label}'")
        if result is None:
            problem = engine.configure_problem
            if "'unsupported'" in problem:
                raise self.ctx.unsupported("configure_session", f"this load run needs it: {problem}")
            raise RuntimeError(f"Load run '{label}' not started: {problem}")
        self.last = result
        self.ctx.artefacts.append(Artefact("load", result, self.ctx.step))
        if result.configure_problem:  # configure_optional: the target lacks configure_session
            logger.warn(
                f"Load run '{label}': the target has no configure_session ({target.dialect.describe()}), "
                "so its sessions were not configured as asked: the runs stream as the target streams them."
            )
        path = self._write(result, f"{label}-{number}")
        logger.info(_summary_html(result, path.name), html=True)
        logger.info(f"Load run '{label}': {result.dialect}; replies matched to messages by {' and '.join(result.correlation)}; "
                    f"carried by {result.transport}.")
        if result.trust:
            self.ctx.trust.note_load(label, result.trust, result.trust_examples)
        self.ctx.note_generator(result.generator, _run_label(result, None))
        if result.lost_slices:
            raise AssertionError(
                f"Load run '{label}' lost {len(result.lost_slices)} of {len(result.workers)} worker slices: "
                + "; ".join(result.lost_slices)
                + ". Its figures cover the other slices only (written to load/" + path.name + ")."
            )
        return result

    async def _drive(self, engine: LoadEngine, monitor, configure_optional: bool = False) -> LoadResult | None:
        """Open, run and close; None when the sessions could not be configured as asked
        (unless ``configure_optional`` and the target simply lacks ``configure_session``)."""
        if monitor is not None:
            await monitor.sample("load before")
        self.ctx.load_engine = engine
        try:
            await engine.open()
            if monitor is not None:
                monitor.connections = engine.opened
                await monitor.sample("load connected")
            if engine.configure_problem:
                if not (configure_optional and "'unsupported'" in engine.configure_problem):
                    return None
            result = await engine.run()
            if monitor is not None:
                monitor.messages = result.answered
                await monitor.sample("load end")
            return result
        finally:
            await engine.close()
            self.ctx.load_engine = None

    def _tokens(self, count: int) -> list[str]:
        target = self.ctx.target
        if target.strategy.value == "fixed":
            return [str(target.token)]
        return [self._connections._new_user_token() for _ in range(count)]

    def _write(self, result: LoadResult, stem: str):
        path = self.ctx.output_dir() / "load" / f"{stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
        return path

    def _result(self) -> LoadResult:
        if self.last is None:
            raise RuntimeError("No load run yet: use 'Run Load' or 'Run Load In Phases' first.")
        return self.last

    # -- figures -----------------------------------------------------------------------------

    @keyword(tags=("load", "measure"))
    def get_load_figure(
        self,
        figure: LoadFigure,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        phase: str | None = None,
    ) -> Any:
        """Returns one figure of the latest load run, optionally asserting it.

        Counts: ``scheduled``, ``sent``, ``answered``, ``delivered`` (answered, or confirmed
        by ``duplicate_rejected`` after a retry), ``lost`` (no outcome at all, or never sent),
        ``duplicated``, ``reordered``, ``refused`` (``queue_full``), ``errors``,
        ``missed_sends`` (sent later than the late threshold), ``stalled connections`` (whose
        server stopped reading: TCP backpressure) and ``blocked sends`` (messages not sent to
        them), ``opened``, ``disconnects``
        (closed by the server or the network), ``reconnects``. Ratios: ``delivery ratio``
        (delivered / scheduled), ``achieved ratio`` (receive rate / target rate),
        ``connect ratio`` (opened / requested). Rates in msg/s: ``send rate``,
        ``receive rate`` (answers per second over the answers' own window, so latency does not
        lower it but a server slower than the offered rate does). Times in seconds:
        ``connect time`` (all connections open), ``worst connection mean latency``.

        ``phase`` reads that phase of a phased run (sent, answered, delivery ratio, rates,
        achieved ratio).

        | Get Load Figure    delivery ratio    >=    0.95
        | Get Load Figure    achieved ratio    >=    0.9    phase=peak
        | Get Load Figure    lost    ==    0
        """
        result = self._result()
        value = _figure(result, figure, phase)
        label = f"{figure.value.replace('_', ' ')} of {_run_label(result, phase)}"
        return self.ctx.check(label, value, operator, expected, unit=_UNITS.get(figure, "count"),
                              meta={"load": result.name, "phase": phase, "figure": figure.value})

    @keyword(tags=("load", "measure", "latency"))
    def get_load_latency(
        self,
        statistic: Statistic = Statistic.p99,
        operator: AssertionOperator | None = None,
        expected: Any = None,
        *,
        phase: str | None = None,
    ) -> float:
        """Returns a latency statistic of the latest load run in seconds, optionally asserting it.

        Latency runs from each message's intended send time to its answer (HDR histogram,
        3 significant figures). ``phase`` reads one phase of a phased run.

        | Get Load Latency    p50    <=    50 ms
        | Get Load Latency    p99    <=    500 ms
        | Get Load Latency    p95    <=    200 ms    phase=peak
        """
        result = self._result()
        summary = result.phase(phase)["latency"] if phase else result.latency
        value = _statistic(summary, statistic)
        if summary["count"] == 0 and operator is not None:
            raise AssertionError(f"No answers in load run '{result.name}'{f' phase {phase}' if phase else ''}: no latency to judge.")
        label = f"latency {statistic.value} of {_run_label(result, phase)}"
        interval = summary.get("ci_s", {}).get(statistic.value)
        return self.ctx.check(
            label, value, operator, expected, unit="s", **sample_figures(summary["count"], statistic, interval),
            meta={"load": result.name, "phase": phase, "figure": "latency", "statistic": statistic.value},
        )

    @keyword(tags=("load", "measure", "latency"))
    def get_load_latency_degradation(self, operator: AssertionOperator | None = None, expected: Any = None) -> float:
        """Returns how much the p95 latency grew from the first to the last third of the latest run.

        ``p95(last third) / p95(first third) − 1``, thirds by intended send time; latencies
        below 100 ms count as 100 ms, so jitter on a fast server is not reported as degradation.
        ``0.2`` means the end of the run was 20% slower than its start.

        | Get Load Latency Degradation    <=    0.2
        """
        result = self._result()
        first, _, last = result.latency_p95_by_third
        value = round(max(last, DEGRADATION_FLOOR_S) / max(first, DEGRADATION_FLOOR_S) - 1, 4)
        return self.ctx.check(
            f"p95 degradation of {_run_label(result, None)}", value, operator, expected, unit="ratio",
            message=f"p95 first third {first * 1000:.3f} ms, last third {last * 1000:.3f} ms",
        )

    @keyword(tags=("load", "measure", "backpressure"))
    def get_backpressure_signal_time(self, operator: AssertionOperator | None = None, expected: Any = None) -> float | None:
        """Returns seconds from the start of the latest run to its first ``queue_full``, optionally asserting it.

        Returns ``None`` when there was none; with an assertion that fails, saying the
        server never signalled backpressure.

        | Get Backpressure Signal Time    <=    5 s
        """
        result = self._result()
        value = result.first_refusal_s
        if value is None:
            if operator is not None:
                self.ctx.measurements.append(Measurement("backpressure signal time", None, "s", operator.value, expected, False))
                raise AssertionError(
                    f"No queue_full in load run '{result.name}' ({result.sent} sent, {result.answered} answered): "
                    "the server never signalled backpressure."
                )
            return None
        return self.ctx.check("backpressure signal time", round(value, 6), operator, expected, unit="s")

    @keyword(tags=("load", "measure", "backpressure"))
    def get_high_priority_delivery_ratio(self, operator: AssertionOperator | None = None, expected: Any = None) -> float:
        """Returns answered / sent for the high-priority messages of the latest run, optionally asserting it.

        | Get High Priority Delivery Ratio    >=    0.8
        """
        result = self._result()
        if not result.high_priority_sent:
            raise RuntimeError("The latest load run sent no high-priority messages (use high_priority_every=N).")
        value = round(result.high_priority_answered / result.high_priority_sent, 4)
        return self.ctx.check(
            f"high-priority delivery ratio of {_run_label(result, None)}", value, operator, expected, unit="ratio",
            message=f"{result.high_priority_answered} of {result.high_priority_sent} high-priority messages answered, "
            f"{result.high_priority_refused} refused",
        )

    # -- checks ------------------------------------------------------------------------------

    @keyword(tags=("load", "check", "ordering"))
    def load_should_preserve_order_per_connection(self) -> int:
        """Fails if, on any connection of the latest run, an answer arrived after a later message's answer.

        Order is judged per connection in arrival order (never after sorting). The failure
        names examples: ``sequence 7 arrived after 9 on connection c3``. Returns how many
        answers were checked; fails too if there were none.

        | Load Should Preserve Order Per Connection
        """
        result = self._result()
        bad = [c for c in result.per_connection if c["reordered"]]
        self.ctx.measurements.append(Measurement.exact("answers out of order", result.reordered, 0, "violations"))
        if not result.answered:
            raise AssertionError(f"Load run '{result.name}' got no answers: no order to check.")
        if bad:
            examples = [e for c in bad for e in c["examples"] if "arrived after" in e][:5]
            raise AssertionError(
                f"{result.reordered} answer(s) out of order on {len(bad)} of {result.connections} connection(s): "
                + "; ".join(examples)
            )
        logger.info(f"{result.answered} answers on {result.connections} connection(s) all in send order.")
        return result.answered

    @keyword(tags=("load", "check", "delivery"))
    def load_should_answer_every_message_exactly_once(self) -> int:
        """Fails unless every message of the latest run was delivered once: none lost, none answered twice.

        On a run with ``verify_processing`` the server's own agent state must also show every
        message processed exactly once. The failure gives the counts per kind of problem and
        examples. Returns the number of messages checked.

        | Load Should Answer Every Message Exactly Once
        """
        result = self._result()
        problems = []
        undelivered = result.scheduled - result.delivered
        if undelivered:
            problems.append(
                f"{undelivered} of {result.scheduled} message(s) never delivered "
                f"({result.lost} with no outcome, {result.refused} refused, {result.errors} errors)"
                + (
                    f"; {result.blocked_sends} of them not sent because the server stopped reading "
                    f"{result.stalled_connections} connection(s) (TCP backpressure)"
                    if result.blocked_sends else ""
                )
            )
        if result.duplicated:
            problems.append(f"{result.duplicated} answered more than once")
        processing = result.processing
        if processing is not None:
            if processing["unavailable"]:
                problems.append(processing["unavailable"])
            if processing["not_processed"]:
                problems.append(f"{processing['not_processed']} never processed by the server")
            if processing["processed_more_than_once"]:
                problems.append(f"{processing['processed_more_than_once']} processed more than once by the server")
        if processing is not None and processing.get("unsupported") and problems == [processing["unavailable"]]:
            # Delivered exactly once as far as the client can see; the server's side needs a
            # query the target lacks: a skip naming it, never a pass.
            raise self.ctx.unsupported(
                processing["unsupported"],
                f"load run '{result.name}' delivered every message once, but whether the server processed "
                "each exactly once cannot be read",
            )
        self.ctx.measurements.append(Measurement.exact("messages not delivered exactly once", len(problems), 0, "violations"))
        if problems:
            examples = result.examples + (processing["examples"] if processing else [])
            raise AssertionError(
                f"Load run '{result.name}': " + "; ".join(problems)
                + (f". Examples: {'; '.join(examples[:5])}" if examples else "")
                + (f". Connections lost: {'; '.join(result.close_reasons)}" if result.close_reasons else "")
            )
        logger.info(f"All {result.scheduled} messages delivered exactly once.")
        return result.scheduled


def _figure(result: LoadResult, figure: LoadFigure, phase: str | None) -> Any:
    if phase is not None:
        data = result.phase(phase)
        by_phase = {
            LoadFigure.scheduled: data["scheduled"],
            LoadFigure.sent: data["sent"],
            LoadFigure.answered: data["answered"],
            LoadFigure.delivery_ratio: data["delivery_ratio"],
            LoadFigure.send_rate: data["send_rate"],
            LoadFigure.receive_rate: data["receive_rate"],
            LoadFigure.achieved_ratio: round(data["receive_rate"] / data["target_rate"], 4) if data["target_rate"] else 0.0,
        }
        if figure not in by_phase:
            raise ValueError(f"'{figure.value}' is not kept per phase (per phase: {', '.join(f.value for f in by_phase)}).")
        return by_phase[figure]
    if figure is LoadFigure.achieved_ratio:
        target = result.phases[-1]["target_rate"] if len(result.phases) == 1 else None
        if not target:
            raise ValueError("'achieved ratio' of a phased run needs phase=NAME.")
        return round(result.receive_rate / target, 4)
    if figure is LoadFigure.connect_ratio:
        return round(result.opened / result.connections, 4)
    if figure is LoadFigure.connect_time:
        return round(result.connect_time_s, 6)
    if figure is LoadFigure.reconnect_time:
        return result.reconnect_time["max_s"]
    if figure is LoadFigure.worst_connection_mean_latency:
        return max((c["mean_latency_s"] for c in result.per_connection), default=0.0)
    if figure is LoadFigure.delivery_ratio:
        return round(result.delivery_ratio, 6)
    if figure is LoadFigure.send_rate:
        return round(result.send_rate, 3)
    if figure is LoadFigure.receive_rate:
        return round(result.receive_rate, 3)
    return getattr(result, figure.value)


def _run_label(result: LoadResult, phase: str | None) -> str:
    """How a measurement names its run: ``load 'rate-2500'``, ``load 'benchmark' phase peak``."""
    return f"load '{result.name}'" + (f" phase {phase}" if phase else "")


def _statistic(summary: dict[str, float], statistic: Statistic) -> float:
    key = "p99.9_s" if statistic is Statistic.p999 else f"{statistic.value}_s"
    return summary[key] if key in summary else summary["mean_s"]


def _positive_rate(rate: float) -> float:
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate must be a number of messages per second > 0, got {rate}.")
    return float(rate)


def _fraction(value: float) -> float:
    if not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"max_late_fraction must be a share of the sends between 0 and 1 (0.01 = 1%), got {value}.")
    return float(value)


def _positive_seconds(value: timedelta, what: str) -> float:
    secs = seconds(value) or 0.0
    if secs <= 0:
        raise ValueError(f"{what} must be longer than 0 s, got {value}.")
    return secs


def _test_name() -> str | None:
    try:
        return BuiltIn().get_variable_value("${TEST NAME}")
    except RobotNotRunningError:
        return None


def _setting(value: Any, variable: str) -> Any:
    """An argument, else the Robot variable ``${VARIABLE}``, else the environment variable; None if unset."""
    if value not in (None, ""):
        return value
    try:
        found = BuiltIn().get_variable_value("${" + variable + "}")
    except RobotNotRunningError:
        found = None
    if found in (None, ""):
        found = os.environ.get(variable, "").strip() or None
    return found


def _ms(value: float) -> str:
    return f"{value * 1000:.3f} ms"


def _summary_html(result: LoadResult, file_name: str) -> str:
    lat = result.latency
    rows = [
        ("schedule", result.schedule),
        ("connections", f"{result.opened} of {result.connections} opened in {result.connect_time_s:.3f} s"),
        ("sent / scheduled", f"{result.sent} / {result.scheduled} ({result.missed_sends} missed sends, max lateness {_ms(result.lateness['max_s'])})"),
        ("answered", f"{result.answered} (delivered {result.delivered}, ratio {result.delivery_ratio:.4f})"),
        ("lost / duplicated / reordered", f"{result.lost} / {result.duplicated} / {result.reordered}"),
        ("refused (queue_full) / errors", f"{result.refused} / {result.errors}"),
        ("stalled connections / messages not sent to them",
         f"{result.stalled_connections} / {result.blocked_sends} (the server stopped reading: TCP backpressure)"),
        ("generator", ("FELL BEHIND: " if result.generator.fell_behind else "kept its schedule: ") + result.generator.describe()),
        ("send rate / receive rate", f"{result.send_rate:.1f} / {result.receive_rate:.1f} msg/s"),
        ("latency p50 / p90 / p95 / p99 / p99.9 / max",
         " / ".join(_ms(lat[k]) for k in ("p50_s", "p90_s", "p95_s", "p99_s", "p99.9_s", "max_s"))
         + f" (of {lat['count']:,} answers; a percentile its sample cannot support: "
         + (", ".join(k for k, ci in lat.get("ci_s", {}).items() if ci is None) or "none") + ")"),
        ("disconnects / injected drops / reconnects", f"{result.disconnects} / {result.injected_drops} / {result.reconnects}"),
    ]
    if len(result.phases) > 1:
        for p in result.phases:
            figures = (
                f"target {p['target_rate']:g} msg/s: sent {p['sent']}, answered {p['answered']}, "
                f"receive {p['receive_rate']:.1f} msg/s, p95 {_ms(p['latency']['p95_s'])}, p99 {_ms(p['latency']['p99_s'])} "
                f"(of {p['latency']['count']:,} answers)"
            )
            rows.append((f"phase {p['name']}", figures))
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in rows)
    link = f'<a href="load/{escape(file_name)}">load/{escape(file_name)}</a>'
    return f"<table border='1'>{body}</table>{_workers_html(result)}Figures: {link}"


def _workers_html(result: LoadResult) -> str:
    """The per-worker breakdown of a split run (nothing for one process)."""
    if not result.workers:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("worker", "where", "connections", "sent / scheduled", "answered", "lost",
                                              "latency p50 / p99", "client CPU", "generator"))
    rows = []
    for w in result.workers:
        if not w["status"].startswith("lost"):
            latency = w["latency"]
            cells = (
                f"{w['worker']} of {w['of']}", f"{w['host']} pid {w['pid']}", f"{w['opened']} of {w['connections']} opened",
                f"{w['sent']:,} / {w['scheduled']:,}", f"{w['answered']:,}", f"{w['lost']:,}",
                f"{_ms(latency['p50_s'])} / {_ms(latency['p99_s'])} (of {latency['count']:,})",
                f"{w['cpu_share']:.0%} of a core", "FELL BEHIND" if w["fell_behind"] else "kept its schedule",
            )
        else:
            cells = (f"{w['worker']} of {w['of']}", w["status"].upper(), f"{w['connections']}", f"? / {w['scheduled']:,}",
                     "?", "all", "", "", "")
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<p>Per worker (the run was split over {len(result.workers)}):</p><table border='1'><tr>{head}</tr>{''.join(rows)}</table>"


__all__ = ["LoadFigure", "LoadKeywords", "MessageType"]
