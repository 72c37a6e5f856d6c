"""The charts of one test, drawn from what it measured and judged against the rows' thresholds.

A test's measuring keywords keep what a chart can draw (``Context.artefacts``: load runs,
resource monitors, offline-queue accountings) and its measurement rows (``Measurement``, with
``meta`` saying which run, phase, figure and percentile a row judged). At the end of the test,
`Log Measurements` calls :func:`charts_for`, so a chart's threshold lines are exactly the rows'
thresholds and whatever failed in the table is marked failed in the chart.

Which charts:

- load runs: one latency percentile spectrum (a series per run), and offered vs answered rate
  over time (the runs of the test end to end, each run or phase a band with its target rate);
- two or more single-phase runs judged on their achieved ratio (the rate steps): achieved ratio
  against offered rate, the threshold drawn;
- agent load runs: a timeline of a sample of runs and the distribution of gaps between events;
- a resource monitor: server and client memory and CPU over time;
- an offline-queue accounting: what was pushed, delivered, evicted, expired, refused.

The drawing itself is :mod:`MessagingLibrary.charts` (matplotlib, self-contained SVG).
"""

from __future__ import annotations

from typing import Any

from . import charts
from .context import Artefact, Measurement, format_value

#: At most this many load runs get a series in the spectrum (the rest are in the table).
MAX_SPECTRUM_SERIES = 8
#: Agent load runs drawn per test (timeline and gaps each).
MAX_AGENT_RUNS = 2
#: Seconds left between two runs laid end to end in the rate chart.
RUN_GAP_S = 0.5

Chart = tuple[str, str]


def charts_for(artefacts: list[Artefact], rows: list[Measurement]) -> list[Chart]:
    """``(title, svg)`` of every chart this test's artefacts make, failed ones marked."""
    loads = [a.data for a in artefacts if a.kind == "load"]
    drawn: list[Chart] = []
    # Agent runs first: what a chat user sees (the run timeline, the gaps) says most there.
    for result in [r for r in loads if r.streams][:MAX_AGENT_RUNS]:
        drawn.extend(_agent_charts(result, rows))
    if loads:
        drawn.extend(_load_charts(loads, rows))
    for artefact in artefacts:
        if artefact.kind == "monitor":
            chart = _monitor_chart(artefact.data, rows)
            if chart:
                drawn.append(chart)
        elif artefact.kind == "offline":
            drawn.append(_offline_chart(artefact.data, artefact.step))
    return drawn


def _rows_of(rows: list[Measurement], **wanted: Any) -> list[Measurement]:
    return [r for r in rows if all(r.meta.get(k) == v for k, v in wanted.items())]


def _failed(rows: list[Measurement]) -> list[Measurement]:
    return [r for r in rows if r.passed is False]


def _threshold_text(row: Measurement) -> str:
    return f"{row.operator} {format_value(row.expected, row.unit)}"


# --------------------------------------------------------------------------- load runs


def _load_charts(loads: list[Any], rows: list[Measurement]) -> list[Chart]:
    out: list[Chart] = []
    series, thresholds = [], []
    for result in loads[:MAX_SPECTRUM_SERIES]:
        spectrum = result.latency.get("spectrum") or []
        if spectrum:
            series.append((f"load '{result.name}' (n={result.latency['count']:,})", [tuple(p) for p in spectrum]))
        for row in _rows_of(rows, load=result.name, figure="latency"):
            statistic = row.meta.get("statistic", "")
            if row.expected is None or not statistic.startswith("p") or row.meta.get("phase"):
                continue
            thresholds.append({
                "percentile": float(statistic[1:]),
                "value_s": float(row.expected),
                "measured_s": float(row.value),
                "label": f"{statistic} {_threshold_text(row)} ('{result.name}')",
                "passed": row.passed,
                "samples": row.samples,
            })
    if series:
        title = "Latency by percentile" + (f" ({len(series)} runs)" if len(series) > 1 else f": load '{loads[0].name}'")
        out.append((title, charts.latency_spectrum(series, thresholds=thresholds, title=title)))
    out.append(_rate_chart(loads, rows))
    steps = _rate_steps(loads, rows)
    if steps:
        out.insert(0, steps)  # the rate steps' own chart says most: first
    return out


def _rate_chart(loads: list[Any], rows: list[Measurement]) -> Chart:
    times: list[float] = []
    offered: list[float] = []
    answered: list[float] = []
    phases: list[dict[str, Any]] = []
    start = 0.0
    for result in loads:
        timeline = result.timeline or {"bucket_s": 0.1, "offered": [], "answered": []}
        bucket = timeline["bucket_s"]
        for i, (sent, got) in enumerate(zip(timeline["offered"], timeline["answered"], strict=False)):
            times.append(round(start + i * bucket, 6))
            offered.append(sent)
            answered.append(got)
        bands = result.phase_bounds or [
            {"name": result.name, "start_s": 0.0, "end_s": result.planned_duration_s, "target_rate": None}
        ]
        for band in bands:
            phase = band["name"] if len(bands) > 1 else None
            # A phase is marked by the rows that judged it; a run of one phase by all its rows.
            failed = [r for r in _failed(_rows_of(rows, load=result.name)) if phase is None or r.meta.get("phase") == phase]
            name = f"'{result.name}' {band['name']}" if len(bands) > 1 else f"'{result.name}'"
            phases.append({
                "name": name,
                "start_s": start + band["start_s"],
                "end_s": start + band["end_s"],
                "target_rate": band.get("target_rate"),
                "failed": bool(failed),
                "note": "; ".join(f"{r.name} {format_value(r.value, r.unit)}, expected {_threshold_text(r)}"
                                  for r in failed[:2]),
            })
        span = len(timeline["offered"]) * bucket
        start += max(span, result.planned_duration_s) + RUN_GAP_S
    title = "Offered and answered rate" + (f": load '{loads[0].name}'" if len(loads) == 1 else f" ({len(loads)} runs)")
    return title, charts.rate_over_time(times, offered, answered, phases=phases, title=title)


