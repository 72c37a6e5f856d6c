"""Run a Robot suite in a subprocess and read each test's status and message from output.xml.

Robot is run by :func:`apex_faults.runner.run_robot`, the one way this project runs it (the
fault matrix uses it too): its own session, killed as a group on timeout. Every process a test
starts here (robot, a hand-started mock) is started by :func:`apex_faults.processes.popen`:
it gets SIGTERM when the test process dies (a CI timeout, a Ctrl-C that did not reach the
group), and is stopped as a whole group.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apex_faults.catalogue import fragment_matches
from apex_faults.processes import kill_group, popen
from apex_faults.runner import Outcome, SuiteRun, run_robot

ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "ROOT",
    "Outcome",
    "SuiteRun",
    "assert_fails_with",
    "assert_no_secret_in_artefacts",
    "assert_passed_or_inconclusive",
    "hand_started_mock",
    "run_suite",
]


def run_suite(
    suite: str,
    output_dir: Path,
    *,
    variables: dict[str, str] | None = None,
    variable_files: list[str] | None = None,
    env: dict[str, str] | None = None,
    tests: list[str] | None = None,
    timeout: float = 240,
) -> SuiteRun:
    """Run ``suites/<suite>`` of this checkout; ``variable_files`` are relative to the checkout."""
    return run_robot(
        ROOT / "suites" / suite,
        output_dir,
        variables=variables,
        variable_files=[ROOT / path for path in variable_files or []],
        env=env,
        tests=tests,
        timeout=timeout,
        project=ROOT,
    )


@contextmanager
def hand_started_mock(log_file: Path, *extra_args: str) -> Iterator[str]:
    """An ``apex-mock`` started as a user would, on a free port; yields its URL and stops it."""
    process = popen(
        [sys.executable, "-m", "apex_mock", "--port", "0", "--log-file", str(log_file), *extra_args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "libraries")},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("apex-mock listening on ws://127.0.0.1:"), line
        yield line.split()[-1]
    finally:
        gone = kill_group(process)
        if process.stdout is not None:
            process.stdout.close()
        assert gone, f"the hand-started apex-mock (pid {process.pid}) outlived SIGTERM and SIGKILL"


def assert_fails_with(run: SuiteRun, test: str, fragment: str) -> None:
    """``test`` failed, its message containing ``fragment`` (``…`` for any text, as in the catalogue).

    Fragments name a figure, its load and its threshold, never a measured time or ratio.
    """
    outcome = run.outcomes[test]
    assert outcome.status == "FAIL", f"{test!r} must fail but is {outcome.status}: {outcome.message}"
    assert fragment_matches(fragment, outcome.message), f"{test!r}: {fragment!r} not in {outcome.message!r}"


def assert_passed_or_inconclusive(run: SuiteRun, tests: set[str]) -> set[str]:
    """Every one of ``tests`` passed, or ended inconclusive (the load generator could not keep its
    schedule on this machine: not the server's fault); returns the inconclusive ones."""
    judged = {name: o for name, o in run.outcomes.items() if name in tests}
    assert set(judged) == tests, f"not run: {sorted(tests - set(judged))}"
    wrong = {name: f"{o.status}: {o.message}" for name, o in judged.items() if o.status != "PASS" and not o.inconclusive}
    assert not wrong, wrong
    return {name for name, o in judged.items() if o.inconclusive}


def assert_no_secret_in_artefacts(output_dir: Path, *secrets: str) -> None:
    """No token appears in anything written under ``output_dir``: Robot's files, the History,
    metrics, load figures, a fault matrix's reports."""
    kinds = (".html", ".xml", ".jsonl", ".json", ".md")
    artefacts = sorted(p for p in output_dir.rglob("*") if p.is_file() and p.suffix in kinds)
    assert artefacts, f"no artefacts under {output_dir}"
    for path in artefacts:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a token leaked into {path.relative_to(output_dir)}"
