"""Keywords for agent event streams: chat messages whose answers are streamed agent runs.

Each chat message starts a *run* on the server: ``agent_started``, thinking steps, tool calls,
answer chunks, then exactly one final outcome. `Run Agent Load` and `Run Agent Burst` drive chat
messages on an open-loop schedule (the load engine's, see `Run Load`) and follow every run in
bounded memory (``engine/streams.py``); the keywords below read the latest run's figures and its
integrity classes. The definitions of the figures are those of `Get Agent Run Figure`.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from html import escape
from typing import Any

from assertionengine import AssertionOperator
from robot.api import logger
from robot.api.deco import keyword

from ..context import LibraryComponent, Measurement
from ..engine.health import DEFAULT_MAX_LATE_FRACTION
from ..engine.load import LoadResult
from ..engine.schedule import Phase
from ..engine.streams import ANOMALIES, MEANINGS, STALLED
from .checks import Statistic, sample_figures
from .load import LoadKeywords, MessageType, _positive_rate, _positive_seconds

#: The content of every chat message of an agent load (its answer echoes it).
DEFAULT_CONTENT = "What is the status of my order?"
#: A burst's messages are all due within this window (one open-loop phase).
DEFAULT_BURST_WINDOW = timedelta(milliseconds=50)


class AgentRunFigure(enum.Enum):
    """A figure of the agent runs of the latest load run (see `Get Agent Run Figure`)."""

    time_to_first_event = "time_to_first_event"
    time_to_first_progress = "time_to_first_progress"
    time_to_final = "time_to_final"
    inter_event_gap = "inter_event_gap"
    events_per_run = "events_per_run"
    chars_per_second = "chars_per_second"


class RunClass(enum.Enum):
    """A class of the stream integrity checker (see `Agent Runs Should Be Intact`)."""

    complete = "complete"
    truncated = "truncated"
    stalled = "stalled"
    out_of_order = "out_of_order"
    duplicated_final = "duplicated_final"
    orphan = "orphan"
    cross_talk = "cross_talk"


#: Figures that are times (seconds) and those counted in other units.
_TIMES = {
    AgentRunFigure.time_to_first_event,
    AgentRunFigure.time_to_first_progress,
    AgentRunFigure.time_to_final,
    AgentRunFigure.inter_event_gap,
}
_UNITS = {AgentRunFigure.events_per_run: ("events", "events"), AgentRunFigure.chars_per_second: ("chars", "chars/s")}


class AgentRunKeywords(LibraryComponent):
    """Agent event streams under load: run figures (time to first event, gaps, ...) and integrity."""

    def __init__(self, ctx, load: LoadKeywords) -> None:
        super().__init__(ctx)
        self._load = load

    # -- running -----------------------------------------------------------------------------

    @keyword(tags=("load", "agents"))
    def run_agent_load(
        self,
        rate: float,
        duration: timedelta,
        *,
        users: int = 1,
        connections: int | None = None,
        stream: dict[str, Any] | None = None,
        stall_threshold: timedelta = timedelta(seconds=1),
        content: str = DEFAULT_CONTENT,
        name: str | None = None,
        drain_timeout: timedelta = timedelta(seconds=10),
        connect_timeout: timedelta = timedelta(seconds=10),
        late_threshold: timedelta = timedelta(milliseconds=10),
        behind_threshold: timedelta = timedelta(milliseconds=50),
        max_late_fraction: float = DEFAULT_MAX_LATE_FRACTION,
        workers: int | str | None = None,
        cluster: str | None = None,
    ) -> LoadResult:
        """Sends ``rate`` chat messages per second for ``duration`` and follows every agent run they start.

        The messages go round-robin over ``connections`` connections (default: one per user)
        of ``users`` fresh test users (connection ``i`` belongs to user ``i mod users``), on an
        open-loop schedule: every figure runs from a message's *intended* send time, and when
        the generator could not keep its schedule the timing assertions are inconclusive (see
        `Run Load`). Every run is followed event by event in bounded memory: its figures go
        into HDR histograms (`Get Agent Run Figure`) and the integrity checker classifies it
        (`Agent Runs Should Be Intact`). The figures and the classes go to
        ``${OUTPUT DIR}/load/NAME.json`` (under ``streams``) and a summary into the log.

        ``stream`` is how the session asks the server to stream (``configure_session``'s
        ``agent_stream``: thinking steps, tools, chunks, gaps, concurrent runs, see
        docs/protocol.md §4.9); empty means the server's defaults. A target without
        ``configure_session`` (the public platform) is not configured: its runs are followed
        as it streams them, and the log says so. ``stall_threshold``: a gap between two
        consecutive events of a run longer than this makes the run ``stalled``. After the last
        send the run waits up to ``drain_timeout`` for every final outcome; a run with none by
        then is ``truncated``. ``workers`` and ``cluster`` split the run over processes or a
        Dask cluster as in `Run Load` (each connection, with every run it starts, on one worker).

        | Run Agent Load    20    3 s    users=5
        | Run Agent Load    10    2 s    users=2    connections=4    stream=${{ {'tools': 2, 'chunks': 8} }}
        """
        phase = Phase("steady", _positive_rate(rate), _positive_seconds(duration, "duration"))
        return self._drive(phase, users, connections, stream, stall_threshold, content, name, drain_timeout,
                           connect_timeout, late_threshold, behind_threshold, max_late_fraction, workers, cluster)

    @keyword(tags=("load", "agents"))
    def run_agent_burst(
        self,
        messages: int,
        *,
        users: int = 1,
        connections: int | None = None,
        within: timedelta = DEFAULT_BURST_WINDOW,
        stream: dict[str, Any] | None = None,
        stall_threshold: timedelta = timedelta(seconds=1),
        content: str = DEFAULT_CONTENT,
        name: str | None = None,
        drain_timeout: timedelta = timedelta(seconds=10),
        connect_timeout: timedelta = timedelta(seconds=10),
        late_threshold: timedelta = timedelta(milliseconds=10),
        behind_threshold: timedelta = timedelta(milliseconds=50),
        max_late_fraction: float = DEFAULT_MAX_LATE_FRACTION,
        workers: int | str | None = None,
        cluster: str | None = None,
    ) -> LoadResult:
        """Sends ``messages`` chat messages all at once (due within ``within``) and follows their agent runs.

        A burst is what a busy minute looks like at its worst: every user asks at the same
        moment. Arguments and figures as in `Run Agent Load`.

        | Run Agent Burst    40    users=8
        """
        if messages < 1:
            raise ValueError(f"A burst needs at least 1 message, got {messages}.")
        window = _positive_seconds(within, "within")
        phase = Phase("burst", messages / window, window)
        return self._drive(phase, users, connections, stream, stall_threshold, content, name, drain_timeout,
                           connect_timeout, late_threshold, behind_threshold, max_late_fraction, workers, cluster)

    def _drive(self, phase: Phase, users: int, connections: int | None, stream: dict[str, Any] | None,
               stall_threshold: timedelta, content: str, name: str | None, drain_timeout: timedelta,
               connect_timeout: timedelta, late_threshold: timedelta, behind_threshold: timedelta,
               max_late_fraction: float, workers: int | str | None, cluster: str | None) -> LoadResult:
        if users < 1:
            raise ValueError(f"users must be at least 1, got {users}.")
        if stream is not None and not isinstance(stream, dict):
            raise ValueError(f"stream must be a dictionary of agent_stream settings (or empty), got {stream!r}.")
        count = users if connections is None else connections
        result = self._load._run(
            [phase],
            name=name,
            connections=count,
            users=users,
            message_type=MessageType.user_message,
            content=content,
            configure={"agent_stream": dict(stream or {})},
            configure_optional=True,
            streams=True,
            stall_threshold_s=_positive_seconds(stall_threshold, "stall_threshold"),
            drain_timeout=drain_timeout,
            connect_timeout=connect_timeout,
            late_threshold=late_threshold,
            behind_threshold=behind_threshold,
            max_late_fraction=max_late_fraction,
            workers=workers,
            cluster=cluster,
        )
        logger.info(_streams_html(result), html=True)
        return result

    def _streams(self) -> tuple[LoadResult, dict[str, Any]]:
        result = self._load.last
        if result is None or result.streams is None:
            raise RuntimeError("No agent load run yet: use 'Run Agent Load' or 'Run Agent Burst' first.")
        return result, result.streams

    # -- figures -----------------------------------------------------------------------------

    @keyword(tags=("load", "agents", "measure"))
    def get_agent_run_figure(
        self,
        figure: AgentRunFigure,
        statistic: Statistic = Statistic.p95,
        operator: AssertionOperator | None = None,
        expected: Any = None,
    ) -> float:
        """Returns a statistic of one figure of the latest agent load's runs, optionally asserting it.

        Every time is measured from the message's *intended* send time (open loop), on one
        monotonic clock, into an HDR histogram (3 significant figures). The LLM-serving
        benchmarks name similar figures differently and disagree on their edges, so here they
        are exactly:

        - ``time to first event``: the first event of the run (any event, or the final outcome
          if it came first) minus the intended send time. Like *TTFT*, but the first sign of
          life rather than the first token.
        - ``time to first progress``: the first event that is neither ``agent_started`` nor
          the final outcome (a thinking step, a tool event, an answer chunk) minus the intended
          send time; runs without one have none.
        - ``time to final``: the first final outcome minus the intended send time (*end-to-end*).
        - ``inter event gap``: every gap between two consecutive events of a run, from its
          first event to its first final outcome, all runs pooled (the *inter-chunk latency*,
          *ICL*; not averaged per run first, so one long gap is not diluted).
        - ``events per run``: events of a run up to and including its first final outcome,
          for runs that reached one (a count, not a time).
        - ``chars per second``: for runs with two or more answer chunks: the characters of the
          chunks after the first over the time from the first chunk to the last (the output
          rate per request excluding the first token).

        ``statistic`` is ``p50``, ``p90``, ``p95`` (default), ``p99``, ``p99.9``, ``max``,
        ``min`` or ``mean``. Asserting a figure no run produced fails, saying so. Time and
        rate assertions are inconclusive when the load generator fell behind.

        | Get Agent Run Figure    time to first event    p95    <=    500 ms
        | Get Agent Run Figure    inter event gap    p99    <=    250 ms
        | ${events} =    Get Agent Run Figure    events per run    p50
        """
        result, streams = self._streams()
        summary = streams[figure.value]
        label = f"{figure.value.replace('_', ' ')} {statistic.value} of load '{result.name}'"
        if figure in _TIMES:
            key = "p99.9_s" if statistic is Statistic.p999 else f"{statistic.value}_s"
            value = summary.get(key, 0.0) if summary["count"] else 0.0
            unit = "s"
        else:
            suffix, unit = _UNITS[figure]
            value = summary.get(f"{statistic.value}_{suffix}", 0) if summary["count"] else 0
        if summary["count"] == 0 and operator is not None:
            self.ctx.measurements.append(Measurement(label, None, unit, operator.value, expected, False))
            raise AssertionError(
                f"No agent run of load '{result.name}' has a {figure.value.replace('_', ' ')} "
                f"({streams['runs']} run(s) seen): nothing to judge."
            )
        interval = (summary.get("ci_s") or summary.get("ci") or {}).get(statistic.value)
        return self.ctx.check(label, value, operator, expected, unit=unit,
                              timing=True if figure is AgentRunFigure.chars_per_second else None,
                              **sample_figures(summary["count"], statistic, interval),
                              meta={"load": result.name, "figure": figure.value, "statistic": statistic.value})

    @keyword(tags=("load", "agents", "measure"))
    def get_agent_run_count(self, run_class: RunClass, operator: AssertionOperator | None = None, expected: Any = None) -> int:
        """Returns how many runs of the latest agent load the checker put in ``run_class``, optionally asserting it.

        Classes: ``complete``, ``truncated``, ``stalled``, ``out of order``, ``duplicated
        final`` (runs; a run with several anomalies counts in each), ``orphan`` and ``cross
        talk`` (events that belong to no run of the user who received them). See
        `Agent Runs Should Be Intact`.

        | Get Agent Run Count    complete    ==    40
        | ${truncated} =    Get Agent Run Count    truncated
        """
        result, streams = self._streams()
        value = streams["classes"][run_class.value]
        return self.ctx.check(f"agent runs {run_class.value.replace('_', ' ')} in load '{result.name}'", value,
                              operator, expected, unit="runs")

    # -- integrity ---------------------------------------------------------------------------

    @keyword(tags=("load", "agents", "check"))
    def agent_runs_should_have_no(self, *anomalies: RunClass) -> int:
        """Fails if any run of the latest agent load is in one of ``anomalies``, naming the smallest witness.

        ``anomalies`` are classes of `Agent Runs Should Be Intact` (not ``complete``). The
        failure gives, per class, the count and witnesses: the run, the offending events with
        their times from the intended send, and one sentence, for example
        ``run 'agent~1-0-4' on connection c0: tool_completed 'apex_lookup_1' at +0.204 s has
        no tool_executing before it``. A stall is a timing judgement: when the load generator
        fell behind, ``stalled`` is inconclusive. Fails too when no run was seen at all.
        Returns how many runs were seen.

        | Agent Runs Should Have No    truncated    duplicated final
        | Agent Runs Should Have No    cross talk    orphan
        """
        if not anomalies:
            raise ValueError("Name at least one class: " + ", ".join(a.replace("_", " ") for a in ANOMALIES) + ".")
        if RunClass.complete in anomalies:
            raise ValueError("'complete' is not an anomaly: name the classes a run must not be in.")
        return self._judge([a.value for a in anomalies])

    @keyword(tags=("load", "agents", "check"))
    def agent_runs_should_be_intact(self) -> int:
        """Fails unless every run of the latest agent load is ``complete``, naming the smallest witness of each anomaly.

        The stream integrity checker classifies every run:

        - ``complete``: a final outcome and none of the anomalies below;
        - ``truncated``: no final outcome before the connection closed or the wait ended;
        - ``stalled``: a gap between two consecutive events over the stall threshold;
        - ``out of order``: an event before ``agent_started``, a second ``agent_started``, a
          ``tool_completed`` without its ``tool_executing``, a tool still executing at the final
          outcome, or any event after the final outcome;
        - ``duplicated final``: a second final outcome;
        - ``orphan``: an event of no run this load run started;
        - ``cross talk``: an event of another user's run delivered to this user.

        The counts per class go into the measurement table. Returns how many runs were seen.

        | Agent Runs Should Be Intact
        """
        return self._judge(list(ANOMALIES))

    def _judge(self, anomalies: list[str]) -> int:
        result, streams = self._streams()
        classes = streams["classes"]
        problems: list[str] = []
        inconclusive = ""
        for anomaly in anomalies:
            count = classes[anomaly]
            shown = anomaly.replace("_", " ")
            if anomaly == STALLED and count:
                inconclusive = self.ctx.generator_problem()
                if inconclusive:
                    row = Measurement.exact(f"agent runs {shown}", count, 0, "runs")
                    row.passed, row.inconclusive = None, inconclusive
                    self.ctx.measurements.append(row)
                    self.ctx.mark_inconclusive(inconclusive)
                    logger.info(f"Inconclusive: {count} stalled run(s) not judged: the load generator fell behind.")
                    continue
            self.ctx.measurements.append(Measurement.exact(f"agent runs {shown}", count, 0, "runs"))
            if count:
                witnesses = streams["witnesses"].get(anomaly, [])
                problems.append(f"{shown} {count} ({MEANINGS[anomaly]}): " + "; ".join(witnesses[:3]))
        runs = streams["runs"]
        if not runs:
            raise AssertionError(f"Load '{result.name}' saw no agent run at all ({result.sent} chat message(s) sent): nothing to check.")
        if problems:
            raise AssertionError(f"Agent runs of load '{result.name}' ({runs} run(s)): " + " | ".join(problems))
        logger.info(f"{runs} agent run(s) of load '{result.name}': none {', '.join(a.replace('_', ' ') for a in anomalies)}.")
        return runs


def _ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def _streams_html(result: LoadResult) -> str:
    streams = result.streams or {}
    if not streams:
        return ""
    rows = [("runs / events", f"{streams['runs']} / {streams['events']}")]
    for key, title in (
        ("time_to_first_event", "time to first event"),
        ("time_to_first_progress", "time to first progress"),
        ("time_to_final", "time to final"),
        ("inter_event_gap", "inter-event gap"),
    ):
        s = streams[key]
        if s["count"]:
            rows.append((f"{title} p50 / p95 / p99 / max",
                         " / ".join(_ms(s[k]) for k in ("p50_s", "p95_s", "p99_s", "max_s")) + f" (of {s['count']:,})"))
    events = streams["events_per_run"]
    if events["count"]:
        rows.append(("events per run p50 / max", f"{events['p50_events']} / {events['max_events']}"))
    chars = streams["chars_per_second"]
    if chars["count"]:
        rows.append(("chars per second p50 / min", f"{chars['p50_chars']} / {chars['min_chars']}"))
    rows.append(("classes", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in streams["classes"].items())))
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<b>Agent runs of load '{escape(result.name)}'</b><table border='1'>{body}</table>"


__all__ = ["AgentRunFigure", "AgentRunKeywords", "RunClass"]
