"""The one-page run summary (MessagingLibrary.summary) from synthetic output.xml files.

Small .robot suites using only BuiltIn keywords emulate what the library logs: the
``<!--apex-record:BASE64-->`` measurement record, inline ``<svg class="apex-chart">`` charts,
suite metadata. Robot runs them (a second each); the summary is loaded, rendered, compared.
No timing assertions: the figures are made up and fixed.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from MessagingLibrary.summary import (
    FAILED,
    INCONCLUSIVE,
    PASSED,
    SKIPPED,
    Figure,
    RunModel,
    TestEntry,
    compare_runs,
    extract_charts,
    load_output_xml,
    load_previous,
    load_run_json,
    main,
    parse_records,
    reason_text,
    render_summary,
    write_summary,
)

LATENCY_KEY = "latency p99 of load 'latency'"
ESCAPED_NAME = "Name With <b>& Markup"


def latency(value_s: float) -> dict:
    return {
        "key": LATENCY_KEY,
        "label": "Latency p99 (load 'latency')",
        "value": value_s,
        "unit": "s",
        "display": f"{value_s * 1000:.1f} ms",
        "operator": "<=",
        "threshold": 0.05,
        "threshold_display": "50 ms",
        "verdict": "PASS" if value_s <= 0.05 else "FAIL",
        "samples": 4980,
        "ci_display": "95% CI 11.8–13.1 ms",
        "source": "server",
    }


def throughput(rate: int) -> dict:
    return {
        "key": "throughput of load 'latency'",
        "label": "Throughput",
        "value": rate,
        "unit": "msg/s",
        "display": f"{rate:,} msg/s",
        "operator": ">=",
        "threshold": 4000,
        "threshold_display": "4,000 msg/s",
        "verdict": "PASS" if rate >= 4000 else "FAIL",
    }


GENERATOR = {
    "key": "generator lag p99",
    "label": "Generator lag p99",
    "value": 0.002,
    "unit": "s",
    "display": "2.0 ms",
    "operator": "<=",
    "threshold": 0.01,
    "threshold_display": "10 ms",
    "verdict": "PASS",
    "source": "generator",
}
RECORDED = {"key": "sent", "label": "Messages sent", "value": 5000, "unit": "count", "display": "5,000"}
FAILING = {
    "key": "duplicates",
    "label": "Duplicate deliveries",
    "value": 3,
    "unit": "count",
    "display": "3",
    "operator": "==",
    "threshold": 0,
    "threshold_display": "0",
    "verdict": "FAIL",
    "reason": "3 messages delivered twice",
}


def record(*figures: dict) -> str:
    data = json.dumps({"version": 1, "figures": list(figures)}).encode("utf-8")
    return "<table><tr><td>figures</td></tr></table><!--apex-record:" + base64.b64encode(data).decode() + "-->"


def chart(title: str) -> str:
    return f'<svg class="apex-chart" aria-label="{title}"><title>{title}</title><rect width="10" height="10"/></svg>'


def write_suites(folder: Path, *, latency_s: float, rate: int, target: str, second_fails: bool = True) -> None:
    """A directory suite: the guarantees file (metadata top=True) and a second with child metadata."""
    folder.mkdir(parents=True)
    three = chart("Latency over time") + chart("Throughput over time") + chart("Third chart")
    (folder / "01__guarantees.robot").write_text(
        f"""*** Settings ***
Metadata          Library version    0.1.0
Suite Setup       Set Run Metadata

*** Variables ***
${{PASS_RECORD}}    {record(latency(latency_s), throughput(rate), GENERATOR, RECORDED)}
${{FAIL_RECORD}}    {record(FAILING)}
${{CHARTS}}         <p>charts</p>{three}
${{FAIL_CHART}}     {chart("Failing chart")}

*** Test Cases ***
Messages Arrive Fast
    [Documentation]    Every user gets an answer within 50 ms at p99. Measured under steady load.
    ...
    ...    Second paragraph, not shown.
    Log    ${{CHARTS}}    html=True
    [Teardown]    Log    ${{PASS_RECORD}}    html=True

No Duplicate Deliveries
    [Documentation]    A message is delivered exactly once.
    IF    {second_fails}
        Run Keyword And Continue On Failure    Fail    3 messages delivered twice
        Run Keyword And Continue On Failure    Fail    second problem
    END
    Log    ${{FAIL_CHART}}    html=True
    [Teardown]    Log    ${{FAIL_RECORD}}    html=True

