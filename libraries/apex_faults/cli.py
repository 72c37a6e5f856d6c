"""``apex-faults``: run the suites once per fault mode and write the fault matrix.

Exit codes (also in ``--help``):

- 0: the baselines are green and every guarded fault row is caught (or caught+collateral);
- 1: a baseline is red, a guarded row is missed, wrong-reason or gap, a run timed out or
  crashed; with ``--strict`` also a caught+collateral row;
- 2: usage error: an unknown suite or fault, a missing file, or a selection that runs no cell
  (``--suite 2 --fault reorder``: reorder is guarded on suites 1 and 3 only), said in one line;
- 3: nothing failed, but a row is inconclusive: a scenario deciding it could not be judged
  (the load generator fell behind its schedule), also when run a second time;
- 130 / 143: interrupted by SIGINT / SIGTERM; every robot process group was killed, no report.

While the matrix runs, stdout gets one line when each run starts (which run of how many, the
time elapsed and an estimate of the time left: ``[apex-faults] run 7 of 23:
proxy:drop_responses (suite 3) — elapsed 4m12s, about 9m left``) and one when it ends
(:class:`apex_faults.runner.Progress`); then the summary and where the reports are.

Every robot the matrix starts is in a process group of its own and gets SIGTERM when this
process dies (``apex_faults.processes``); a timeout, SIGINT or SIGTERM ends each group
(SIGTERM, then SIGKILL) and waits until it is gone.
"""

from __future__ import annotations

import argparse
import ast
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

from .catalogue import CATALOGUE, LAYERS, Catalogue, FaultMode, Suite, rows_of_layer
from .report import rerun_text, reruns, summary_line, write_report
from .runner import (
    CAUGHT,
    DEFAULT_DIALECT,
    CHART_CHOICES,
    DIALECTS,
    EXIT_USAGE,
    GREEN,
    NA,
    Cell,
    Matrix,
    Project,
    RunRobot,
    Settings,
    execute,
    judge,
    plan_cells,
    run_robot,
)

DEFAULT_OUTPUT = Path("results/fault-matrix")