def _rate_steps(loads: list[Any], rows: list[Measurement]) -> Chart | None:
    steps, threshold = [], None
    for result in loads:
        if len(result.phases) != 1:
            continue
        judged = _rows_of(rows, load=result.name, figure="achieved_ratio")
        if not judged:
            continue
        row = judged[-1]
        if row.expected is not None:
            threshold = float(row.expected) if threshold is None else min(threshold, float(row.expected))
        steps.append({
            "offered": float(result.phases[0]["target_rate"]),
            "ratio": float(row.value),
            "passed": None if row.expected is None or row.inconclusive else row.passed,
            "name": result.name,
        })
    if len(steps) < 2 or threshold is None:
        return None
    title = "Achieved ratio by offered rate"
    return title, charts.rate_steps(steps, threshold=threshold, title=title)


# --------------------------------------------------------------------------- agent runs


def _agent_charts(result: Any, rows: list[Measurement]) -> list[Chart]:
    streams = result.streams
    out: list[Chart] = []
    timelines = streams.get("timelines") or []
    title = f"Agent runs: events over time (load '{result.name}')"
    out.append((title, charts.agent_timeline(
        [{**t, "events": [tuple(e) for e in t["events"]]} for t in timelines], title=title)))
    gap_rows = [r for r in _rows_of(rows, load=result.name, figure="inter_event_gap") if r.expected is not None]
    row = gap_rows[-1] if gap_rows else None
    percentile = float(row.meta["statistic"][1:]) if row and row.meta.get("statistic", "").startswith("p") else 99.0
    title = f"Gaps between events (load '{result.name}')"
    out.append((title, charts.gap_distribution(
        streams.get("gap_sample_s") or [],
        threshold_s=float(row.expected) if row else None,
        stall_s=streams.get("stall_threshold_s"),
        percentile=percentile,
        passed=(None if row is None or row.inconclusive else row.passed),
        title=title,
    )))
    return out


# --------------------------------------------------------------------------- resources and queues


def _monitor_chart(monitor: Any, rows: list[Measurement]) -> Chart | None:
    series = {}
    for role, data in monitor.series.items():
        samples = list(data.samples)
        points = []
        for previous, sample in zip([None, *samples], samples, strict=False):
            cpu = 0.0
            if previous is not None and sample.cpu_s is not None and previous.cpu_s is not None:
                elapsed = (sample.ts_ns - previous.ts_ns) / 1e9
                cpu = 100.0 * (sample.cpu_s - previous.cpu_s) / elapsed if elapsed > 0 else 0.0
            points.append(((sample.ts_ns - samples[0].ts_ns) / 1e9, sample.rss / (1024 * 1024), cpu))
        series[role] = points
    if not any(series.values()):
        return None
    growth = [r for r in _rows_of(rows, process="server", figure="memory_growth") if r.expected is not None]
    limit, label = None, None
    if growth and growth[-1].meta.get("baseline_mb") is not None:
        # The row judges growth from the baseline: the line is drawn at baseline + limit.
        limit = float(growth[-1].meta["baseline_mb"]) + float(growth[-1].expected)
        label = f"server growth limit {format_value(float(growth[-1].expected), 'MB')} (baseline + limit)"
    judged = [r for r in rows if r.meta.get("process") and r.expected is not None]
    failed = None if not judged else any(r.passed is False for r in judged)
    title = "Server and client memory and CPU"
    return title, charts.resources_over_time(
        series.get("server", []), series.get("client", []), memory_limit_mb=limit, memory_failed=failed,
        memory_limit_label=label, title=title,
    )


def _offline_chart(counts: dict[str, Any], step: str) -> Chart:
    title = f"Offline queue of '{counts.get('user')}'" + (f", {step}" if step else "")
    return title, charts.offline_queue(
        pushed=int(counts.get("pushed", 0)),
        delivered=int(counts.get("delivered", 0)),
        evicted=int(counts.get("dropped", 0)),
        expired=int(counts.get("expired", 0)),
        refused=int(counts.get("rejected", 0)),
        capacity=counts.get("capacity"),
        policy=counts.get("policy"),
        failed=bool(counts.get("failed")),
        note=str(counts.get("note") or ""),
        title=title,
    )


__all__ = ["charts_for"]