Offline Queue Is Drained
    [Documentation]    Queued messages arrive after reconnect.
    Skip    not applicable to this dialect

Load Holds Under Pressure
    [Documentation]    The platform keeps up with 5,000 msg/s.
    Set Tags    inconclusive
    Skip    Inconclusive: the load generator fell behind

{ESCAPED_NAME}
    [Documentation]    Names are escaped.
    No Operation

*** Keywords ***
Set Run Metadata
    Set Suite Metadata    Target    {target}    top=True
    Set Suite Metadata    Dialect    apex    top=True
""",
        encoding="utf-8",
    )
    (folder / "02__other.robot").write_text(
        """*** Settings ***
Suite Setup       Set Suite Metadata    Faults    none

*** Test Cases ***
Second Suite Test
    [Documentation]    Another guarantee.
    No Operation
""",
        encoding="utf-8",
    )


def run_robot(folder: Path, output: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "robot", "--output", str(output), "--log", "NONE", "--report", "NONE",
         "--console", "none", str(folder)],
        check=False,
        capture_output=True,
    )  # fmt: skip
    assert output.is_file(), f"robot wrote no {output}"
    return output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs of the same suites: the second with latency 3x worse and throughput 10% worse."""
    base = tmp_path_factory.mktemp("runs")
    write_suites(base / "first" / "Suites", latency_s=0.0123, rate=5000, target="built-in mock")
    first = run_robot(base / "first" / "Suites", base / "first" / "output.xml")
    write_suites(base / "second" / "Suites", latency_s=0.0369, rate=4500, target="built-in mock")
    second = run_robot(base / "second" / "Suites", base / "second" / "output.xml")
    return {"first": first, "second": second}


def by_name(run: RunModel, name: str) -> TestEntry:
    return next(t for t in run.tests if t.name == name)


def row_of(page: str, test: TestEntry) -> str:
    """The HTML of ``test``'s row: up to the next test row or section heading."""
    marker = f"<tr id='{test.id}'>"
    assert page.count(marker) == 1, f"no single row for {test.name}"
    start = page.index(marker) + len(marker)
    ends = [i for i in (page.find("<tr id='", start), page.find("<h2", start)) if i != -1]
    return page[start : min(ends)] if ends else page[start:]


def regressions_box(page: str) -> str:
    match = re.search(r"id='regressions'>(.*?)</div>", page, re.DOTALL)
    assert match, "no regressions box"
    return match.group(1)


# --------------------------------------------------------------------------- loading


def test_loader_reads_tests_verdicts_and_figures(runs):
    run = load_output_xml(runs["first"])
    assert [t.name for t in run.tests] == [
        "Messages Arrive Fast",
        "No Duplicate Deliveries",
        "Offline Queue Is Drained",
        "Load Holds Under Pressure",
        ESCAPED_NAME,
        "Second Suite Test",
    ]
    verdicts = {t.name: t.verdict for t in run.tests}
    assert verdicts["Messages Arrive Fast"] == PASSED
    assert verdicts["No Duplicate Deliveries"] == FAILED
    assert verdicts["Offline Queue Is Drained"] == SKIPPED
    assert verdicts["Load Holds Under Pressure"] == INCONCLUSIVE
    fast = by_name(run, "Messages Arrive Fast")
    assert fast.suite == "Guarantees"
    assert by_name(run, "Second Suite Test").suite == "Other"
    assert [f.key for f in fast.figures] == [LATENCY_KEY, "throughput of load 'latency'", "generator lag p99", "sent"]
    assert fast.figures[0] == Figure(**latency(0.0123))
    assert fast.id.startswith("s1-s1-t")


def test_loader_collects_charts_in_order_and_merges_metadata(runs):
    run = load_output_xml(runs["first"])
    fast = by_name(run, "Messages Arrive Fast")
    assert [title for title, _ in fast.charts] == ["Latency over time", "Throughput over time", "Third chart"]
    assert all(svg.startswith("<svg") and svg.endswith("</svg>") for _, svg in fast.charts)
    assert [title for title, _ in by_name(run, "No Duplicate Deliveries").charts] == ["Failing chart"]
    # top=True from a child's suite setup, the child's own Metadata setting, a sibling's suite metadata
    assert run.metadata["Target"] == "built-in mock"
    assert run.metadata["Dialect"] == "apex"
    assert run.metadata["Library version"] == "0.1.0"
    assert run.metadata["Faults"] == "none"
    assert run.started and run.ended


