"""The browser check of HTML pages (``browser.py``, ``robot/browser/report_pages.robot``) works
and can fail: synthetic pages in headless Chromium, each broken in one way, and a real Robot
log whose chart is inside a keyword (shown only once the log is expanded).

Without Chromium, chromedriver or SeleniumLibrary these tests skip, except under CI (the
environment variable ``CI`` set), where they fail: CI must run the browser check.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from apex_faults.runner import run_robot

from . import browser
from .browser import check_pages_in_browser, require_browser
from .robot_runs import ROOT

CHART = (
    '<svg class="apex-chart" id="{id}" width="320" height="160" aria-label="{label}" {extra}>'
    '<rect x="10" y="40" width="60" height="110" fill="steelblue"/>'
    '<path d="M 80 150 L 140 20 L 200 90 L 300 30" stroke="darkred" fill="none"/>'
    '<text x="10" y="20">{label}</text></svg>'
)


def _chart(chart_id: str, label: str, extra: str = "") -> str:
    return CHART.format(id=chart_id, label=label, extra=extra)


def _page(path: Path, body: str, *, head: str = "", title: str = "Apex summary") -> Path:
    head = f"<meta charset='utf-8'><title>{title}</title>{head}"
    path.write_text(f"<!doctype html><html><head>{head}</head><body>{body}</body></html>")
    return path


@pytest.fixture
def needs_browser() -> None:
    require_browser()


def test_a_page_with_two_drawn_charts_passes_and_leaves_a_screenshot(tmp_path, needs_browser):
    page = _page(tmp_path / "summary.html", _chart("latency", "Latency p95") + _chart("throughput", "Messages/s"))

    check_pages_in_browser([page], tmp_path / "browser", min_charts={"summary.html": 2})

    shot = tmp_path / "browser" / "page-1-summary.png"
    assert shot.is_file() and shot.stat().st_size > 1000, sorted(p.name for p in (tmp_path / "browser").iterdir())
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_fewer_charts_than_the_minimum_fail(tmp_path, needs_browser):
    page = _page(tmp_path / "matrix.html", _chart("verdicts", "Verdicts"))

    with pytest.raises(AssertionError) as failure:
        check_pages_in_browser([page], tmp_path / "browser", min_charts={"matrix.html": 2})

    assert "matrix.html: 1 chart problem(s)" in str(failure.value)
    assert "1 chart(s) (.apex-chart), expected at least 2" in str(failure.value)


def test_charts_of_no_size_fail_naming_each_chart(tmp_path, needs_browser):
    page = _page(
        tmp_path / "summary.html",
        _chart("shown", "Shown")
        + _chart("hidden", "Hidden latency", 'style="display:none"')
        + '<svg class="apex-chart" id="flat" width="0" height="160"><rect width="10" height="10"/></svg>',
    )

    with pytest.raises(AssertionError) as failure:
        check_pages_in_browser([page], tmp_path / "browser")

    message = str(failure.value)
    assert "summary.html: 2 chart problem(s)" in message, message
    assert 'chart 2 <svg#hidden> "Hidden latency": not visible' in message, message
    assert "chart 3 <svg#flat>: box 0x160 px, needs more than 20x20" in message, message
    assert "#shown" not in message, message
    assert (tmp_path / "browser" / "page-1-summary.png").is_file(), "a failing page still leaves its screenshot"


def test_a_broken_image_fails_naming_it(tmp_path, needs_browser):
    broken = '<img id="logo" src="missing.png" alt="logo">'
    page = _page(tmp_path / "summary.html", _chart("latency", "Latency") + broken)

    with pytest.raises(AssertionError) as failure:
        check_pages_in_browser([page], tmp_path / "browser")

    message = str(failure.value)
    assert "#logo missing.png: did not load (naturalWidth 0)" in message, message
    assert "missing.png - Failed to load resource: net::ERR_FILE_NOT_FOUND" in message, message


def test_a_resource_from_the_network_fails(tmp_path, needs_browser):
    page = _page(
        tmp_path / "summary.html",
        _chart("latency", "Latency"),
        head='<script src="http://example.invalid/x.js"></script>',
    )

    with pytest.raises(AssertionError) as failure:
        check_pages_in_browser([page], tmp_path / "browser")

    message = str(failure.value)
    assert "resource(s) from the network" in message, message
    assert "script http://example.invalid/x.js" in message, message
    assert "error(s) in the browser console" in message, message


@pytest.mark.parametrize("split", [False, True], ids=["log", "split-log"])
def test_a_robot_log_is_expanded_so_charts_inside_keywords_are_checked(tmp_path, needs_browser, split):
    """A chart logged (as HTML) inside a nested keyword is not in the page until the log is
    expanded; with a minimum of two charts the check passes only if it expanded the log. A split
    log (``--splitlog``) loads each test's keywords from a file of its own when it is opened. The
    report, not a log, is checked as it is."""
    svg = _chart("inner", "Inner chart")
    standalone = _chart("pic", "Picture").replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ')
    img = base64.b64encode(standalone.encode()).decode()
    suite = tmp_path / "charts.robot"
    suite.write_text(
        "*** Test Cases ***\nCharted\n    Outer\n\n*** Keywords ***\nOuter\n    Inner\n\nInner\n"
        f"    Log    {svg}    html=True\n"
        f'    Log    <img class="apex-chart" alt="picture" src="data:image/svg+xml;base64,{img}">    html=True\n'
    )
    options = {"ROBOT_OPTIONS": "--splitlog" if split else ""}
    run = run_robot(suite, tmp_path / "run", env=options, timeout=60, project=ROOT)
    assert run.passed == {"Charted"}, run.console
    assert (tmp_path / "run" / "log-1.js").exists() == split

    log, report = tmp_path / "run" / "log.html", tmp_path / "run" / "report.html"
    check_pages_in_browser([log, report], tmp_path / "browser", min_charts={"log.html": 2})

    assert (tmp_path / "browser" / "page-1-log.png").is_file()
    assert (tmp_path / "browser" / "page-1-log-expanded.png").is_file()
    assert (tmp_path / "browser" / "page-2-report.png").is_file()
    assert not (tmp_path / "browser" / "page-2-report-expanded.png").exists(), "a report is not a log: not expanded"


def test_without_a_browser_the_check_skips_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(browser, "browser_available", lambda: "/usr/bin/chromium missing")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium missing"):
        require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser check"):
        require_browser()