EPILOG = """\
rows:
  none and proxy are the baselines (the mock without a fault, and every connection through
  the fault proxy without a fault); they always run first, every selected suite in full.
  Each fault row runs the suites where the catalogue expects it to be caught (only the
  expected scenarios where the catalogue says so), or every selected suite with --everywhere.

verdicts:
  green / red          a baseline with no failed test / with at least one
  caught               every guarding scenario failed with its expected message, nothing else failed
  caught+collateral    as caught, and other scenarios failed too
  missed               a guarding scenario did not fail (passed, skipped or did not run)
  wrong-reason         a guarding scenario failed, but without its expected message
  gap                  no scenario failed at all: the fault went unnoticed
  inconclusive         a deciding scenario (a guarded one, or any in a baseline) ended SKIP
                       with the tag inconclusive (the load generator fell behind its schedule)
                       and again when re-run once: not caught, not green
  n/a                  a mock fault while the target is not the built-in mock (a --variablefile
                       such as resources/variables/staging.py sets APEX_TARGET to another server)

dialect:
  --dialect netra runs every cell in the real platform's wire protocol: each robot run gets
  -v APEX_DIALECT:netra, so the suites start the built-in mock in that dialect (apex-mock
  --dialect netra) and the library speaks it. Every run gets -v APEX_DIALECT:<dialect>, the
  default apex too (a command-line variable wins over --variablefile and the environment).
  The report's title, heading and matrix.json ("dialect") say which dialect ran.

progress:
  While it runs, a line on stdout when each run starts, and one when it ends:
    [apex-faults] run 7 of 23: proxy:drop_responses (suite 3) — elapsed 4m12s, about 9m left
    [ 7/23] proxy:drop_responses × suite 3: 1 of 10 failed (as guarded) 81.2 s
  The time left is estimated from the mean duration of the finished runs (of the same suite
  where there is one) and --jobs; until a run has finished it says "estimating…".

reports:
  matrix.html, matrix.md and matrix.json say the same. Cells are words (pass, failed as
  expected, fail: unexpected, fail: wrong reason, pass: missed!, inconclusive, skip, not run,
  n/a), coloured in matrix.html: a guarded scenario failing as expected is calm blue, a caught
  row green, missed / wrong-reason / gap / a red baseline red, collateral amber. A failure is
  shown by its failing check: for Robot's "Several failures occurred:" the first numbered
  failure, with "(+N more)".

re-runs:
  A test that ends inconclusive is run once more (only the inconclusive tests of the cell, with
  robot --test, same fault, into <cell>/rerun/); its second outcome counts. The report lists
  every re-run.

exit codes:
  0    the baselines are green and every guarded fault row is caught (or caught+collateral)
  1    a baseline is red, a guarded row is missed, wrong-reason or gap, a run timed out or
       crashed; with --strict also a caught+collateral row
  2    usage error (unknown suite or fault, missing file), or a selection that runs no cell
       (a fault not guarded on the selected suites: add --everywhere)
  3    nothing of exit code 1, but a row is inconclusive after its re-run
  130  interrupted (SIGINT); 143 terminated (SIGTERM): robot process groups killed, no report
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``apex-faults``."""
    parser = argparse.ArgumentParser(
        prog="apex-faults",
        description="Run Robot suites against the built-in mock once per fault mode (and once with none) "
        "and write a matrix: rows are fault modes, columns scenarios, cells passed/failed/skipped/not run.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--suite", action="append", default=[], metavar="S", help="suite to run: 1, 01, its file or path (repeatable; default all)")
    add("--fault", action="append", default=[], metavar="F", help="fault row to run, as --list names it (repeatable; default all of --layer)")
    add("--layer", choices=(*LAYERS, "all"), default="all", help="which fault rows to run (default all)")
    add("--everywhere", action="store_true", help="run every fault row against every selected suite in full")
    add("--strict", action="store_true", help="exit 1 on caught+collateral too")
    add("--jobs", type=_positive_int, default=1, metavar="N", help="cells run at once (suite 3 always alone; default 1)")
    add("--output", type=Path, default=DEFAULT_OUTPUT, metavar="DIR", help=f"where to write (default {DEFAULT_OUTPUT})")
    add("--dialect", choices=DIALECTS, default=DEFAULT_DIALECT,
        help=f"wire protocol of every run: -v APEX_DIALECT:<dialect> (default {DEFAULT_DIALECT}; see dialect below)")
    add("--variablefile", action="append", default=[], metavar="FILE", help="robot variable file for every run (repeatable); one that sets APEX_TARGET to another server makes mock rows n/a")
    add("--charts", choices=CHART_CHOICES, default="all",
        help="which runs draw charts in their logs: all (default), baselines (the no-fault runs) or none; "
        "verdicts are the same, a matrix runs faster without")
    add("--suites-dir", type=Path, metavar="DIR", help="directory of the .robot files (default: suites/ of the project)")
    add("--list", action="store_true", help="print the catalogue and exit")
    return parser


# --------------------------------------------------------------------------- selection


def select_suites(catalogue: Catalogue, selectors: Sequence[str]) -> tuple[Suite, ...]:
    """The selected suites in catalogue order (all without selectors); ValueError for an unknown one."""
    if not selectors:
        return catalogue.suites
    chosen = {catalogue.suite(selector).key for selector in selectors}
    return tuple(s for s in catalogue.suites if s.key in chosen)


def select_faults(catalogue: Catalogue, names: Sequence[str], layer: str) -> tuple[FaultMode, ...]:
    """The selected non-baseline rows in catalogue order; ValueError for an unknown or off-layer one."""
    rows = rows_of_layer(catalogue.faults, layer)
    if not names:
        return rows
    requested = [catalogue.fault(name) for name in names]
    names_of_layer = {row.name for row in rows}
    for row in requested:
        if not row.is_baseline and row.name not in names_of_layer:
            raise ValueError(f"fault {row.name!r} is a {row.layer} fault, but --layer {layer} selects only {layer} faults")
    chosen = {row.name for row in requested}
    return tuple(row for row in rows if row.name in chosen)