def test_several_failures_show_the_first_and_a_count(runs):
    run = load_output_xml(runs["first"])
    failing = by_name(run, "No Duplicate Deliveries")
    assert failing.message.startswith("Several failures occurred:")
    assert reason_text(failing.message) == "3 messages delivered twice (+1 more)"
    assert reason_text("just one") == "just one"
    assert reason_text("Several failures occurred:\n\n1) a\n\n2) b\n\n3) c") == "a (+2 more)"


def test_records_and_charts_parsers_skip_what_is_not_theirs():
    good = record(RECORDED)
    assert [f.key for f in parse_records("<p>x</p>" + good + "<!--apex-record:%%%-->")] == ["sent"]
    bad_json = "<!--apex-record:" + base64.b64encode(b"not json").decode() + "-->"
    assert parse_records(bad_json) == []
    text = '<svg class="other"><rect/></svg>' + chart("Kept") + "<svg class='apex-chart wide'><title>T</title></svg>"
    assert [t for t, _ in extract_charts(text)] == ["Kept", "T"]


# --------------------------------------------------------------------------- the page


def test_page_header_names_verdict_target_and_dialect(runs):
    run = load_output_xml(runs["first"])
    page = render_summary(run)
    assert "<title>" in page and "built-in mock" in page.split("</title>")[0]
    header = page.split("<div class='box")[0]
    assert "1 of 6 guarantees broken, 1 inconclusive, 1 skipped" in header
    assert "class='verdict failed'" in header
    assert "Target: <b>built-in mock</b>" in header
    assert "MOCK, not a deployed platform" in header
    assert "Dialect: <b>apex</b>" in header
    assert "0.1.0" in header
    assert "<script" not in page.lower()
    assert "No earlier run to compare with (run again with the same output directory to compare)" in page


def test_green_run_against_staging_says_so():
    run = RunModel(
        {"Target": "wss://staging.example.com/ws", "Dialect": "netra"},
        "2025-01-01 10:00:00",
        "2025-01-01 10:05:00",
        [TestEntry("s1-t1", "S", "A", "Doc.", "PASS", "", [], [], [])],
    )
    page = render_summary(run)
    assert "The 1 guarantee checked was kept" in page
    assert "class='verdict passed'" in page
    assert "Target: <b>wss://staging.example.com/ws</b>" in page
    assert "Dialect: <b>netra</b>" in page
    assert "MOCK" not in page
    run.tests.append(TestEntry("s1-t2", "S", "B", "", "PASS", "", [], [], []))
    assert "All 2 guarantees kept" in render_summary(run)


def test_rows_have_verdict_words_figures_reasons_and_log_links(runs):
    run = load_output_xml(runs["first"])
    page = render_summary(run)
    fast = row_of(page, by_name(run, "Messages Arrive Fast"))
    assert "PASSED" in fast
    assert "Every user gets an answer within 50 ms at p99." in fast
    assert "Measured under steady load" not in fast  # first sentence only
    assert "Latency p99 (load &#x27;latency&#x27;)" in fast
    assert "12.3 ms" in fast and "at most 50 ms" in fast
    assert "4,980 samples" in fast and "95% CI 11.8–13.1 ms" in fast
    assert "5,000 msg/s" in fast and "at least 4,000 msg/s" in fast
    headline, also = fast.split("Also recorded")
    assert "Generator lag p99" not in headline and "Generator lag p99" in also
    assert "Messages sent 5,000" in also
    assert f"href='log.html#{by_name(run, 'Messages Arrive Fast').id}'" in fast

    failing = row_of(page, by_name(run, "No Duplicate Deliveries"))
    assert "FAILED" in failing
    assert "3 messages delivered twice (+1 more)" in failing
    assert "Duplicate deliveries" in failing and "exactly 0" in failing and "missed" in failing

    skipped = row_of(page, by_name(run, "Offline Queue Is Drained"))
    assert "SKIPPED" in skipped and "not applicable to this dialect" in skipped
    inconclusive = row_of(page, by_name(run, "Load Holds Under Pressure"))
    assert "INCONCLUSIVE" in inconclusive and "the load generator fell behind" in inconclusive
    for test in run.tests:
        assert f"<tr id='{test.id}'>" in page
        assert f"href='log.html#{test.id}'" in page


