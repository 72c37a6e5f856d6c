"""What stakeholders read: honest percentiles, human units, the table at the test's level, the
charts drawn from what a test measured, and summary.html written by the library's listener.

No measured time is asserted anywhere: the figures here are synthetic.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from assertionengine import AssertionOperator as Op

from MessagingLibrary.context import Artefact, Context, Measurement, format_value, plain_value
from MessagingLibrary.engine.metrics import LatencyHistogram, min_samples, rank_interval
from MessagingLibrary.keywords.reporting import doc_table, label_of
from MessagingLibrary.report_charts import charts_for
from MessagingLibrary.summary import load_output_xml

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- honest percentiles


def _binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize(("count", "percentile"), [(100, 95), (400, 99), (50, 50), (1000, 90), (40, 10)])
def test_the_interval_covers_the_percentile_with_95_percent_confidence(count, percentile):
    lower, upper = rank_interval(count, percentile)
    p = percentile / 100
    # P(X(l) <= true percentile <= X(u)) = P(l <= B <= u - 1), B ~ binomial(n, p)
    coverage = _binomial_cdf(upper - 1, count, p) - _binomial_cdf(lower - 1, count, p)
    assert coverage >= 0.95
    assert 1 <= lower < upper <= count


def test_a_sample_too_small_for_its_percentile_has_no_interval():
    assert rank_interval(100, 99) is None  # p99 of 100 samples: the interval reaches past the largest
    assert rank_interval(100, 95) is not None
    assert rank_interval(5, 50) is None and rank_interval(6, 50) is not None
    assert [min_samples(p) for p in (50, 95, 99, 99.9)] == [6, 72, 368, 3688]
    assert rank_interval(min_samples(99) - 1, 99) is None
    assert rank_interval(0, 50) is None


def test_the_normal_approximation_agrees_with_the_exact_tails_where_they_meet():
    # n·p·(1−p) just below and above 100 (exact vs normal): the ranks move smoothly
    below, above = rank_interval(10_000, 1.0), rank_interval(10_200, 1.0)
    assert below is not None and above is not None
    assert abs((above[0] - below[0]) - 2) <= 3 and abs((above[1] - below[1]) - 2) <= 3


def test_bad_percentiles_are_refused_naming_them():
    with pytest.raises(ValueError, match="strictly between 0 and 100, got 100"):
        rank_interval(10, 100)


def test_a_histogram_reports_each_percentile_with_its_interval_and_a_spectrum():
    histogram = LatencyHistogram.of(ms * 1_000_000 for ms in range(1, 1001))  # 1..1000 ms
    summary = histogram.summary().as_dict()
    low, high = summary["ci_s"]["p99"]
    assert low <= summary["p99_s"] <= high
    assert summary["ci_s"]["p99.9"] is None  # 1,000 samples cannot support p99.9
    spectrum = summary["spectrum"]
    assert spectrum[0][0] == 0 and spectrum[-1] == [100.0, summary["max_s"]]
    assert [p for p, _ in spectrum] == sorted(p for p, _ in spectrum)


def test_an_assertion_on_a_percentile_of_too_few_samples_is_inconclusive_not_passed():
    ctx = Context()
    value = ctx.check("latency p99 of load 'x'", 0.010, Op["<="], "500 ms", unit="s",
                      percentile=99.0, samples=120, interval=None)
    assert value == 0.010
    row = ctx.measurements[-1]
    assert row.verdict == "INCONCLUSIVE" and row.passed is None
    assert ctx.inconclusive == [
        "latency p99 of load 'x' rests on 120 samples, too few to support p99 "
        "(its 95% confidence interval needs at least 368)"
    ]
    ctx.loop.stop()


def test_on_enough_samples_the_percentile_is_judged_and_carries_its_count_and_interval():
    ctx = Context()
    ctx.check("latency p99 of load 'x'", 0.010, Op["<="], "500 ms", unit="s",
              percentile=99.0, samples=5000, interval=(0.009, 0.012))
    row = ctx.measurements[-1]
    assert (row.verdict, row.samples, row.interval) == ("PASS", 5000, (0.009, 0.012))
    with pytest.raises(AssertionError, match=r"was 0.6 s, expected <= 0.5 s"):
        ctx.check("latency p99 of load 'y'", 0.6, Op["<="], "500 ms", unit="s",
                  percentile=99.0, samples=5000, interval=(0.5, 0.7))
    assert ctx.measurements[-1].verdict == "FAIL" and ctx.inconclusive == []
    ctx.loop.stop()


# --------------------------------------------------------------------------- human units


@pytest.mark.parametrize(("value", "unit", "shown"), [
    (0.002177, "s", "2.18 ms"),
    (0.5, "s", "500 ms"),
    (12.5, "s", "12.5 s"),
    (16470.0, "B/conn", "16.1 KB/conn"),
    (3 * 1024 * 1024.0, "B/msg", "3 MB/msg"),
    (4980.2, "msg/s", "4,980 msg/s"),
    (0.98, "ratio", "0.980"),
    (12345, "count", "12,345"),
    (0.016, "MB", "0.016 MB"),
    (None, "s", "None"),
])
def test_values_are_shown_in_human_units(value, unit, shown):
    assert format_value(value, unit) == shown


@pytest.mark.parametrize("value", [1.647e4, 3.2e-5, 123456.7, 0.000001])
def test_no_figure_is_ever_in_scientific_notation(value):
    for unit in ("s", "MB", "B/conn", "msg/s", "ratio", "count", ""):
        assert "e+" not in format_value(value, unit) and "e-" not in format_value(value, unit)
        assert "e+" not in plain_value(value, unit) and "e-" not in plain_value(value, unit)


def test_failure_messages_keep_the_words_the_fault_catalogue_matches():
    assert plain_value(0.4042, "s") == "0.4042 s" and plain_value(0.2, "s") == "0.2 s"
    assert plain_value(0.95, "ratio") == "0.95"


def test_internal_names_become_words():
    assert label_of("agent_state.memory_usage.total_objects") == "agent state: memory usage: total objects"
    assert label_of("latency p99 of load 'x'") == "latency p99 of load 'x'"


def test_the_documentation_table_groups_template_rows_and_shows_samples_and_interval():
    rows = [
        Measurement("achieved ratio of load 'rate-100'", 1.0, "ratio", ">=", 0.9, True, step="row 1: rate=100"),
        Measurement("latency p95 of load 'rate-100'", 0.0123, "s", "<=", 0.2, True, samples=200,
                    interval=(0.011, 0.015), step="row 1: rate=100"),
        Measurement("weird | name", 3, "count", "==", 3, True, step="row 2: rate=500"),
    ]
    text = doc_table(rows)
    lines = text.splitlines()
    assert "| *row 1: rate=100* | | | | |" in lines and "| *row 2: rate=500* | | | | |" in lines
    assert "| latency p95 of load 'rate-100' | 12.3 ms | 200 (11 ms – 15 ms) | <= 200 ms | PASS |" in lines
    assert "| weird / name | 3 | | == 3 | PASS |".replace("| |", "|   |") in lines or any(
        line.startswith("| weird / name |") for line in lines
    )
    assert all(line.count("|") == 6 for line in lines if line.startswith("|"))


# --------------------------------------------------------------------------- charts from artefacts


def _load(name: str, rate: float, *, latency_ms: float = 5.0, phases: int = 1) -> SimpleNamespace:
    histogram = LatencyHistogram.of(int(latency_ms * 1e6) + i * 1000 for i in range(2000))
    bounds = [{"name": f"p{i}", "start_s": i * 1.0, "end_s": (i + 1) * 1.0, "target_rate": rate} for i in range(phases)]
    return SimpleNamespace(
        name=name,
        latency=histogram.summary().as_dict(),
        timeline={"bucket_s": 0.1, "offered": [rate] * 10 * phases, "answered": [rate] * 10 * phases},
        phase_bounds=bounds,
        phases=[{"name": b["name"], "target_rate": rate} for b in bounds],
        planned_duration_s=1.0 * phases,
        streams=None,
    )


def _row(name, value, unit, op, expected, passed, **meta) -> Measurement:
    return Measurement(name, value, unit, op, expected, passed, meta=meta)


def test_a_load_runs_charts_draw_the_tables_thresholds_and_mark_a_failure():
    result = _load("latency", 3000)
    passing = [_row("latency p99 of load 'latency'", 0.006, "s", "<=", 0.5, True,
                    load="latency", figure="latency", statistic="p99")]
    drawn = charts_for([Artefact("load", result)], passing)
    titles = [title for title, _ in drawn]
    assert titles == ["Latency by percentile: load 'latency'", "Offered and answered rate: load 'latency'"]
    spectrum = drawn[0][1]
    assert 'class="apex-chart"' in spectrum and 'data-failed="false"' in spectrum and "500 ms" in spectrum
    failing = [_row("latency p99 of load 'latency'", 0.6, "s", "<=", 0.5, False,
                    load="latency", figure="latency", statistic="p99")]
    drawn = charts_for([Artefact("load", result)], failing)
    assert all('data-failed="true"' in svg for _, svg in drawn)  # the spectrum and the run's band


def test_rate_steps_get_their_own_chart_first_with_the_failing_step_marked():
    loads = [_load(f"rate-{rate}", rate) for rate in (100, 1000, 5000)]
    rows = [
        _row(f"achieved ratio of load 'rate-{rate}'", ratio, "ratio", ">=", 0.9, ratio >= 0.9,
             load=f"rate-{rate}", figure="achieved_ratio")
        for rate, ratio in ((100, 1.0), (1000, 0.97), (5000, 0.61))
    ]
    drawn = charts_for([Artefact("load", r) for r in loads], rows)
    title, svg = drawn[0]
    assert title == "Achieved ratio by offered rate"
    assert 'data-failed="true"' in svg and "0.9" in svg
    rows[-1] = _row("achieved ratio of load 'rate-5000'", 0.95, "ratio", ">=", 0.9, True,
                    load="rate-5000", figure="achieved_ratio")
    assert 'data-failed="false"' in charts_for([Artefact("load", r) for r in loads], rows)[0][1]


def test_a_phased_run_marks_only_the_phase_that_failed():
    result = _load("benchmark", 2000, phases=3)
    rows = [_row("achieved ratio of load 'benchmark' phase p1", 0.5, "ratio", ">=", 0.9, False,
                 load="benchmark", phase="p1", figure="achieved_ratio")]
    rate = dict(charts_for([Artefact("load", result)], rows))["Offered and answered rate: load 'benchmark'"]
    assert rate.count("FAILED") >= 1 and "'benchmark' p1" in rate


def test_an_offline_accounting_is_drawn_per_template_row():
    counts = {"pushed": 5, "delivered": 3, "dropped": 2, "rejected": 0, "expired": 0, "unaccounted": 0,
              "user": "alice", "capacity": 3, "policy": "drop_oldest", "failed": False, "note": ""}
    drawn = charts_for([Artefact("offline", counts, "row 1: drop_oldest"),
                        Artefact("offline", {**counts, "failed": True, "note": "N1 delivered"}, "row 2: reject")], [])
    assert [t for t, _ in drawn] == ["Offline queue of 'alice', row 1: drop_oldest", "Offline queue of 'alice', row 2: reject"]
    assert 'data-failed="false"' in drawn[0][1] and 'data-failed="true"' in drawn[1][1]


# --------------------------------------------------------------------------- the listener, end to end

SUITE = """\
*** Settings ***
Library    MessagingLibrary
Test Teardown    Log Measurements

