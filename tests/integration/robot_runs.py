"""Run a Robot suite in a subprocess and read each test's status and message from output.xml.

Robot is run by :func:`apex_faults.runner.run_robot`, the one way this project runs it (the
fault matrix uses it too): its own session, killed as a group on timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from apex_faults.runner import Outcome, SuiteRun, run_robot

ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "ROOT",
    "Outcome",
    "SuiteRun",
    "assert_no_secret_in_artefacts",
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
    process = subprocess.Popen(
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
        process.terminate()
        process.wait(10)


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