def test_names_and_metadata_are_escaped(runs):
    run = load_output_xml(runs["first"])
    run.metadata["Proxy"] = "<script>alert(1)</script>"
    page = render_summary(run)
    assert "Name With &lt;b&gt;&amp; Markup" in page
    assert ESCAPED_NAME not in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_charts_two_per_test_failed_first_unsafe_dropped(runs):
    run = load_output_xml(runs["first"])
    scripted = chart("S").replace("<rect", "<script>1</script><rect")
    run.tests[-1].charts = [("Not svg", "<div>x</div>"), ("Scripted", scripted)]
    page = render_summary(run)
    charts = page.split("Charts that matter", 1)[1]
    assert "Failing chart" in charts and "Latency over time" in charts and "Throughput over time" in charts
    assert "Third chart" not in page
    assert charts.index("Failing chart") < charts.index("Latency over time")
    assert charts.count('<svg class="apex-chart"') == 3
    assert "Not svg" not in page and "Scripted" not in page


# --------------------------------------------------------------------------- comparison


def test_second_run_flags_the_3x_worse_figure_not_the_10_percent_one(runs):
    first, second = load_output_xml(runs["first"]), load_output_xml(runs["second"])
    page = render_summary(second, previous=first, tolerance=0.5)
    box = regressions_box(page)
    assert "Regressions since the last run (1)" in box
    assert "Latency p99 (load &#x27;latency&#x27;)" in box
    assert "12.3 ms \u2192 36.9 ms" in box and "+200%" in box
    assert "Throughput" not in box
    row = row_of(page, by_name(second, "Messages Arrive Fast"))
    assert "+200% (was 12.3 ms)" in row and "REGRESSION" in row
    assert "-10% (was 5,000 msg/s)" in row
    assert row.count("REGRESSION") == 1
    # a tighter tolerance flags the throughput too
    assert "Regressions since the last run (2)" in render_summary(second, previous=first, tolerance=0.05)


def test_verdict_changes_are_regressions_and_improvements():
    def run(status: str, message: str = "") -> RunModel:
        return RunModel({}, "", "", [TestEntry("s1-t1", "S", "T", "", status, message, [], [], [])])

    worse = compare_runs(run("FAIL", "boom"), run("PASS"))
    assert [(c.kind, c.change) for c in worse.changes] == [("regression", "passed \u2192 failed")]
    inconclusive = compare_runs(run("SKIP", "Inconclusive: lagged"), run("PASS"))
    assert [c.kind for c in inconclusive.changes] == ["regression"]
    better = compare_runs(run("PASS"), run("FAIL", "boom"))
    assert [(c.kind, c.change) for c in better.changes] == [("improvement", "failed \u2192 passed")]
    assert compare_runs(run("PASS"), run("PASS")).changes == []


@pytest.mark.parametrize(
    ("unit", "operator", "threshold", "was", "now", "kind"),
    [
        ("s", "<=", 0.05, 0.001, 0.004, ""),  # 4x but under the 5 ms floor
        ("s", "<=", 0.05, 0.010, 0.030, "regression"),
        ("s", "<=", 0.05, 0.030, 0.010, "improvement"),
        ("ratio", "<=", 0.1, 0.001, 0.01, ""),  # under the 0.02 floor
        ("ratio", ">=", 0.9, 0.99, 0.40, "regression"),
        ("count", "==", 0, 0, 1, ""),  # a count moving by 1 is noise
        ("count", "==", 0, 0, 5, "regression"),
        ("count", "==", 10, 4, 10, "improvement"),
        ("msg/s", ">=", 4000, 5000, 1000, "regression"),
        ("msg/s", "", None, 5000, 1000, ""),  # recorded only: never flagged
    ],
)
def test_direction_tolerance_and_noise_floor(unit, operator, threshold, was, now, kind):
    def figure(value):
        return Figure("k", "K", value, unit, str(value), operator, threshold, str(threshold))

    def run(value):
        return RunModel({}, "", "", [TestEntry("s1-t1", "S", "T", "", "PASS", "", [], [figure(value)], [])])

    changes = compare_runs(run(now), run(was), tolerance=0.5).changes
    assert [c.kind for c in changes] == ([kind] if kind else [])