*** Test Cases ***
Template Rows Are Labelled
    [Documentation]    Two rows of a template, each measuring.
    [Template]    Record Measurement
    queue peak    3    count
    queue peak    4    count

A Plain Test
    [Documentation]    No template: no step label.
    Record Measurement    answered    ${7}    count
"""


def test_the_listener_labels_template_rows_fills_the_documentation_and_writes_summary_html(tmp_path):
    (tmp_path / "labels.robot").write_text(SUITE)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "robot", "--outputdir", str(out), "--log", "NONE", "--report", "NONE",
         "--pythonpath", str(ROOT / "libraries"), str(tmp_path / "labels.robot")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = load_output_xml(out / "output.xml")
    first, second = run.tests
    assert "| *row 1: queue peak, 3, count* |" in first.doc and "| *row 2: queue peak, 4, count* |" in first.doc
    assert "| queue peak | 4 |" in first.doc
    assert "row " not in second.doc and "| answered | 7 |" in second.doc
    assert [f.key for f in first.figures] == ["queue peak", "queue peak"]
    summary = (out / "summary.html").read_text(encoding="utf-8")
    assert "Template Rows Are Labelled" in summary and "A Plain Test" in summary
    assert list((out / "apex-runs").glob("*.json")), "the run's figures were not kept for the next comparison"


# --------------------------------------------------------------------------- progress on the console


def test_a_load_run_reports_its_progress_on_the_console_never_in_the_log(capfd):
    from MessagingLibrary.engine.console import console
    from MessagingLibrary.engine.load import PROGRESS_AFTER_S, LoadEngine, LoadPlan
    from MessagingLibrary.engine.schedule import Phase

    engine = LoadEngine(LoadPlan(url="ws://127.0.0.1:9", tokens=["t"], phases=[Phase("soak", 100.0, 10.0)], name="soak"))
    engine.start_ns = 0  # "elapsed" is whatever the clock says: only the shape is asserted
    line = engine.progress_line()
    assert line.startswith("[apex] load 'soak': ") and " of 10 s, sent 0 of 1,000, answered 0, answering " in line
    assert line.endswith(" msg/s")
    console(line)
    assert capfd.readouterr().out == line + "\n"
    assert engine.schedule.duration_s > PROGRESS_AFTER_S  # this run would report; a 2 s step would not
