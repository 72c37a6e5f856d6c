"""Check the project's HTML pages in a real browser: ``robot/browser/report_pages.robot``.

Headless Chromium from Debian's packages (``.ci/install-browser`` installs it), driven by
SeleniumLibrary, opens each page and checks that it loads, that nothing on it fails to load or
comes from the network, that the browser console shows no error, and that every chart
(``.apex-chart``) is visible, of some size and drawn; a Robot ``log.html`` is expanded first.
Screenshots of every page are left in the output directory.

From a test::

    from .browser import check_pages_in_browser, require_browser

    def test_summary_page_shows_its_charts(tmp_path):
        require_browser()  # skips without a browser, fails instead under CI
        ...
        check_pages_in_browser([out / "log.html", out / "summary.html"], tmp_path / "browser",
                               min_charts={"summary.html": 2})
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from apex_faults.runner import run_robot

from .robot_runs import ROOT

SUITE = ROOT / "tests" / "integration" / "robot" / "browser" / "report_pages.robot"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: A run's time limit: robot and the browser start in a few seconds; a page takes a second or
#: two, but a big Robot log needs up to the suite's EXPAND_TIMEOUT (120 s) to be expanded.
START_TIMEOUT_S, PAGE_TIMEOUT_S = 60.0, 150.0

__all__ = ["SUITE", "browser_available", "check_pages_in_browser", "require_browser"]


def browser_available() -> str:
    """"" when the browser check can run here, else why not (what to install)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} missing: run .ci/install-browser (Debian's chromium, chromium-driver)"
    if importlib.util.find_spec("SeleniumLibrary") is None:
        return "robotframework-seleniumlibrary is not installed: pip install -e '.[test]'"
    return ""


def require_browser() -> None:
    """Skip the calling test when the browser check cannot run here; fail it instead when the
    environment variable ``CI`` is set (CI must run the browser check)."""
    reason = browser_available()
    if not reason:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser check, but {reason}")
    pytest.skip(reason)


def check_pages_in_browser(
    pages: list[Path],
    output: Path,
    *,
    min_charts: dict[str, int] | None = None,
    timeout: float | None = None,
) -> None:
    """Open every page of ``pages`` in headless Chromium and check it (``report_pages.robot``).

    ``output`` is the robot run's output directory: its log, report, the variable file and a
    screenshot of every page (``page-<n>-<name>.png``, ``-expanded`` for a Robot log once
    expanded). ``min_charts`` gives the least number of charts a page must show, keyed by the
    page's file name (``summary.html``) or its path as given. ``timeout`` (seconds) defaults to
    a minute plus two and a half per page.

    Raises AssertionError with robot's failure messages when a check fails;
    :class:`apex_faults.runner.RobotTimeout` when robot outlives ``timeout`` (its process group,
    the browser with it, is killed) and :class:`~apex_faults.runner.RobotRunError` when it leaves
    no readable output.xml.
    """
    if not pages:
        raise ValueError("no pages to check")
    output = Path(output).resolve()  # robot runs in the checkout, not here
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob("page-*.png"):
        stale.unlink()  # a screenshot of an earlier run must not pass for this one's
    variables = output / "pages.json"
    paths = [str(Path(page).resolve()) for page in pages]
    minimums = {_page_key(key): int(count) for key, count in (min_charts or {}).items()}
    unknown = sorted(key for key in minimums if key not in paths and key not in {Path(p).name for p in paths})
    if unknown:
        raise ValueError(f"min_charts names {unknown}, none of the pages {paths}")
    settings = {"PAGES": paths, "MIN_CHARTS": minimums}
    variables.write_text(json.dumps(settings, indent=2))
    run = run_robot(
        SUITE,
        output,
        variable_files=[variables],
        env={"SE_OFFLINE": "true"},
        timeout=timeout if timeout is not None else START_TIMEOUT_S + PAGE_TIMEOUT_S * len(pages),
        project=ROOT,
    )
    if run.outcomes and run.returncode == 0 and all(o.status == "PASS" for o in run.outcomes.values()):
        return
    failures = [f"{name} [{o.status}]: {o.message}" for name, o in run.outcomes.items() if o.status != "PASS"]
    if not failures:
        failures = [f"robot exited {run.returncode} having run {len(run.outcomes)} test(s):\n{run.console[-2000:]}"]
    shots = ", ".join(sorted(p.name for p in output.glob("page-*.png"))) or "none"
    raise AssertionError(
        f"the browser check of {', '.join(Path(p).name for p in pages)} failed "
        f"(log: {output / 'log.html'}; screenshots: {shots}):\n" + "\n".join(failures)
    )


def _page_key(key: str | Path) -> str:
    """A ``min_charts`` key as the suite looks it up: a bare file name as it is, a path resolved."""
    return str(key) if Path(key).name == str(key) else str(Path(key).resolve())
