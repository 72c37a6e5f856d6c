"""Agent runs: what each chat message's event stream looked like, measured and checked.

On an AI chat platform a chat message is answered by a *run*: a stream of events
(``agent_started``, ``agent_thinking``, ``tool_executing``/``tool_completed`` pairs, answer
chunks) and then exactly one *final outcome* (the answer, ``ai_response`` in the canonical
vocabulary, or an agent error). :class:`StreamBook` follows every run of a load run, event by
event, in bounded memory, and does two things with it.

**Figures** (HDR histograms; every time is measured on the load engine's monotonic clock from the
message's *intended* send time, open loop, so a slow sender cannot hide a slow server):

=============================== ========================================================================
figure                          exact definition
=============================== ========================================================================
``time to first event``         first event of the run (any event, or the final outcome if it came
                                first) minus the intended send time. The LLM-serving tools' TTFT
                                counts the first *token*; here it is the first sign of life.
``time to first progress``      first event that is neither ``agent_started`` nor the final outcome
                                (a thinking step, a tool event, an answer chunk) minus the intended
                                send time. Runs with no such event have none.
``time to final``               the first final outcome minus the intended send time (end-to-end
                                latency, "E2E").
``inter-event gap``             every gap between two consecutive events of one run, from the first
                                event up to and including the first final outcome, all runs pooled
                                (the tools' inter-chunk latency, "ICL"; not averaged per run first).
``events per run``              events of a run up to and including its first final outcome, for runs
                                that reached one.
``characters per second``       for runs with at least two answer chunks carrying text: the characters
                                of every chunk after the first, divided by the time from the first
                                chunk to the last (the tools' output rate per request, excluding the
                                first token).
=============================== ========================================================================

**Integrity**, Jepsen-style: every run is classified, and each anomaly keeps its smallest
witness (the run, the offending events with their times, one sentence of explanation):

- ``complete``: a final outcome, and none of the anomalies below;
- ``truncated``: no final outcome before the connection closed or the run's wait ended;
- ``stalled``: a gap between two consecutive events over the stall threshold;
- ``out_of_order``: an event before ``agent_started``, a second ``agent_started``, a
  ``tool_completed`` without its ``tool_executing``, a tool still executing at the final outcome,
  or any event after the final outcome;
- ``duplicated_final``: a second final outcome;
- ``orphan``: an event of no run this load run started;
- ``cross_talk``: an event of another user's run delivered to this user's connection.

A run with several anomalies counts in each of their classes; ``orphan`` and ``cross_talk``
count events, not runs (they belong to no run of the receiving user).

Memory: a run in progress keeps counters, a few timestamps, its open tools and at most
:data:`MAX_SAMPLE` events; a finished run leaves one bit in an interval set of its connection
(plus a short memory of the most recent ones, for witnesses) and its figures in the histograms.
Nothing grows with the length of the load run (``tests/unit/test_streams.py`` proves it).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from hdrh.histogram import HdrHistogram

from .metrics import SUMMARY_PERCENTILES, LatencyHistogram, merge_hdr, rank_interval
from .tracking import IntervalSet

STARTED = "agent_started"
THINKING = "agent_thinking"
TOOL_EXECUTING = "tool_executing"
TOOL_COMPLETED = "tool_completed"
ANSWER_CHUNK = "answer_chunk"
#: The canonical progress events (a dialect maps its wire names onto these; others are kept as they are).
EVENTS = (STARTED, THINKING, TOOL_EXECUTING, TOOL_COMPLETED, ANSWER_CHUNK)

COMPLETE = "complete"
TRUNCATED = "truncated"
STALLED = "stalled"
OUT_OF_ORDER = "out_of_order"
DUPLICATED_FINAL = "duplicated_final"
ORPHAN = "orphan"
CROSS_TALK = "cross_talk"
#: Every class of the checker, ``complete`` first; the others are anomalies.
CLASSES = (COMPLETE, TRUNCATED, STALLED, OUT_OF_ORDER, DUPLICATED_FINAL, ORPHAN, CROSS_TALK)
ANOMALIES = CLASSES[1:]
#: What each anomaly means, in one line (the measurement table and the failure messages).
MEANINGS = {
    TRUNCATED: "no final outcome before the connection closed or the wait ended",
    STALLED: "a gap between two consecutive events over the stall threshold",
    OUT_OF_ORDER: "an event outside the legal order (before agent_started, an unpaired tool, after the final)",
    DUPLICATED_FINAL: "a second final outcome",
    ORPHAN: "an event of no run this load run started",
    CROSS_TALK: "an event of another user's run delivered to this user",
}

#: Events kept per run in progress (for a witness; the first ones, which explain most).
MAX_SAMPLE = 8
#: Witnesses kept per anomaly class.
MAX_WITNESSES = 5
#: Finished runs remembered (their final's time and run id) for the witness of a later event.
MAX_RECENT = 1024
#: Runs with an anomaly whose class may still change after their final (bounded, oldest forgotten).
MAX_FLAGGED = 4096
#: Runs drawn in the timeline chart: the first ones, and a few flagged ones besides.
TIMELINE_RUNS = 20
TIMELINE_FLAGGED = 6
#: Events kept per traced run.
MAX_MARKS = 64
#: Tool names tracked per run in progress.
MAX_TOOLS = 32

EVENTS_LOWEST, EVENTS_HIGHEST = 1, 10_000_000
RATE_LOWEST, RATE_HIGHEST = 1, 10_000_000_000


def _at(offset_ns: int) -> str:
    """``+1.204 s``: an offset from the intended send time."""
    return f"+{offset_ns / 1e9:.3f} s"


class Run:
    """One run in progress: counters, a few timestamps, open tools and a bounded sample."""

    __slots__ = (
        "chars",
        "chunks",
        "events",
        "first_chunk_chars",
        "first_chunk_ns",
        "first_ns",
        "first_progress_ns",
        "flags",
        "intended_ns",
        "last_chunk_ns",
        "last_event",
        "last_ns",
        "marks",
        "message_id",
        "owner",
        "run_id",
        "sample",
        "started",
        "tools",
    )

    def __init__(self, owner: str, message_id: str, intended_ns: int) -> None:
        self.owner = owner  # the connection that sent the message
        self.message_id = message_id
        self.run_id: Any = None
        self.intended_ns = intended_ns
        self.first_ns = 0
        self.first_progress_ns = 0
        self.last_ns = 0
        self.last_event = ""
        self.events = 0
        self.started = 0
        self.tools: dict[str, int] = {}
        self.chunks = 0
        self.chars = 0
        self.first_chunk_ns = 0
        self.first_chunk_chars = 0
        self.last_chunk_ns = 0
        self.flags: set[str] = set()
        self.sample: list[str] = []
        #: (offset ns from the intended send, event) of a run drawn in the timeline chart, else None
        self.marks: list[tuple[int, str]] | None = None

    def label(self) -> str:
        run_id = self.run_id
        if run_id is None or run_id == self.message_id:
            return f"run '{self.message_id}' on connection {self.owner}"
        return f"run '{run_id}' (message '{self.message_id}') on connection {self.owner}"

    def note(self, event: str, ts: int, detail: str = "") -> None:
        if len(self.sample) < MAX_SAMPLE:
            self.sample.append(f"{event}{detail} {_at(ts - self.intended_ns)}")


class StreamBook:
    """Every run of one load run: figures and integrity, in bounded memory.

    The load engine calls :meth:`event` for each progress event, :meth:`final` for each final
    outcome, :meth:`refused` for a message refused without a run (``queue_full``,
    ``duplicate_rejected``), :meth:`foreign` for an event of no run of the receiving user, and
    :meth:`finish` once, when it stops waiting. Runs are keyed by ``(connection index, sequence)``.
    """

    def __init__(self, stall_threshold_s: float) -> None:
        if not stall_threshold_s > 0:
            raise ValueError(f"The stall threshold must be a positive time, got {stall_threshold_s}.")
        self.stall_threshold_ns = int(stall_threshold_s * 1e9)
        self.time_to_first_event = LatencyHistogram()
        self.time_to_first_progress = LatencyHistogram()
        self.time_to_final = LatencyHistogram()
        self.gaps = LatencyHistogram()
        self.events_per_run = HdrHistogram(EVENTS_LOWEST, EVENTS_HIGHEST, 3)
        #: characters per second after the first chunk, recorded as an integer (chars/s)
        self.chars_per_second = HdrHistogram(RATE_LOWEST, RATE_HIGHEST, 3)
        self.active: dict[tuple[int, int], Run] = {}
        self._done: dict[int, IntervalSet] = {}
        #: key -> (final offset ns, run label) of the most recently finished runs
        self._recent: OrderedDict[tuple[int, int], tuple[int, str]] = OrderedDict()
        #: finished runs that had an anomaly -> their classes (a later event may add one)
        self._flagged: OrderedDict[tuple[int, int], set[str]] = OrderedDict()
        self.counts: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.witnesses: dict[str, list[str]] = {name: [] for name in ANOMALIES}
        self.runs = 0  # runs seen (with at least one event or final)
        self.event_count = 0
        self.finished = False
        #: The runs drawn in the timeline chart (the first TIMELINE_RUNS, and a few flagged ones).
        self.timelines: dict[tuple[int, int], dict[str, Any]] = {}
        self._traced = 0

    # -- what arrives ------------------------------------------------------------------------

    def _run(self, key: tuple[int, int], owner: str, message_id: str, intended_ns: int) -> Run:
        run = self.active.get(key)
        if run is None:
            run = self.active[key] = Run(owner, message_id, intended_ns)
            self.runs += 1
            if self._traced < TIMELINE_RUNS:
                self._traced += 1
                run.marks = []
        return run

    def is_done(self, key: tuple[int, int]) -> bool:
        done = self._done.get(key[0])
        return done is not None and key[1] in done

    def event(self, key: tuple[int, int], owner: str, message_id: str, intended_ns: int, event: str, ts: int,
              *, run_id: Any = None, tool: Any = None, text: Any = None) -> None:
        """A progress event ``event`` of the run of ``key`` arrived at ``ts``."""
        self.event_count += 1
        if self.is_done(key):
            self._after_final(key, owner, message_id, intended_ns, event, ts)
            return
        run = self._run(key, owner, message_id, intended_ns)
        if run.run_id is None and run_id is not None:
            run.run_id = run_id
        detail = f" '{tool}'" if tool is not None and event in (TOOL_EXECUTING, TOOL_COMPLETED) else ""
        self._arrive(run, event, ts, detail)
        if event == STARTED:
            run.started += 1
            if run.started > 1:
                self._flag(run, OUT_OF_ORDER, f"{run.label()}: a second agent_started at {_at(ts - run.intended_ns)}")
            return
        if run.first_progress_ns == 0:
            run.first_progress_ns = ts
            self.time_to_first_progress.record_ns(max(0, ts - run.intended_ns))
        if not run.started:
            self._flag(run, OUT_OF_ORDER,
                       f"{run.label()}: {event}{detail} at {_at(ts - run.intended_ns)} came before any agent_started")
        if event == TOOL_EXECUTING:
            name = str(tool)
            if name in run.tools or len(run.tools) < MAX_TOOLS:
                run.tools[name] = run.tools.get(name, 0) + 1
        elif event == TOOL_COMPLETED:
            name = str(tool)
            open_calls = run.tools.get(name, 0)
            if open_calls:
                if open_calls == 1:
                    del run.tools[name]
                else:
                    run.tools[name] = open_calls - 1
            else:
                self._flag(run, OUT_OF_ORDER,
                           f"{run.label()}: tool_completed '{name}' at {_at(ts - run.intended_ns)} "
                           "has no tool_executing before it")
        elif event == ANSWER_CHUNK and isinstance(text, str):
            run.chunks += 1
            run.chars += len(text)
            if run.chunks == 1:
                run.first_chunk_ns = ts
                run.first_chunk_chars = len(text)
            run.last_chunk_ns = ts

    def final(self, key: tuple[int, int], owner: str, message_id: str, intended_ns: int, kind: str, ts: int,
              *, run_id: Any = None) -> None:
        """A final outcome (``kind``: ``ai_response``, ``agent_error``) of the run of ``key`` arrived."""
        self.event_count += 1
        if self.is_done(key):
            recent = self._recent.get(key)
            label = recent[1] if recent else f"run '{message_id}' on connection {owner}"
            first = f"; the first came at {_at(recent[0])}" if recent else ""
            self._flag_done(key, DUPLICATED_FINAL,
                            f"{label}: a second final outcome ({kind}) at {_at(ts - intended_ns)}{first}")
            return
        run = self._run(key, owner, message_id, intended_ns)
        if run.run_id is None and run_id is not None:
            run.run_id = run_id
        self._arrive(run, kind, ts, "")
        self.time_to_final.record_ns(max(0, ts - run.intended_ns))
        self.events_per_run.record_value(min(max(run.events, EVENTS_LOWEST), EVENTS_HIGHEST))
        if run.chunks >= 2 and run.last_chunk_ns > run.first_chunk_ns:
            rate = (run.chars - run.first_chunk_chars) * 1e9 / (run.last_chunk_ns - run.first_chunk_ns)
            if rate >= RATE_LOWEST:
                self.chars_per_second.record_value(min(int(rate), RATE_HIGHEST))
        for name, open_calls in run.tools.items():
            if open_calls:
                self._flag(run, OUT_OF_ORDER,
                           f"{run.label()}: tool_executing '{name}' never completed before the final outcome "
                           f"({kind} at {_at(ts - run.intended_ns)})")
                break
        self._retire(key, run, ts)

    def refused(self, key: tuple[int, int]) -> None:
        """The message of ``key`` was refused or confirmed without a run (``queue_full``, ``duplicate_rejected``)."""
        run = self.active.pop(key, None)
        if run is not None:
            self.runs -= 1
        self._done.setdefault(key[0], IntervalSet()).add(key[1])

    def foreign(self, anomaly: str, receiver: str, event: str, ts_offset_ns: int | None, detail: str) -> None:
        """An event that belongs to no run of the receiving connection's user (orphan or cross-talk)."""
        self.event_count += 1
        self.counts[anomaly] += 1
        witnesses = self.witnesses[anomaly]
        if len(witnesses) < MAX_WITNESSES:
            when = f" at {_at(ts_offset_ns)} of the run" if ts_offset_ns is not None else ""
            witnesses.append(f"connection {receiver}: {event}{when} {detail}")

    def finish(self, reasons: dict[str, str] | None = None, unseen: list[tuple[str, str]] | None = None,
               unseen_count: int = 0, now_ns: int = 0) -> None:
        """Classify what is left: runs with no final are truncated (``reasons``: owner -> why the
        wait ended, default "within the drain timeout"); ``unseen`` names (owner, message_id) of
        messages with no event at all (``unseen_count`` of them in all)."""
        if self.finished:
            return
        self.finished = True
        reasons = reasons or {}
        for key, run in list(self.active.items()):
            why = reasons.get(run.owner, "within the wait for outcomes")
            if run.events:
                last = f"its last event was {run.last_event} at {_at(run.last_ns - run.intended_ns)} ({run.events} event(s))"
            else:
                last = "no event arrived"
            self._flag(run, TRUNCATED, f"{run.label()}: no final outcome {why}; {last}")
            self._retire(key, run, 0, final=False)
        if unseen_count:
            self.counts[TRUNCATED] += unseen_count
            for owner, message_id in (unseen or [])[: MAX_WITNESSES]:
                witnesses = self.witnesses[TRUNCATED]
                if len(witnesses) < MAX_WITNESSES:
                    why = reasons.get(owner, "within the wait for outcomes")
                    witnesses.append(f"run '{message_id}' on connection {owner}: no event and no final outcome {why}")

    # -- bookkeeping -------------------------------------------------------------------------

    def _arrive(self, run: Run, event: str, ts: int, detail: str) -> None:
        """Count an event of ``run`` (progress or final): first-event time, gap, stall, sample."""
        if run.events == 0:
            run.first_ns = ts
            self.time_to_first_event.record_ns(max(0, ts - run.intended_ns))
        else:
            gap = ts - run.last_ns
            self.gaps.record_ns(max(0, gap))
            if gap > self.stall_threshold_ns and STALLED not in run.flags:
                self._flag(
                    run,
                    STALLED,
                    f"{run.label()}: {gap / 1e9:.3f} s passed between {run.last_event} at "
                    f"{_at(run.last_ns - run.intended_ns)} and {event}{detail} at {_at(ts - run.intended_ns)}, "
                    f"over the stall threshold of {self.stall_threshold_ns / 1e9:g} s",
                )
        run.events += 1
        run.last_ns = ts
        run.last_event = event
        run.note(event, ts, detail)
        if run.marks is not None and len(run.marks) < MAX_MARKS:
            run.marks.append((ts - run.intended_ns, event))

    def _flag(self, run: Run, anomaly: str, witness: str) -> None:
        if anomaly in run.flags:
            return
        run.flags.add(anomaly)
        witnesses = self.witnesses[anomaly]
        if len(witnesses) < MAX_WITNESSES:
            witnesses.append(witness + (f". Events: {', '.join(run.sample)}" if anomaly != STALLED else ""))

    def _retire(self, key: tuple[int, int], run: Run, final_ns: int, final: bool = True) -> None:
        del self.active[key]
        self._trace(key, run)
        self._done.setdefault(key[0], IntervalSet()).add(key[1])
        for anomaly in run.flags:
            self.counts[anomaly] += 1
        if not run.flags:
            self.counts[COMPLETE] += 1
        else:
            self._flagged[key] = set(run.flags)
            if len(self._flagged) > MAX_FLAGGED:
                self._flagged.popitem(last=False)
        if final:
            self._recent[key] = (final_ns - run.intended_ns, run.label())
            if len(self._recent) > MAX_RECENT:
                self._recent.popitem(last=False)

    def _trace(self, key: tuple[int, int], run: Run) -> None:
        """Keep a finished run for the timeline chart: a traced one, or one of the first flagged."""
        marks = run.marks
        if marks is None:
            flagged = sum(1 for t in self.timelines.values() if t["failed"])
            if not run.flags or flagged >= TIMELINE_FLAGGED:
                return
            marks = _marks_of(run.sample)
        self.timelines[key] = {
            "label": run.label(),
            "sent_s": 0.0,
            "events": [(round(offset / 1e9, 6), event) for offset, event in marks],
            "failed": bool(run.flags),
            "note": ", ".join(sorted(run.flags)),
        }

    def gap_sample(self, limit: int = 2000) -> list[float]:
        """Up to ``limit`` gaps in seconds, in the pooled distribution's proportions (for a chart)."""
        histogram = self.gaps._flush()  # noqa: SLF001 (the same package)
        total = histogram.get_total_count()
        if not total:
            return []
        scale = min(1.0, limit / total)
        values: list[float] = []
        for item in histogram.get_recorded_iterator():
            count = item.count_added_in_this_iter_step
            kept = max(1, round(count * scale))
            values.extend([item.value_iterated_to / 1e6] * kept)
        return values[: limit * 2]

    def _flag_done(self, key: tuple[int, int], anomaly: str, witness: str) -> None:
        """A finished run gains ``anomaly``: it moves out of ``complete`` if it was there."""
        traced = self.timelines.get(key)
        if traced is not None:
            traced["failed"] = True
            traced["note"] = ", ".join(sorted(set(filter(None, traced["note"].split(", "))) | {anomaly}))
        flags = self._flagged.get(key)
        if flags is None:
            flags = set()
            if self.counts[COMPLETE] > 0:
                self.counts[COMPLETE] -= 1
            self._flagged[key] = flags
            if len(self._flagged) > MAX_FLAGGED:
                self._flagged.popitem(last=False)
        if anomaly in flags:
            return
        flags.add(anomaly)
        self.counts[anomaly] += 1
        witnesses = self.witnesses[anomaly]
        if len(witnesses) < MAX_WITNESSES:
            witnesses.append(witness)

    def _after_final(self, key: tuple[int, int], owner: str, message_id: str, intended_ns: int,
                     event: str, ts: int) -> None:
        recent = self._recent.get(key)
        label = recent[1] if recent else f"run '{message_id}' on connection {owner}"
        final = f" (its final outcome came at {_at(recent[0])})" if recent else ""
        self._flag_done(key, OUT_OF_ORDER,
                        f"{label}: {event} at {_at(ts - intended_ns)} came after its final outcome{final}")

    # -- between processes (engine.workers) ----------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """A finished book crosses between processes as its figures: runs in progress and the
        bookkeeping of finished ones stay behind (only :meth:`finish`'s results are needed)."""
        if not self.finished:
            raise RuntimeError("A stream book is sent to another process only once finished.")
        state = dict(self.__dict__)
        state.update(active={}, _done={}, _recent=OrderedDict(), _flagged=OrderedDict())
        for name in ("events_per_run", "chars_per_second"):
            histogram: HdrHistogram = state[name]
            state[name] = (_hdr_settings(histogram), histogram.encode() if histogram.get_total_count() else b"")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("events_per_run", "chars_per_second"):
            settings, encoded = state[name]
            state[name] = HdrHistogram.decode(encoded) if encoded else HdrHistogram(*settings)
        self.__dict__.update(state)

    def merge(self, other: StreamBook) -> StreamBook:
        """Add another worker's finished book: histograms merged, counts summed, witnesses and
        timeline runs kept up to their bounds (runs are keyed by connection, which lives on one
        worker, so no run is in two books)."""
        if other.stall_threshold_ns != self.stall_threshold_ns:
            raise ValueError("Cannot merge agent-run books with different stall thresholds.")
        for name in ("time_to_first_event", "time_to_first_progress", "time_to_final", "gaps"):
            getattr(self, name).merge(getattr(other, name))
        merge_hdr(self.events_per_run, other.events_per_run, "events per run")
        merge_hdr(self.chars_per_second, other.chars_per_second, "characters per second")
        for name, count in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + count
        for name, witnesses in other.witnesses.items():
            mine = self.witnesses.setdefault(name, [])
            mine.extend(witnesses[: max(0, MAX_WITNESSES - len(mine))])
        self.runs += other.runs
        self.event_count += other.event_count
        self.finished = self.finished and other.finished
        traced = [key for key, t in self.timelines.items() if not t["failed"]]
        flagged = [key for key, t in self.timelines.items() if t["failed"]]
        for key, timeline in sorted(other.timelines.items()):
            kept = flagged if timeline["failed"] else traced
            if len(kept) < (TIMELINE_FLAGGED if timeline["failed"] else TIMELINE_RUNS):
                kept.append(key)
                self.timelines[key] = timeline
        return self

    # -- reading -----------------------------------------------------------------------------

    def retained(self) -> int:
        """How many objects the book keeps for runs (what must not grow with the run's length)."""
        return (
            len(self.active)
            + sum(done.intervals for done in self._done.values())
            + len(self._recent)
            + len(self._flagged)
        )

    @property
    def anomalies(self) -> int:
        return sum(self.counts[name] for name in ANOMALIES)

    def figures(self) -> dict[str, Any]:
        """Every figure and count, as written to the load run's JSON."""

        def counted(histogram: HdrHistogram, unit: str) -> dict[str, Any]:
            if histogram.get_total_count() == 0:
                return {"count": 0}
            return {
                "count": histogram.get_total_count(),
                f"mean_{unit}": round(histogram.get_mean_value(), 3),
                f"p50_{unit}": histogram.get_value_at_percentile(50),
                f"p90_{unit}": histogram.get_value_at_percentile(90),
                f"p95_{unit}": histogram.get_value_at_percentile(95),
                f"p99_{unit}": histogram.get_value_at_percentile(99),
                f"p99.9_{unit}": histogram.get_value_at_percentile(99.9),
                f"max_{unit}": histogram.get_max_value(),
                f"min_{unit}": histogram.get_min_value(),
                "ci": _intervals(histogram),
            }

        return {
            "runs": self.runs,
            "events": self.event_count,
            "stall_threshold_s": self.stall_threshold_ns / 1e9,
            "classes": dict(self.counts),
            "witnesses": {k: list(v) for k, v in self.witnesses.items() if v},
            "time_to_first_event": _times(self.time_to_first_event),
            "time_to_first_progress": _times(self.time_to_first_progress),
            "time_to_final": _times(self.time_to_final),
            "inter_event_gap": _times(self.gaps),
            "events_per_run": counted(self.events_per_run, "events"),
            "chars_per_second": counted(self.chars_per_second, "chars"),
            "timelines": list(self.timelines.values()),
            "gap_sample_s": self.gap_sample(),
        }


def _hdr_settings(histogram: HdrHistogram) -> tuple[int, int, int]:
    return histogram.lowest_trackable_value, histogram.highest_trackable_value, histogram.significant_figures


def _marks_of(sample: list[str]) -> list[tuple[int, str]]:
    """(offset ns, event) from a run's sample lines (``tool_completed 'x' +0.143 s``)."""
    marks = []
    for line in sample:
        head, _, offset = line.rpartition(" +")
        try:
            marks.append((int(float(offset.removesuffix(" s")) * 1e9), head.split(" ")[0]))
        except ValueError:
            continue
    return marks


def _intervals(histogram: HdrHistogram) -> dict[str, list[float] | None]:
    """Each summary percentile's 95% confidence interval (order statistics), None: too few samples."""
    count = histogram.get_total_count()
    intervals: dict[str, list[float] | None] = {}
    for name, percentile in SUMMARY_PERCENTILES.items():
        ranks = rank_interval(count, percentile)
        intervals[name] = (
            [histogram.get_value_at_percentile(100.0 * rank / count) for rank in ranks] if ranks else None
        )
    return intervals


def _times(histogram: LatencyHistogram) -> dict[str, float]:
    """A time figure's summary in seconds (count, mean, min, percentiles, max)."""
    summary = histogram.summary().as_dict()
    summary["min_s"] = histogram.min
    return summary
