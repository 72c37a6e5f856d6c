"""summary.html as a product owner meets it: a run, then a second run after a deliberate slowdown.

The same output directory twice (as ``robot --outputdir results suites/`` is run day after day):
the first summary has nothing to compare with; the second, against a mock that answers every
message 1.2 s late (``APEX_MOCK_FAULTS:slow``), flags the latency's regression and the
guarantee that broke, marks it in the test's charts, names the target and dialect, and shows in a real browser with every chart
drawn. ``apex-summary`` rebuilds the same page from output.xml.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys

import pytest
from apex_faults.catalogue import Streams, Throughput, suite
from MessagingLibrary.summary import load_output_xml

from .browser import check_pages_in_browser, require_browser
from .robot_runs import ROOT, run_suite

pytestmark = pytest.mark.suite

LATENCY = Throughput.LATENCY


def _regressions(page: str) -> str:
    """The text of the page's 'Changes since the last run' box."""
    box = re.search(r"<div class='box[^']*' id='regressions'>(.*?)</div>", page, re.S)
    assert box, "summary.html has no 'changes since the last run' box"
    return html.unescape(re.sub(r"<[^>]+>", " ", box.group(1)))


def test_a_slowdown_shows_as_a_regression_in_the_next_runs_summary(tmp_path):
    require_browser()
    results = tmp_path / "results"
    first = run_suite(suite("3").file, results, tests=[LATENCY])
    if first.outcomes[LATENCY].status != "PASS":
        pytest.skip(f"the first run could not be judged on this machine: {first.outcomes[LATENCY].message}")
    summary = (results / "summary.html").read_text(encoding="utf-8")
    assert "No earlier run to compare with" in summary
    assert "built-in mock" in summary and "apex" in summary

    second = run_suite(suite("3").file, results, tests=[LATENCY], variables={"APEX_MOCK_FAULTS": "slow"})
    assert second.outcomes[LATENCY].status == "FAIL", second.outcomes[LATENCY].message
    summary = (results / "summary.html").read_text(encoding="utf-8")
    box = _regressions(summary)
    assert "Regressions since the last run" in box and "different target" not in box, box
    assert "latency p50 of load 'latency'" in box and LATENCY in box, box
    assert "Faults" in summary and "slow" in summary  # the header says what this run tested
    # The failed test's charts mark what failed (the latency spectrum's p50 threshold).
    output = (results / "output.xml").read_text(encoding="utf-8")
    assert "data-failed=&quot;true&quot;" in output or 'data-failed="true"' in output

    check_pages_in_browser(
        [results / "summary.html", results / "log.html", results / "report.html"],
        tmp_path / "browser",
        min_charts={"summary.html": 2, "log.html": 2},
    )

    # Rebuilt from output.xml alone (no history: nothing to compare with), the same guarantees.
    rebuilt = tmp_path / "rebuilt"
    done = subprocess.run(
        [sys.executable, "-m", "MessagingLibrary.summary", str(results / "output.xml"),
         "--output-dir", str(rebuilt), "--no-history"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    page = (rebuilt / "summary.html").read_text(encoding="utf-8")
    assert LATENCY in page and "apex-chart" in page and "FAILED" in page.upper()


def test_a_percentile_on_too_few_runs_is_inconclusive_with_its_count_everywhere(tmp_path):
    """Suite 4's steady load shortened to 1 s (20 runs): its p95s cannot be judged, and the test
    says so instead of passing; the table and the summary show the count."""
    results = tmp_path / "results"
    run = run_suite(suite("4").file, results, tests=[Streams.STEADY], variables={"STEADY_DURATION": "1 s"})
    outcome = run.outcomes[Streams.STEADY]
    assert outcome.status == "SKIP" and outcome.inconclusive, outcome.message
    assert "time to first event p95 of load 'steady' rests on 20 samples, too few to support p95" in outcome.message
    assert "needs at least 72" in outcome.message
    model = load_output_xml(results / "output.xml")
    test = next(t for t in model.tests if t.name == Streams.STEADY)
    assert "| time to first event p95 of load 'steady' |" in test.doc and "| INCONCLUSIVE |" in test.doc
    figure = next(f for f in test.figures if f.key == "time to first event p95 of load 'steady'")
    assert (figure.samples, figure.verdict) == (20, "INCONCLUSIVE")
    summary = (results / "summary.html").read_text(encoding="utf-8")
    assert "inconclusive" in summary.lower() and "rests on 20 samples" in html.unescape(summary)