def resolve_variable_files(paths: Sequence[str], project: Project) -> tuple[Path, ...]:
    """Each file as given (relative to the current directory) or relative to the project root."""
    resolved = []
    for text in paths:
        candidates = [Path(text).resolve(), (project.root / text).resolve()]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ValueError(f"variable file {text!r} not found (looked in {Path.cwd()} and {project.root})")
        resolved.append(found)
    return tuple(resolved)


def targets_the_built_in_mock(variable_files: Sequence[Path]) -> bool:
    """Whether the runs still use the built-in mock: no variable file sets ``APEX_TARGET`` elsewhere.

    A Python variable file is read (not run) for a top-level ``APEX_TARGET = "..."``: ``soak.py``
    (durations only) keeps the mock, ``staging.py`` (``"staging"``) does not. Any other kind of
    variable file, or a target that is not a plain string, counts as another target.
    """
    return all(_target_of(path) in (None, "mock") for path in variable_files)


def _target_of(path: Path) -> str | None:
    if path.suffix != ".py":
        return "unknown"
    try:
        module = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except SyntaxError:
        return "unknown"  # robot will say what is wrong with it
    for node in module.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "APEX_TARGET" for t in node.targets):
            value = node.value
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else "unknown"
    return None


# --------------------------------------------------------------------------- --list


def guarded_scenarios(fault: FaultMode, catalogue: Catalogue) -> str:
    """``1.1; 3.2 3.3 (alone)``: the labels of the scenarios that must fail, per suite."""
    if fault.is_baseline:
        return "(baseline: all must pass)"
    parts = []
    for expectation in fault.expectations:
        suite = catalogue.suite(expectation.suite)
        labels = " ".join(suite.label(t) for t in suite.tests if t in expectation.fails)
        parts.append(labels + (" (alone)" if expectation.only else ""))
    return "; ".join(parts) or "(unguarded)"


def listing(catalogue: Catalogue) -> str:
    """The catalogue as a table: name, layer, guarded scenarios, what it breaks; then the labels."""
    rows = [("name", "layer", "guarded scenarios", "breaks")]
    rows += [(f.name, f.layer, guarded_scenarios(f, catalogue), f.breaks) for f in catalogue.faults]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3] for row in rows]
    lines.append("")
    for suite in catalogue.suites:
        lines.append(f"suite {suite.key}: {suite.file}")
        lines += [f"  {suite.label(test):>5}  {test}" for test in suite.tests]
    return "\n".join(lines)