# --------------------------------------------------------------------------- history and files


def test_history_is_written_and_picked_up_by_the_next_summary(runs, tmp_path):
    first, second = load_output_xml(runs["first"]), load_output_xml(runs["second"])
    path = write_summary(tmp_path, first)
    assert path == tmp_path / "summary.html"
    assert "No earlier run to compare with" in path.read_text(encoding="utf-8")
    saved = sorted((tmp_path / "apex-runs").glob("*.json"))
    assert len(saved) == 1
    data = json.loads(saved[0].read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["metadata"]["Target"] == "built-in mock"
    assert all("charts" not in test for test in data["tests"])
    reloaded = load_run_json(saved[0])
    assert [t.name for t in reloaded.tests] == [t.name for t in first.tests]
    assert reloaded.tests[0].figures == first.tests[0].figures

    write_summary(tmp_path, second)
    assert len(list((tmp_path / "apex-runs").glob("*.json"))) == 2
    page = (tmp_path / "summary.html").read_text(encoding="utf-8")
    assert "Regressions since the last run (1)" in regressions_box(page)

    # the same run written again (e.g. apex-summary after the listener) replaces its own record
    write_summary(tmp_path, second)
    assert len(list((tmp_path / "apex-runs").glob("*.json"))) == 2
    assert "Regressions since the last run (1)" in (tmp_path / "summary.html").read_text(encoding="utf-8")


def test_no_history_writes_nothing_else(runs, tmp_path):
    write_summary(tmp_path, load_output_xml(runs["first"]), keep_history=False)
    assert (tmp_path / "summary.html").is_file()
    assert not (tmp_path / "apex-runs").exists()


def test_load_previous_accepts_xml_and_json(runs, tmp_path):
    from_xml = load_previous(runs["first"])
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"version": 1, "tests": [asdict(replace(from_xml.tests[0], charts=[]))]}))
    from_json = load_previous(json_path)
    assert from_json.tests[0].figures == from_xml.tests[0].figures
    with pytest.raises(FileNotFoundError):
        load_previous(tmp_path / "missing.xml")
    (tmp_path / "bad.xml").write_text("<robot><not closed")
    with pytest.raises(ValueError):
        load_previous(tmp_path / "bad.xml")


# --------------------------------------------------------------------------- CLI


def test_cli_writes_the_summary_and_prints_the_verdict(runs, tmp_path, capsys):
    code = main([str(runs["second"]), "--output-dir", str(tmp_path), "--previous", str(runs["first"]), "--no-history"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0  # it reports, it does not judge: the run has a failure
    assert out[0] == str(tmp_path / "summary.html")
    assert out[1].startswith("1 of 6 guarantees broken") and "built-in mock" in out[1]
    assert "Regressions since the last run (1)" in (tmp_path / "summary.html").read_text(encoding="utf-8")
    assert not (tmp_path / "apex-runs").exists()


def test_cli_exit_2_names_the_problem(tmp_path, capsys):
    missing = tmp_path / "nope" / "output.xml"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(missing) in err
    garbage = tmp_path / "output.xml"
    garbage.write_text("not xml at all")
    assert main([str(garbage)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(garbage) in err
    assert not (tmp_path / "summary.html").exists()


def test_cli_missing_previous_is_an_error(runs, tmp_path, capsys):
    assert main([str(runs["first"]), "--output-dir", str(tmp_path), "--previous", str(tmp_path / "old.xml")]) == 2
    assert "old.xml" in capsys.readouterr().err


def test_a_listener_built_model_without_ids_still_links_its_rows():
    def run(value: float, status: str) -> RunModel:
        figure = Figure(**latency(value))
        message = "too slow" if status == "FAIL" else ""
        test = TestEntry("", "Suite A", "Fast <enough>", "Doc.", status, message, [], [figure], [])
        return RunModel({"Target": "built-in mock", "Dialect": "apex"}, "", "", [test])

    page = render_summary(run(0.04, "FAIL"), previous=run(0.01, "PASS"))
    anchor = "test-suite-a-fast-enough"
    assert f"<tr id='{anchor}'>" in page
    box = regressions_box(page)
    assert box.count(f"href='#{anchor}'") == 2  # the verdict change and the latency figure
    assert "passed \u2192 failed" in box and "+300%" in box
