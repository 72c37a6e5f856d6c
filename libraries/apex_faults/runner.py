"""Run Robot suites for the fault matrix, and judge what they say.

Three layers, each usable alone:

- :func:`run_robot` runs one suite file in a subprocess (its own session, killed as a group on
  timeout, dying with this process: see :mod:`apex_faults.processes`) and reads each test's
  status, message and tags from ``output.xml``. The integration
  tests run robot through it too: there is one way to run robot.
- :func:`plan_cells` and :func:`execute` decide which (row, suite) cells run and run them,
  up to ``jobs`` at once, never running an ``exclusive`` suite's cell beside another.
  :class:`Progress` prints a line when a run starts (``[apex-faults] run 7 of 23:
  proxy:drop_responses (suite 3) — elapsed 4m12s, about 9m left``, estimated from the mean
  duration of the finished runs and ``jobs``) and one when it ends; plain lines, no
  carriage returns.
- :func:`judge` turns cell results into a verdict and problems per row, and
  :class:`Matrix` gives the exit code.

A failure is quoted by its failing check (:attr:`Outcome.first_line`, :func:`headline`): when
a test failed several times Robot's message starts ``Several failures occurred:`` and numbers
the failures; the first numbered one is shown, with ``(+N more)`` (:func:`failure_checks`).

A test the library could not judge ends as SKIP with the tag ``inconclusive`` and a message
starting ``Inconclusive:`` (the load generator fell behind its schedule, say). Such a test is
neither passed nor failed: :func:`run_cell` re-runs the cell's inconclusive tests once (robot
``--test``, same fault); what is still inconclusive makes a guarded scenario not caught and a
baseline not green, and the row's verdict ``inconclusive`` (exit code 3 unless something
failed outright).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from robot.api import ExecutionResult
from robot.errors import DataError

from .catalogue import MOCK, FaultMode, Suite, fragment_matches
from .processes import KILL_GRACE_S, kill_group, kill_groups, popen

PASS, FAIL, SKIP, NOT_RUN, NA = "PASS", "FAIL", "SKIP", "NOT RUN", "n/a"
#: How a cell shows a test that ended inconclusive (its Robot status is SKIP).
INCONCLUSIVE_STATUS = "INCONCLUSIVE"
#: The tag and message prefix of an inconclusive test (set by MessagingLibrary).
INCONCLUSIVE_TAG, INCONCLUSIVE_PREFIX = "inconclusive", "Inconclusive:"

GREEN, RED = "green", "red"
CAUGHT, COLLATERAL, MISSED, WRONG_REASON, GAP = "caught", "caught+collateral", "missed", "wrong-reason", "gap"
INCONCLUSIVE = "inconclusive"
VERDICTS = (GREEN, RED, CAUGHT, COLLATERAL, MISSED, WRONG_REASON, GAP, INCONCLUSIVE, NA)

#: Exit codes of a matrix run (see cli.EPILOG).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3
#: How much of robot's console output an error message quotes (its end).
CONSOLE_TAIL_CHARS = 4000
#: The wire protocols a matrix can run in (``apex-faults --dialect``), the default first. Every
#: robot run gets ``-v APEX_DIALECT:<dialect>``: the suites then start the built-in mock in that
#: dialect and speak it (a command-line variable wins over variable files and the environment).
DIALECTS = ("apex", "netra")
DEFAULT_DIALECT = DIALECTS[0]
DIALECT_VARIABLE = "APEX_DIALECT"


# --------------------------------------------------------------------------- running robot


@dataclass(frozen=True)
class Outcome:
    """One test's result: PASS, FAIL, SKIP (or NOT RUN), its message, its id in log.html and its tags."""

    status: str
    message: str = ""
    id: str = ""
    tags: tuple[str, ...] = ()

    @property
    def inconclusive(self) -> bool:
        """A SKIP the library gave because the run could not judge (tag or message says so).

        An ordinary SKIP (an operation the target lacks) is not inconclusive.
        """
        if self.status != SKIP:
            return False
        return any(t.lower() == INCONCLUSIVE_TAG for t in self.tags) or self.message.startswith(INCONCLUSIVE_PREFIX)

    @property
    def checks(self) -> tuple[str, ...]:
        """The failing checks the message reports, one line each (:func:`failure_checks`)."""
        return failure_checks(self.message)

    @property
    def first_line(self) -> str:
        """The line that says what failed: the first failing check, ``(+N more)`` when there are more.

        For an ordinary message its first non-empty line; for Robot's ``Several failures
        occurred:`` the first numbered failure (:func:`headline`). "" without a message.
        """
        return headline(self.message)


# --------------------------------------------------------------------------- failure messages

