"""Run a Robot suite in a subprocess and read each test's status and message from output.xml."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from robot.api import ExecutionResult, ResultVisitor

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Outcome:
    status: str
    message: str


@dataclass
class SuiteRun:
    returncode: int
    outcomes: dict[str, Outcome]
    output_dir: Path
    console: str

    @property
    def failed(self) -> set[str]:
        return {name for name, outcome in self.outcomes.items() if outcome.status == "FAIL"}

    @property
    def passed(self) -> set[str]:
        return {name for name, outcome in self.outcomes.items() if outcome.status == "PASS"}


class _Collector(ResultVisitor):
    def __init__(self) -> None:
        self.outcomes: dict[str, Outcome] = {}

    def visit_test(self, test) -> None:
        self.outcomes[test.name] = Outcome(test.status, test.message)


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
    command = [sys.executable, "-m", "robot", "--outputdir", str(output_dir), "--console", "dotted"]
    for name in tests or []:
        command += ["--test", name]
    for name, value in (variables or {}).items():
        command += ["--variable", f"{name}:{value}"]
    for path in variable_files or []:
        command += ["--variablefile", str(ROOT / path)]
    command.append(str(ROOT / "suites" / suite))
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "libraries")] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    completed = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = output_dir / "output.xml"
    if not output.exists():
        raise AssertionError(f"robot wrote no output.xml (exit {completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    collector = _Collector()
    ExecutionResult(str(output)).visit(collector)
    return SuiteRun(completed.returncode, collector.outcomes, output_dir, completed.stdout + completed.stderr)


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


def assert_fails_exactly(run: SuiteRun, fault: str, expected: dict[str, str], every_test: set[str]) -> None:
    """Under ``fault``, exactly the ``expected`` tests failed, each message containing its fragment."""
    assert run.failed == set(expected), (
        f"under {fault}: failed {sorted(run.failed)}, expected {sorted(expected)}; messages: "
        + repr({name: o.message[:300] for name, o in run.outcomes.items() if o.status == "FAIL"})
    )
    assert run.passed == every_test - set(expected)
    for test, fragment in expected.items():
        assert fragment in run.outcomes[test].message, f"{fault} / {test}: {run.outcomes[test].message[:500]}"


def assert_no_secret_in_artefacts(run: SuiteRun, *secrets: str) -> None:
    """No token appears in anything the run wrote: Robot's files, the History, metrics, load figures."""
    kinds = (".html", ".xml", ".jsonl", ".json")
    artefacts = sorted(p for p in run.output_dir.rglob("*") if p.is_file() and p.suffix in kinds)
    assert artefacts, f"no artefacts under {run.output_dir}"
    for path in artefacts:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a token leaked into {path.relative_to(run.output_dir)}"