# --------------------------------------------------------------------------- running


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does: running robot process groups are killed."""

    def _exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return
    caught = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, _exit) for signum in caught}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _print(line: str) -> None:
    print(line, flush=True)


def print_outcome(matrix: Matrix, paths: Sequence[Path]) -> None:
    """The summary line, each row that is not caught (or green), and where the report is."""
    _print(summary_line(matrix))
    for row, result in reruns(matrix):
        _print(f"  {row.fault.name}: {rerun_text(result)}")
    not_applicable = [row.fault.name for row in matrix.rows if row.verdict == NA]
    for row in matrix.rows:
        if row.verdict in (CAUGHT, GREEN, NA):
            continue
        _print(f"  {row.fault.name}: {row.verdict}")
        for problem in row.problems:
            _print(f"      {problem.text}")
    if not_applicable:
        _print(f"  n/a (needs the built-in mock): {', '.join(not_applicable)}")
    for path in paths:
        _print(str(path))


@dataclass(frozen=True)
class Selection:
    """What the command line selected, checked."""

    project: Project
    suites: tuple[Suite, ...]
    faults: tuple[FaultMode, ...]
    variable_files: tuple[Path, ...]


def select(parser: argparse.ArgumentParser, args: argparse.Namespace, catalogue: Catalogue) -> Selection:
    """The suites, fault rows and variable files asked for; a usage error (exit 2) naming what is wrong."""
    project = Project.locate(args.suites_dir)
    try:
        suites = select_suites(catalogue, args.suite)
        faults = select_faults(catalogue, args.fault, args.layer)
        for suite in suites:
            project.suite_path(suite)
        variable_files = resolve_variable_files(args.variablefile, project)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return Selection(project, suites, faults, variable_files)


def _suites_text(keys: Sequence[str]) -> str:
    return ("suite " if len(keys) == 1 else "suites ") + ", ".join(keys)


def nothing_to_run(args: argparse.Namespace, chosen: Selection, cells: Sequence[Cell], catalogue: Catalogue) -> str | None:
    """Why the selection runs no fault cell (one line), or None when it runs some.

    A fault named with ``--fault`` that gets no cell on the selected suites is an error, as
    is a selection whose fault rows all get none, or only cells that cannot run (mock faults
    against another server). Asking for the baselines alone (``--fault none``) is not.
    """
    planned = {cell.row.name for cell in cells if not cell.row.is_baseline}
    runnable = {cell.row.name for cell in cells if not cell.row.is_baseline and cell.runnable}
    keys = [s.key for s in chosen.suites]
    named = [catalogue.fault(name) for name in dict.fromkeys(args.fault)]
    named = [row for row in named if not row.is_baseline]
    reasons = []
    for row in named:
        if row.name in planned:
            continue
        where = [e.suite for e in row.expectations]
        reasons.append(
            f"fault {row.name!r} is not run on {_suites_text(keys)} "
            f"(it is guarded on {_suites_text(where)}); add --everywhere to run it there anyway"
        )
    if reasons:
        return "; ".join(reasons)
    if args.fault and not named:
        return None  # only baselines asked for
    if not chosen.faults:
        return "the catalogue has no fault row" + (f" of --layer {args.layer}" if args.layer != "all" else "")
    if not planned:
        return f"no selected fault row is run on {_suites_text(keys)}; add --everywhere to run them there anyway"
    if not runnable:
        files = ", ".join(str(path) for path in chosen.variable_files)
        return (
            f"every selected fault row needs the built-in mock, but --variablefile {files} targets another "
            "server: nothing to run (select proxy faults, --layer proxy)"
        )
    return None


def run_matrix(args: argparse.Namespace, chosen: Selection, catalogue: Catalogue, run: RunRobot, argv: Sequence[str]) -> Matrix:
    """Plan, run and judge the cells (baselines first); progress goes to stdout, a line per run start and end.

    A selection that would run no fault cell ends the command with exit code 2 and one line
    saying why, before anything runs.
    """
    rows = catalogue.baselines + chosen.faults
    mock = targets_the_built_in_mock(chosen.variable_files)
    cells = plan_cells(rows, chosen.suites, everywhere=args.everywhere, mock_available=mock)
    reason = nothing_to_run(args, chosen, cells, catalogue)
    if reason is not None:
        print(f"apex-faults: error: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE)
    output = args.output.resolve()
    started = datetime.now().astimezone()
    with _sigterm_raises():
        settings = Settings(output, chosen.project, chosen.variable_files, args.jobs, run, dialect=args.dialect,
                            charts=args.charts)
        results = execute(cells, settings, _print)
    planned = {cell.row.name for cell in cells}
    return Matrix(
        suites=chosen.suites,
        rows=judge(results),
        strict=args.strict,
        command=("apex-faults", *argv),
        started=started,
        output=output,
        not_selected=tuple(row.name for row in chosen.faults if row.name not in planned),
        dialect=args.dialect,
    )


def main(argv: Sequence[str] | None = None, *, catalogue: Catalogue = CATALOGUE, run: RunRobot = run_robot) -> int:
    """Run the fault matrix; returns the exit code (usage errors exit 2 by SystemExit; see the module docstring)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.list:
        _print(listing(catalogue))
        return 0
    chosen = select(parser, args, catalogue)
    try:
        matrix = run_matrix(args, chosen, catalogue, run, arguments)
    except KeyboardInterrupt:
        _print("interrupted: the running robot processes were killed; no report written")
        return 130
    written = write_report(matrix, matrix.output or args.output)
    print_outcome(matrix, (written.json, written.markdown, written.html))
    return matrix.exit_code