#: Robot's first line when a test had several failures; numbered failures (``1) ...``) follow.
SEVERAL_FAILURES = "Several failures occurred:"
#: Robot's first lines that only say where the failure happened (the failure follows), and how
#: a check is prefixed then.
WHERE_HEADERS = {
    "Setup failed:": "setup failed",
    "Teardown failed:": "teardown failed",
    "Suite setup failed:": "suite setup failed",
    "Suite teardown failed:": "suite teardown failed",
    "Parent suite setup failed:": "parent suite setup failed",
    "Parent suite teardown failed:": "parent suite teardown failed",
}
#: Between a test's failure and its teardown's: ``<failure>\n\nAlso teardown failed:\n<failure>``.
_ALSO_TEARDOWN = re.compile(r"\n\s*\nAlso ((?:parent suite |suite )?teardown failed):\n")
_HTML_PREFIX = "*HTML*"


def failure_checks(message: str) -> tuple[str, ...]:
    """Each failing check a Robot failure message reports, as its first non-empty line, in order.

    ``Several failures occurred:\n\n1) first\n\n2) second`` gives ``("first", "second")``
    (each numbered failure's first line, whatever follows it); ``Setup failed:\nboom`` gives
    ``("setup failed: boom",)``; a teardown failure after the test's own (``Also teardown
    failed:``) is one more check. Any other message gives its first non-empty line; an empty
    message gives ``()``.
    """
    text = message.strip()
    if text.startswith(_HTML_PREFIX):
        text = text[len(_HTML_PREFIX) :].strip()
    sections = _ALSO_TEARDOWN.split(text)
    checks = list(_section_checks(sections[0]))
    for where, section in zip(sections[1::2], sections[2::2], strict=True):
        checks += [f"{where}: {check}" for check in _section_checks(section)]
    return tuple(checks)


def _section_checks(text: str) -> tuple[str, ...]:
    first, _, rest = text.strip().partition("\n")
    first = first.strip()
    if first in WHERE_HEADERS:
        return tuple(f"{WHERE_HEADERS[first]}: {check}" for check in _section_checks(rest)) or (first,)
    if first != SEVERAL_FAILURES:
        return (first,) if first else ()
    return _numbered_failures(rest) or (first,)


def _numbered_failures(text: str) -> tuple[str, ...]:
    """The first line of each ``1) ...``, ``2) ...`` (each after a blank line), numbered in sequence."""
    text = "\n" + text
    starts, number, position = [], 1, 0
    while (found := re.search(rf"\n[ \t]*\n{number}\) ", text[position:])) is not None:
        starts.append((position + found.start(), position + found.end()))
        number, position = number + 1, position + found.end()
    items = []
    for i, (_, body) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        items.append(next((line.strip() for line in text[body:end].splitlines() if line.strip()), ""))
    return tuple(items)


def headline(message: str, prefer: str | None = None) -> str:
    """The failing check to show for ``message``, with ``(+N more)`` when it reports N more.

    The first check (:func:`failure_checks`), or with ``prefer`` (a catalogue fragment) the
    first check that matches it, when one does.
    """
    checks = failure_checks(message)
    if not checks:
        return ""
    shown = checks[0]
    if prefer is not None:
        shown = next((check for check in checks if fragment_matches(prefer, check)), shown)
    more = len(checks) - 1
    return f"{shown} (+{more} more)" if more else shown


@dataclass
class SuiteRun:
    """What one robot run reported."""

    returncode: int
    outcomes: dict[str, Outcome]
    output_dir: Path
    console: str
    seconds: float = 0.0

    @property
    def failed(self) -> set[str]:
        """The names of the tests that failed."""
        return {name for name, outcome in self.outcomes.items() if outcome.status == FAIL}

    @property
    def passed(self) -> set[str]:
        """The names of the tests that passed."""
        return {name for name, outcome in self.outcomes.items() if outcome.status == PASS}

    @property
    def inconclusive(self) -> set[str]:
        """The names of the tests that ended inconclusive (SKIP with the tag ``inconclusive``)."""
        return {name for name, outcome in self.outcomes.items() if outcome.inconclusive}


class RobotRunError(RuntimeError):
    """Robot did not produce a readable output.xml: it crashed, or was killed on timeout."""

    def __init__(self, message: str, *, returncode: int | None, console: str, seconds: float) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.console = console
        self.seconds = seconds


class RobotTimeout(RobotRunError):
    """Robot ran longer than its timeout; its whole process group was killed."""


@dataclass(frozen=True)
class Completed:
    """A finished (or killed) subprocess."""

    returncode: int
    output: str
    timed_out: bool
    seconds: float


class _Running:
    """The process groups started by this module, so that an interrupt can kill them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen[str]] = set()
        self._stopped = False

    def spawn(self, command: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[str]:
        """Start ``command`` in a session of its own (its own process group), output merged.

        The child gets SIGTERM when this process dies (:func:`apex_faults.processes.popen`).
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"not starting {command[0]}: the run was interrupted")
            process = popen(
                list(command),
                cwd=cwd,
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            self._processes.add(process)
            return process

    def forget(self, process: subprocess.Popen[str]) -> None:
        """The process has ended: no longer ours to kill."""
        with self._lock:
            self._processes.discard(process)

    def kill_all(self, grace: float = KILL_GRACE_S) -> None:
        """End every running group (as :func:`kill_group`, all at once) and refuse to start more."""
        with self._lock:
            self._stopped = True
            processes = list(self._processes)
        kill_groups(processes, grace)

    def reopen(self) -> None:
        """Allow starting processes again (a new matrix run)."""
        with self._lock:
            self._stopped = False


RUNNING = _Running()


def run_process_group(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> Completed:
    """Run ``command`` in its own session; on timeout (or interrupt) kill its whole group.

    The group (robot and the mock it started) gets SIGTERM, then SIGKILL after
    :data:`KILL_GRACE_S`, and is waited for until none of it is left
    (:func:`apex_faults.processes.kill_group`).
    """
    started = time.monotonic()
    process = RUNNING.spawn(command, cwd=cwd, env=env)
    try:
        output, _ = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(process)
        output, timed_out = _drain(process), True
    except BaseException:
        kill_group(process)
        _drain(process)
        raise
    finally:
        RUNNING.forget(process)
    return Completed(process.wait(), output or "", timed_out, time.monotonic() - started)


def _drain(process: subprocess.Popen[str]) -> str:
    """The output of a killed process, unless something that escaped its group keeps the pipe open."""
    try:
        output, _ = process.communicate(timeout=KILL_GRACE_S)
        return output or ""
    except subprocess.TimeoutExpired:
        if process.stdout is not None:
            process.stdout.close()
        return f"(output not read: a process outside the killed group kept it open for {KILL_GRACE_S:g} s)"


def robot_command(
    suite_path: Path,
    output_dir: Path,
    *,
    variables: Mapping[str, str] | None = None,
    variable_files: Iterable[Path | str] | None = None,
    tests: Iterable[str] | None = None,
) -> list[str]:
    """``python -m robot`` for one suite file, with its tests, variables and variable files."""
    command = [sys.executable, "-m", "robot", "--outputdir", str(output_dir), "--console", "dotted"]
    for name in tests or ():
        command += ["--test", exact_pattern(name)]
    for name, value in (variables or {}).items():
        command += ["--variable", f"{name}:{value}"]
    for path in variable_files or ():
        command += ["--variablefile", str(path)]
    command.append(str(suite_path))
    return command


def exact_pattern(name: str) -> str:
    """``name`` as a robot ``--test`` pattern matching only itself (``*``, ``?``, ``[`` escaped)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def robot_environment(project: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``env``, with ``<project>/libraries`` first on PYTHONPATH."""
    environment = {**os.environ, **(env or {})}
    rest = [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join([str(project / "libraries"), *rest])
    return environment


def run_robot(
    suite_path: Path,
    output_dir: Path,
    *,
    variables: Mapping[str, str] | None = None,
    variable_files: Iterable[Path | str] | None = None,
    env: Mapping[str, str] | None = None,
    tests: Iterable[str] | None = None,
    timeout: float = 300.0,
    project: Path | None = None,
) -> SuiteRun:
    """Run one suite file and read each test's outcome from its output.xml.

    Robot runs in ``project`` (default: :meth:`Project.locate`'s root). Raises
    :class:`RobotTimeout` when it outlives ``timeout`` (its process group is killed) and
    :class:`RobotRunError` when it leaves no readable output.xml.
    """
    root = project or Project.locate().root
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / "output.xml"
    output.unlink(missing_ok=True)  # a stale one must not pass for this run's
    command = robot_command(suite_path, output_dir, variables=variables, variable_files=variable_files, tests=tests)
    done = run_process_group(command, cwd=root, env=robot_environment(root, env), timeout=timeout)
    if done.timed_out:
        raise RobotTimeout(
            f"robot timed out after {timeout:g} s on {suite_path.name}; its process group was killed. "
            f"Console output:\n{_tail(done.output)}",
            returncode=done.returncode,
            console=done.output,
            seconds=done.seconds,
        )
    outcomes = read_outcomes(output, done)
    return SuiteRun(done.returncode, outcomes, output_dir, done.output, done.seconds)


def read_outcomes(output: Path, done: Completed) -> dict[str, Outcome]:
    """Each test's status, message and id from ``output``, or RobotRunError naming exit code and output."""
    if not output.exists():
        raise RobotRunError(
            f"robot wrote no output.xml in {output.parent} (exit code {done.returncode}). "
            f"Console output:\n{_tail(done.output)}",
            returncode=done.returncode,
            console=done.output,
            seconds=done.seconds,
        )
    try:
        result = ExecutionResult(str(output))
    except DataError as error:
        raise RobotRunError(
            f"robot's output.xml in {output.parent} is unreadable (exit code {done.returncode}): {error}",
            returncode=done.returncode,
            console=done.output,
            seconds=done.seconds,
        ) from error
    return {
        test.name: Outcome(test.status, test.message, test.id, tuple(str(t) for t in test.tags))
        for test in result.suite.all_tests
    }


def _tail(text: str) -> str:
    return text if len(text) <= CONSOLE_TAIL_CHARS else "…" + text[-CONSOLE_TAIL_CHARS:]


# --------------------------------------------------------------------------- where things are


@dataclass(frozen=True)
class Project:
    """The checkout robot runs in: ``root`` (cwd, ``libraries/`` on PYTHONPATH) and its suites."""

    root: Path
    suites: Path

    @classmethod
    def locate(cls, suites_dir: Path | None = None) -> Project:
        """``suites_dir``'s parent; else the current directory if it has ``suites/``; else this checkout."""
        if suites_dir is not None:
            suites = suites_dir.resolve()
            return cls(suites.parent, suites)
        cwd = Path.cwd()
        root = cwd if (cwd / "suites").is_dir() else Path(__file__).resolve().parents[2]
        return cls(root, root / "suites")

    def suite_path(self, suite: Suite) -> Path:
        """The suite's file; FileNotFoundError naming the directory searched when it is missing."""
        path = self.suites / suite.file
        if not path.is_file():
            raise FileNotFoundError(f"suite {suite.key} ({suite.file}) is not in {self.suites}; use --suites-dir")
        return path


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Cell:
    """One robot run of the matrix: a row's fault against one suite (maybe only some tests)."""

    row: FaultMode
    suite: Suite
    tests: tuple[str, ...] = ()  # () = the whole suite
    runnable: bool = True  # False: a mock fault against a target that is not the built-in mock

    @property
    def expected(self) -> dict[str, str]:
        """Test -> fragment for the tests that must fail in this cell ({} for baselines)."""
        expectation = self.row.expectation(self.suite.key)
        return dict(expectation.fails) if expectation and not self.row.is_baseline else {}

    def runs(self, test: str) -> bool:
        """Whether ``test`` is part of this cell's robot run."""
        return self.runnable and (not self.tests or test in self.tests)

    def directory(self, output: Path) -> Path:
        """Where this cell's robot output goes: ``<output>/runs/<row-slug>/<suite-stem>/``."""
        return output / "runs" / self.row.slug / self.suite.stem


def plan_cells(
    rows: Sequence[FaultMode], suites: Sequence[Suite], *, everywhere: bool = False, mock_available: bool = True
) -> list[Cell]:
    """Every (row, suite) cell, in the order of ``rows`` then ``suites``.

    Baselines and unguarded rows run every suite in full; a guarded row runs the suites of its
    expectations (``only`` the listed tests when given), or with ``everywhere`` every suite in
    full. Without the built-in mock, mock rows' cells are planned but not runnable (n/a).
    """
    cells: list[Cell] = []
    for row in rows:
        runnable = row.is_baseline or row.layer != MOCK or mock_available
        if row.is_baseline or everywhere or not row.guarded:
            cells += [Cell(row, suite, (), runnable) for suite in suites]
        else:
            cells += [
                Cell(row, suite, expectation.only, runnable)
                for suite in suites
                if (expectation := row.expectation(suite.key)) is not None
            ]
    return cells


# --------------------------------------------------------------------------- executing


@dataclass(frozen=True)
class Rerun:
    """A cell's inconclusive tests, run once more (same fault); its outcomes replace the first ones."""

    tests: tuple[str, ...]
    output_dir: Path
    seconds: float = 0.0
    returncode: int | None = None
    error: str | None = None

    def directory_of(self, test: str) -> Path | None:
        """Where ``test``'s latest run is logged: the re-run's directory when it was re-run."""
        return self.output_dir if test in self.tests else None


@dataclass(frozen=True)
class CellResult:
    """What a cell's run reported (``error`` when it timed out or crashed)."""

    cell: Cell
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0
    returncode: int | None = None
    output_dir: Path | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    rerun: Rerun | None = None  # the second run of the tests that were inconclusive, if any

    def outcome(self, test: str) -> Outcome:
        """``test``'s outcome: NOT RUN when the run did not report it, n/a when the cell could not run."""
        if not self.cell.runnable:
            return Outcome(NA)
        return self.outcomes.get(test, Outcome(NOT_RUN))


RunRobot = Callable[..., SuiteRun]


@dataclass(frozen=True)
class Settings:
    """What every cell's run shares."""

    output: Path
    project: Project
    variable_files: tuple[Path, ...] = ()
    jobs: int = 1
    run: RunRobot = run_robot  # replaced by a fake in unit tests
    dialect: str = DEFAULT_DIALECT  # every run's APEX_DIALECT
    #: Which runs draw charts in their logs: ``all``, ``baselines`` (the no-fault runs, whose
    #: summary.html and log.html a stakeholder opens) or ``none`` (APEX_CHARTS=off). Tables,
    #: verdicts and messages are the same either way.
    charts: str = "all"


CHART_CHOICES = ("all", "baselines", "none")


def cell_environment(cell: Cell, settings: Settings) -> dict[str, str]:
    """Environment variables of ``cell``'s runs: ``APEX_CHARTS=off`` where charts are not wanted."""
    wanted = settings.charts == "all" or (settings.charts == "baselines" and cell.row.is_baseline)
    return {} if wanted else {"APEX_CHARTS": "off"}


def cell_variables(cell: Cell, settings: Settings) -> dict[str, str]:
    """The robot ``--variable``s of ``cell``'s runs: its row's fault, and the matrix's dialect."""
    return {**cell.row.robot_variables(), DIALECT_VARIABLE: settings.dialect}


RERUN_DIR = "rerun"


def run_cell(cell: Cell, settings: Settings, progress: Callable[[str], None] | None = None) -> CellResult:
    """Run one cell in a fresh directory; a timeout or crash becomes the result's ``error``.

    Tests that end inconclusive are run once more (only they, ``robot --test``, same fault,
    in ``<cell dir>/rerun/``); their second outcomes replace the first, and the result's
    ``rerun`` says so.
    """
    directory = cell.directory(settings.output)
    shutil.rmtree(directory, ignore_errors=True)
    variables = cell_variables(cell, settings)
    try:
        run = _run(cell, settings, directory, cell.tests)
    except RobotRunError as error:
        return CellResult(cell, {}, error.seconds, error.returncode, directory, variables, str(error))
    first = CellResult(cell, run.outcomes, run.seconds, run.returncode, directory, variables)
    again = tuple(t for t in cell.suite.tests if t in run.inconclusive) + tuple(
        sorted(t for t in run.inconclusive if t not in cell.suite.tests)
    )
    if not again:
        return first
    if progress is not None:
        progress(f"      {cell.row.name} × suite {cell.suite.key}: {len(again)} inconclusive, re-running once: {', '.join(again)}")
    return rerun_inconclusive(first, again, settings)


def rerun_inconclusive(first: CellResult, tests: tuple[str, ...], settings: Settings) -> CellResult:
    """``first`` with ``tests`` run again; their new outcomes replace the inconclusive ones."""
    assert first.output_dir is not None
    directory = first.output_dir / RERUN_DIR
    try:
        run = _run(first.cell, settings, directory, tests)
    except RobotRunError as error:
        rerun = Rerun(tests, directory, error.seconds, error.returncode, str(error))
        return replace(first, rerun=rerun, seconds=first.seconds + error.seconds)
    outcomes = {**first.outcomes, **{t: o for t, o in run.outcomes.items() if t in tests}}
    rerun = Rerun(tests, directory, run.seconds, run.returncode)
    return replace(first, outcomes=outcomes, rerun=rerun, seconds=first.seconds + run.seconds)


def _run(cell: Cell, settings: Settings, directory: Path, tests: Sequence[str]) -> SuiteRun:
    return settings.run(
        settings.project.suite_path(cell.suite),
        directory,
        variables=cell_variables(cell, settings),
        variable_files=settings.variable_files,
        env=cell_environment(cell, settings),
        tests=list(tests) or None,
        timeout=cell.suite.timeout_s,
        project=settings.project.root,
    )


def execute(
    cells: Sequence[Cell],
    settings: Settings,
    progress: Callable[[str], None] = print,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> list[CellResult]:
    """Run every runnable cell and return all results in ``cells``' order.

    Baseline cells run before fault cells. Within each group, cells of non-exclusive suites run
    up to ``settings.jobs`` at once, then each exclusive suite's cell runs alone. On an
    interrupt every running robot process group is killed. ``progress`` gets one line when a
    cell's run starts (which run of how many, the time elapsed and an estimate of the time
    left) and one when it ends (:class:`Progress`).
    """
    results: list[CellResult | None] = [None if c.runnable else CellResult(c) for c in cells]
    runnable = [i for i, c in enumerate(cells) if c.runnable]
    batches: list[tuple[list[int], int]] = []  # (cell indices, jobs), in the order they run
    for baseline in (True, False):
        group = [i for i in runnable if cells[i].row.is_baseline == baseline]
        batches.append(([i for i in group if not cells[i].suite.exclusive], settings.jobs))
        batches.append(([i for i in group if cells[i].suite.exclusive], 1))
    counter = Progress([cells[i] for batch, _ in batches for i in batch], progress, jobs=settings.jobs, clock=clock)
    RUNNING.reopen()
    for indices, jobs in batches:
        _run_batch(cells, indices, jobs, settings, results, counter)
    return [r for r in results if r is not None]


def _run_batch(
    cells: Sequence[Cell],
    indices: Sequence[int],
    jobs: int,
    settings: Settings,
    results: list[CellResult | None],
    counter: Progress,
) -> None:
    if not indices:
        return
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="apex-faults")
    try:
        futures = {pool.submit(_run_counted, cells[i], settings, counter): i for i in indices}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        RUNNING.kill_all()
        raise
    pool.shutdown()


def _run_counted(cell: Cell, settings: Settings, counter: Progress) -> CellResult:
    """Run ``cell`` (in a worker), saying when it starts and ends: the end is counted before the next start."""
    counter.started(cell)
    result = run_cell(cell, settings, counter.note)
    counter.done(result)
    return result


#: How the progress line says the time left before any run has finished.
ESTIMATING = "estimating\u2026"


class Progress:
    """The matrix's console progress: one line when a cell's run starts, one when it ends.

    Start: ``[apex-faults] run 7 of 23: proxy:drop_responses (suite 3) — elapsed 4m12s, about 9m left``
    (``estimating…`` until a run has finished). End: ``[ 5/23] reorder × suite 1: 1 of 7 failed
    (as guarded) 12.3 s``, counting the runs finished.

    The time left is estimated from the mean duration of the finished runs: of the same suite
    run the same way (whole or only some tests) when there is one, else of the same suite, else
    of all. Runs not started count in full, running ones what their estimate says is left of
    them; cells of non-exclusive suites share ``jobs`` workers (never taking less than the
    longest of them), an exclusive suite's cells run one after another.
    """

    def __init__(
        self,
        cells: Sequence[Cell],
        write: Callable[[str], None],
        *,
        jobs: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = len(cells)
        self.count = 0  # runs finished
        self.starts = 0  # runs started
        self.write = write
        self.jobs = max(1, jobs)
        self.clock = clock
        self.began = clock()
        self.pending: list[Cell] = list(cells)  # not started yet
        self.running: list[tuple[Cell, float]] = []  # (cell, when it started)
        self.finished: list[tuple[Cell, float]] = []  # (cell, seconds)
        self.lock = threading.Lock()

    def note(self, line: str) -> None:
        """Print ``line`` as it is (a re-run of a cell's inconclusive tests, say)."""
        with self.lock:
            self.write(line)

    def started(self, cell: Cell) -> None:
        """A cell's run starts: print which run of how many, the time elapsed and the time left."""
        with self.lock:
            now = self.clock()
            mine = next((i for i, c in enumerate(self.pending) if c is cell), None)
            if mine is not None:
                del self.pending[mine]
            self.running.append((cell, now))
            self.starts += 1
            left = self.seconds_left(now)
            estimate = ESTIMATING if left is None else f"about {left_text(left)} left"
            self.write(
                f"[apex-faults] run {self.starts} of {self.total}: {cell.row.name} (suite {cell.suite.key})"
                f" \u2014 elapsed {duration_text(now - self.began)}, {estimate}"
            )

    def done(self, result: CellResult) -> None:
        """A cell's run ended: print how it went (:func:`progress_text`)."""
        with self.lock:
            now = self.clock()
            mine = next((i for i, (c, _) in enumerate(self.running) if c is result.cell), None)
            if mine is not None:
                cell, start = self.running.pop(mine)
                self.finished.append((cell, now - start))
            self.count += 1
            width = len(str(self.total))
            self.write(f"[{self.count:>{width}}/{self.total}] {progress_text(result)}")

    def expected_seconds(self, cell: Cell) -> float | None:
        """How long ``cell``'s run is expected to take: a mean of finished runs (see the class), or None."""
        alike = [
            [s for c, s in self.finished if c.suite.key == cell.suite.key and bool(c.tests) == bool(cell.tests)],
            [s for c, s in self.finished if c.suite.key == cell.suite.key],
            [s for _, s in self.finished],
        ]
        durations = next((d for d in alike if d), None)
        return None if durations is None else sum(durations) / len(durations)

    def seconds_left(self, now: float) -> float | None:
        """The estimated time until every run has finished, or None before any has."""
        if not self.finished:
            return None
        shared: list[float] = []
        alone = 0.0
        work = [(cell, 0.0) for cell in self.pending]
        work += [(cell, now - start) for cell, start in self.running]
        for cell, elapsed in work:
            expected = self.expected_seconds(cell) or 0.0
            remaining = max(expected - elapsed, 0.0)
            if cell.suite.exclusive:
                alone += remaining
            else:
                shared.append(remaining)
        in_parallel = max(sum(shared) / self.jobs, max(shared, default=0.0))
        return in_parallel + alone


def duration_text(seconds: float) -> str:
    """``45s``, ``4m12s``, ``1h03m``."""
    whole = max(0, int(round(seconds)))
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def left_text(seconds: float) -> str:
    """An estimate, coarsely: ``40s`` under a minute, else whole minutes rounded up (``9m``, ``1h05m``)."""
    if seconds < 60:
        return f"{max(1, int(round(seconds)))}s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


CELL_NOTES = {
    GREEN: "green",
    RED: "red",
    CAUGHT: "as guarded",
    COLLATERAL: "with collateral",
    MISSED: "missed",
    WRONG_REASON: "wrong reason",
    GAP: "unnoticed",
    INCONCLUSIVE: "inconclusive",
}


def progress_text(result: CellResult) -> str:
    """``reorder × suite 1: 1 of 7 failed (as guarded) 12.3 s`` for one finished cell."""
    cell = result.cell
    head = f"{cell.row.name} × suite {cell.suite.key}"
    if result.error:
        return f"{head}: {result.error.splitlines()[0]} {result.seconds:.1f} s"
    judged = judge_cell(result)
    statuses = [o.status for o in result.outcomes.values()]
    inconclusive = sum(1 for o in result.outcomes.values() if o.inconclusive)
    skipped = statuses.count(SKIP) - inconclusive
    extra = (f", {skipped} skipped" if skipped else "") + (f", {inconclusive} inconclusive" if inconclusive else "")
    if result.rerun is not None:
        extra += f" (after re-running {len(result.rerun.tests)} inconclusive)"
    note = CELL_NOTES[verdict(cell.row.is_baseline, judged.failures, judged.kinds)]
    return f"{head}: {statuses.count(FAIL)} of {len(statuses)} failed{extra} ({note}) {result.seconds:.1f} s"


# --------------------------------------------------------------------------- judging

BASELINE_FAILED, MISSED_KIND, WRONG_KIND, COLLATERAL_KIND, ERROR_KIND, CATALOGUE_KIND, INCONCLUSIVE_KIND = (
    "baseline-failed",
    "missed",
    "wrong-reason",
    "collateral",
    "error",
    "catalogue",
    "inconclusive",
)
#: Problem kinds that make the exit code 1 whatever the row's verdict.
FATAL_KINDS = frozenset({ERROR_KIND, CATALOGUE_KIND})


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a row, as a sentence; ``kind`` drives the verdict."""

    kind: str
    text: str


@dataclass(frozen=True)
class CellJudgement:
    """How many tests failed in a cell and what was wrong there."""

    failures: int
    problems: tuple[Problem, ...]

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of problem found."""
        return frozenset(p.kind for p in self.problems)


def judge_cell(result: CellResult) -> CellJudgement:
    """Compare a cell's outcomes with what its row expects there."""
    cell, where = result.cell, f"suite {result.cell.suite.key}"
    problems: list[Problem] = []
    if result.error:
        problems.append(Problem(ERROR_KIND, f"{where}: {result.error.splitlines()[0]}"))
    if result.rerun is not None and result.rerun.error:
        problems.append(Problem(ERROR_KIND, f"{where}, re-run of the inconclusive tests: {result.rerun.error.splitlines()[0]}"))
    expected = cell.expected
    for test in cell.suite.tests:
        problem = _test_problem(cell, test, result.outcome(test), expected.get(test), _rerun_note(result, test, where))
        if problem is not None:
            problems.append(problem)
    unknown = sorted(set(result.outcomes) - set(cell.suite.tests))
    problems += [
        Problem(CATALOGUE_KIND, f"{where} ran {name!r}, which the catalogue does not list (update catalogue.py)")
        for name in unknown
    ]
    failures = sum(1 for o in result.outcomes.values() if o.status == FAIL)
    return CellJudgement(failures, tuple(problems))


def _rerun_note(result: CellResult, test: str, where: str) -> str:
    """``suite 3`` or, for a test that was re-run, ``suite 3 (re-run once)``."""
    return f"{where} (re-run once)" if result.rerun is not None and test in result.rerun.tests else where


def _test_problem(cell: Cell, test: str, outcome: Outcome, fragment: str | None, where: str) -> Problem | None:
    if fragment is not None:
        return _expected_test_problem(cell, test, outcome, fragment, where)
    if outcome.inconclusive and cell.row.is_baseline:
        return Problem(INCONCLUSIVE_KIND, f"{where}, {test!r} was inconclusive, so not green: {outcome.first_line}")
    if outcome.status != FAIL:
        return None
    if cell.row.is_baseline:
        return Problem(BASELINE_FAILED, f"{where}, {test!r} failed: {outcome.first_line}")
    return Problem(COLLATERAL_KIND, f"{where}, {test!r} failed too (not guarded by this fault): {outcome.first_line}")


def _expected_test_problem(cell: Cell, test: str, outcome: Outcome, fragment: str, where: str) -> Problem | None:
    if outcome.inconclusive:
        return Problem(
            INCONCLUSIVE_KIND,
            f"{where}, {test!r} was inconclusive under {cell.row.name}, so not caught: {outcome.first_line}",
        )
    if outcome.status == FAIL:
        if fragment_matches(fragment, outcome.message):
            return None
        return Problem(
            WRONG_KIND,
            f"{where}, {test!r} failed, but its message lacks the expected {fragment!r}; it said: {outcome.first_line}",
        )
    how = {PASS: "passed", SKIP: f"was skipped ({outcome.first_line})", NOT_RUN: "did not run"}[outcome.status]
    return Problem(MISSED_KIND, f"{where}, {test!r} must fail under {cell.row.name} but {how}")


def verdict(baseline: bool, failures: int, kinds: Iterable[str]) -> str:
    """The verdict of a row (or cell) from its failure count and kinds of problem."""
    kinds = frozenset(kinds)
    if baseline:
        if failures or kinds & (FATAL_KINDS | {BASELINE_FAILED}):
            return RED
        return INCONCLUSIVE if INCONCLUSIVE_KIND in kinds else GREEN
    if failures == 0 and INCONCLUSIVE_KIND not in kinds:
        return GAP
    ranked = ((MISSED_KIND, MISSED), (WRONG_KIND, WRONG_REASON), (INCONCLUSIVE_KIND, INCONCLUSIVE), (COLLATERAL_KIND, COLLATERAL))
    for kind, outcome in ranked:
        if kind in kinds:
            return outcome
    return CAUGHT


@dataclass(frozen=True)
class RowResult:
    """A row's cells (in suite order), verdict and problems."""

    fault: FaultMode
    cells: tuple[CellResult, ...]
    verdict: str
    problems: tuple[Problem, ...]

    @property
    def guarded(self) -> bool:
        """Whether some cell of this run expects a failure (the row is judged against its guard)."""
        return any(r.cell.expected for r in self.cells)

    def cell(self, suite_key: str) -> CellResult | None:
        """This row's result for suite ``suite_key``, or None when it had no cell there."""
        return next((r for r in self.cells if r.cell.suite.key == suite_key), None)

    @property
    def failing(self) -> bool:
        """Whether this row makes the exit code 1 (``--strict`` aside)."""
        if any(p.kind in FATAL_KINDS for p in self.problems):
            return True
        if self.fault.is_baseline:
            return self.verdict == RED
        return self.guarded and self.verdict in (MISSED, WRONG_REASON, GAP)


def judge_row(fault: FaultMode, results: Sequence[CellResult]) -> RowResult:
    """One verdict for a row over all its cells."""
    if results and not any(r.cell.runnable for r in results):
        return RowResult(fault, tuple(results), NA, ())
    judgements = [judge_cell(r) for r in results]
    problems = tuple(p for j in judgements for p in j.problems)
    failures = sum(j.failures for j in judgements)
    inconclusive = any(p.kind == INCONCLUSIVE_KIND for p in problems)
    if failures == 0 and not fault.is_baseline and not inconclusive:
        suites = ", ".join(r.cell.suite.key for r in results)
        problems += (Problem(GAP, f"no test failed in suite(s) {suites}: the fault went unnoticed"),)
    kinds = {p.kind for p in problems}
    return RowResult(fault, tuple(results), verdict(fault.is_baseline, failures, kinds), problems)


def judge(results: Sequence[CellResult]) -> tuple[RowResult, ...]:
    """Group results by row (first-seen order) and judge each row."""
    by_row: dict[str, list[CellResult]] = {}
    for result in results:
        by_row.setdefault(result.cell.row.name, []).append(result)
    return tuple(judge_row(cells[0].cell.row, cells) for cells in by_row.values())


@dataclass(frozen=True)
class Matrix:
    """A whole fault matrix run: what ran, the verdicts, and how it was invoked."""

    suites: tuple[Suite, ...]
    rows: tuple[RowResult, ...]
    strict: bool = False
    command: tuple[str, ...] = ()
    started: datetime | None = None
    output: Path | None = None
    not_selected: tuple[str, ...] = ()  # rows whose suites were all left out
    dialect: str = DEFAULT_DIALECT  # the wire protocol every run spoke (APEX_DIALECT)

    @property
    def exit_code(self) -> int:
        """0 all well; 1 a red baseline, a guarded row not caught, a timed-out or crashed cell;
        else 3 when a row is inconclusive (still, after its re-run)."""
        for row in self.rows:
            if row.failing or (self.strict and row.guarded and row.verdict == COLLATERAL):
                return EXIT_FAILED
        if any(row.verdict == INCONCLUSIVE for row in self.rows):
            return EXIT_INCONCLUSIVE
        return EXIT_OK

    @property
    def baselines(self) -> tuple[RowResult, ...]:
        """The baseline rows."""
        return tuple(r for r in self.rows if r.fault.is_baseline)

    @property
    def faults(self) -> tuple[RowResult, ...]:
        """The fault rows (not baselines)."""
        return tuple(r for r in self.rows if not r.fault.is_baseline)
