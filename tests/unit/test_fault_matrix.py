"""The fault matrix (apex_faults) with fake robot runs: catalogue, planning, judging, report, CLI.

No robot runs here: ``run`` is replaced by a fake that returns made-up outcomes. The only
subprocesses are a few ``python -c`` one-liners checking that a timeout kills a process group.
"""

from __future__ import annotations

import re

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from apex_faults import catalogue as C
from apex_faults import cli, report
from apex_faults import runner as R
from apex_faults.catalogue import CATALOGUE, Catalogue, Expectation, FaultMode, Suite
from apex_mock.faults import parse_faults
from robot.api import TestSuite as RobotSuite  # not collected by pytest as a test class

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- a small fake catalogue

ALPHA = Suite("1", "01__alpha.robot", "Alpha", ("A one", "A two", "A three"))
BETA = Suite("2", "02__beta.robot", "Beta", ("B one", "B two"), exclusive=True)
NONE = FaultMode("none", C.MOCK, "nothing")
PROXY = FaultMode("proxy", C.PROXY, "nothing through the proxy")
BREAK_ONE = FaultMode("break_one", C.MOCK, "breaks A one", (Expectation("1", {"A one": "one broke"}),))
BOTH = FaultMode(
    "both",
    C.MOCK,
    "breaks A two and B two",
    (Expectation("1", {"A two": "two broke"}), Expectation("2", {"B two": "b broke"}, only=("B two",))),
)
ON_BETA = FaultMode("on_beta", C.MOCK, "breaks B one", (Expectation("2", {"B one": "b one broke"}),))
UNGUARDED = FaultMode("proxy:mystery", C.PROXY, "nobody knows")
FAKE = Catalogue((ALPHA, BETA), (NONE, PROXY, BREAK_ONE, BOTH, ON_BETA, UNGUARDED))


def outcomes(**statuses: str | tuple[str, str]) -> dict[str, R.Outcome]:
    """``A_one="PASS"`` or ``A_one=("FAIL", "message")`` -> {"A one": Outcome(...)}."""
    made = {}
    for key, value in statuses.items():
        status, message = (value, "") if isinstance(value, str) else value
        made[key.replace("_", " ")] = R.Outcome(status, message, f"s1-t{len(made) + 1}")
    return made


def result(row: FaultMode, suite: Suite, found: Mapping[str, R.Outcome], **kw) -> R.CellResult:
    cell = next(c for c in R.plan_cells([row], [suite]) if c.suite is suite)
    return R.CellResult(cell, found, **kw)


ALL_PASS_ALPHA = outcomes(A_one="PASS", A_two="PASS", A_three="PASS")


# --------------------------------------------------------------------------- catalogue integrity


def robot_test_names(path: Path) -> tuple[str, ...]:
    return tuple(test.name for test in RobotSuite.from_file_system(str(path)).all_tests)


@pytest.mark.parametrize("suite", C.SUITES, ids=lambda s: s.key)
def test_each_suites_tests_are_the_robot_files_test_cases_in_file_order(suite):
    assert suite.tests == robot_test_names(ROOT / "suites" / suite.file)


def test_every_expectation_names_a_known_suite_and_tests_of_it():
    keys = {s.key: s for s in C.SUITES}
    for fault in C.FAULTS:
        for expectation in fault.expectations:
            assert expectation.suite in keys, f"{fault.name}: unknown suite {expectation.suite}"
            tests = keys[expectation.suite].tests
            assert expectation.fails, f"{fault.name} / suite {expectation.suite}: nothing must fail"
            assert set(expectation.fails) <= set(tests), f"{fault.name}: {set(expectation.fails) - set(tests)}"
            assert all(fragment.strip() for fragment in expectation.fails.values()), fault.name
            assert set(expectation.only) <= set(tests), fault.name
        suites = [e.suite for e in fault.expectations]
        assert len(suites) == len(set(suites)), f"{fault.name}: two expectations for one suite"


def test_rows_are_baselines_then_mock_then_proxy_with_unique_names():
    names = [f.name for f in C.FAULTS]
    assert names[:2] == ["none", "proxy"]
    assert len(names) == len(set(names))
    layers = [f.layer for f in C.FAULTS[2:]]
    assert layers == sorted(layers, key=[C.MOCK, C.PROXY].index)
    assert all(f.name.startswith(C.PROXY_PREFIX) for f in C.FAULTS[2:] if f.layer == C.PROXY)
    assert all(f.breaks and "\n" not in f.breaks for f in C.FAULTS)
    assert not any(f.expectations for f in C.BASELINES)


def test_every_mock_row_is_a_fault_the_mock_accepts():
    for fault in C.MOCK_FAULTS:
        parse_faults([fault.name])  # raises naming the fault when the mock does not know it


def test_faults_of_several_suites_have_one_row_with_an_expectation_per_suite():
    def shape(name):
        return [(e.suite, bool(e.only)) for e in C.fault(name).expectations]

    assert shape("slow") == [("1", False), ("2", False), ("3", False)]
    assert shape("disconnect_every") == [("1", False), ("3", False)]
    assert shape("slow_reconnect") == [("2", False), ("3", True)]
    assert C.fault("sticky_overload").expectation("3").only == (C.Throughput.OVERLOAD,)
    assert C.fault("leak").expectation("3") and C.fault("leak=1000000").expectation("1")


def test_robot_variables_per_kind_of_row():
    assert C.fault("none").robot_variables() == {}
    assert C.fault("proxy").robot_variables() == {"APEX_PROXY": "on"}
    assert C.fault("leak=1000000").robot_variables() == {"APEX_MOCK_FAULTS": "leak=1000000"}
    assert UNGUARDED.robot_variables() == {"APEX_PROXY": "on", "APEX_PROXY_FAULTS": "mystery"}
    assert C.fault("leak=1000000").slug == "leak-1000000" and UNGUARDED.slug == "proxy-mystery"


@pytest.mark.parametrize(
    "selector", ["1", "01", "01__rapid_message_succession.robot", "suites/01__rapid_message_succession.robot"]
)
def test_a_suite_is_found_by_number_file_or_path(selector):
    assert C.suite(selector).key == "1"
    assert C.suite(str(ROOT / "suites" / "03__high_volume_throughput.robot")).key == "3"


def test_unknown_suite_or_fault_names_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown suite '4'; choose one of: 1 \(01__rapid.*3 \(03__high"):
        C.suite("4")
    with pytest.raises(ValueError, match=r"unknown fault 'reorderr'; choose one of: none, proxy, reorder, "):
        C.fault("reorderr")


# --------------------------------------------------------------------------- planning


def planned(cells):
    return [(c.row.name, c.suite.key, c.tests, c.runnable) for c in cells]


def test_plan_runs_baselines_in_full_and_fault_rows_where_they_are_guarded():
    cells = R.plan_cells([NONE, BOTH, ON_BETA], [ALPHA, BETA])
    assert planned(cells) == [
        ("none", "1", (), True),
        ("none", "2", (), True),
        ("both", "1", (), True),
        ("both", "2", ("B two",), True),
        ("on_beta", "2", (), True),
    ]


def test_plan_skips_unselected_suites_and_runs_unguarded_rows_everywhere():
    cells = R.plan_cells([ON_BETA, BOTH, UNGUARDED], [ALPHA])
    assert planned(cells) == [("both", "1", (), True), ("proxy:mystery", "1", (), True)]


def test_everywhere_runs_every_row_on_every_suite_in_full():
    cells = R.plan_cells([BOTH], [ALPHA, BETA], everywhere=True)
    assert planned(cells) == [("both", "1", (), True), ("both", "2", (), True)]


def test_without_the_built_in_mock_mock_rows_are_planned_but_not_run():
    cells = R.plan_cells([NONE, PROXY, BREAK_ONE, UNGUARDED], [ALPHA], mock_available=False)
    assert [c.runnable for c in cells] == [True, True, False, True]


# --------------------------------------------------------------------------- judging


def test_baseline_is_green_with_passes_and_skips_and_red_naming_a_failure():
    green = R.judge_row(NONE, [result(NONE, ALPHA, outcomes(A_one="PASS", A_two="SKIP", A_three="PASS"))])
    assert (green.verdict, green.problems) == (R.GREEN, ())
    red = R.judge_row(NONE, [result(NONE, ALPHA, outcomes(A_one="PASS", A_two=("FAIL", "boom\nmore"), A_three="PASS"))])
    assert red.verdict == R.RED
    assert [p.text for p in red.problems] == ["suite 1, 'A two' failed: boom"]


def test_caught_when_exactly_the_guarded_test_fails_with_its_fragment():
    found = outcomes(A_one=("FAIL", "Check: one broke here"), A_two="PASS", A_three="PASS")
    row = R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, found)])
    assert (row.verdict, row.problems) == (R.CAUGHT, ())


def test_caught_plus_collateral_lists_the_other_failures():
    found = outcomes(A_one=("FAIL", "one broke"), A_two="PASS", A_three=("FAIL", "unrelated"))
    row = R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, found)])
    assert row.verdict == R.COLLATERAL
    assert [p.text for p in row.problems] == ["suite 1, 'A three' failed too (not guarded by this fault): unrelated"]


@pytest.mark.parametrize(
    ("status", "says"),
    [("PASS", "but passed"), (("SKIP", "no push"), "but was skipped (no push)"), (None, "but did not run")],
)
def test_missed_when_a_guarded_test_does_not_fail(status, says):
    found = outcomes(A_two=("FAIL", "other"), A_three="PASS")
    if status is not None:
        found.update(outcomes(A_one=status))
    row = R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, found)])
    assert row.verdict == R.MISSED
    assert f"suite 1, 'A one' must fail under break_one {says}" in [p.text for p in row.problems]


def test_wrong_reason_quotes_the_fragment_and_the_actual_first_line():
    found = outcomes(A_one=("FAIL", "something else\nsecond line"), A_two="PASS", A_three="PASS")
    row = R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, found)])
    assert row.verdict == R.WRONG_REASON
    assert [p.text for p in row.problems] == [
        "suite 1, 'A one' failed, but its message lacks the expected 'one broke'; it said: something else"
    ]


def test_gap_when_nothing_fails_guarded_or_not():
    row = R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, ALL_PASS_ALPHA)])
    assert row.verdict == R.GAP and row.guarded
    assert row.problems[-1].text == "no test failed in suite(s) 1: the fault went unnoticed"
    unguarded = R.judge_row(UNGUARDED, [result(UNGUARDED, ALPHA, ALL_PASS_ALPHA)])
    assert unguarded.verdict == R.GAP and not unguarded.guarded and not unguarded.failing


def test_a_row_is_judged_over_all_its_cells():
    cells = [
        result(BOTH, ALPHA, outcomes(A_one="PASS", A_two=("FAIL", "two broke"), A_three="PASS")),
        result(BOTH, BETA, outcomes(B_two=("FAIL", "b broke"))),  # B one not run: only= B two
    ]
    assert R.judge_row(BOTH, cells).verdict == R.CAUGHT


def test_a_timed_out_cell_is_a_problem_of_its_row_and_fails_the_run():
    timed_out = result(NONE, ALPHA, {}, seconds=300.0, error="robot timed out after 300 s on 01__alpha.robot\nconsole")
    row = R.judge_row(NONE, [timed_out])
    assert row.verdict == R.RED and row.failing
    assert row.problems[0].text == "suite 1: robot timed out after 300 s on 01__alpha.robot"
    assert R.Matrix((ALPHA,), (row,)).exit_code == 1


def test_a_test_missing_from_the_catalogue_is_reported():
    found = {**ALL_PASS_ALPHA, **outcomes(A_four="PASS")}
    row = R.judge_row(NONE, [result(NONE, ALPHA, found)])
    assert row.failing and "ran 'A four', which the catalogue does not list" in row.problems[0].text


def rows_with(verdict_of_break_one: str) -> tuple[R.RowResult, ...]:
    statuses = {
        R.CAUGHT: outcomes(A_one=("FAIL", "one broke"), A_two="PASS", A_three="PASS"),
        R.COLLATERAL: outcomes(A_one=("FAIL", "one broke"), A_two=("FAIL", "x"), A_three="PASS"),
        R.MISSED: outcomes(A_one="PASS", A_two=("FAIL", "x"), A_three="PASS"),
        R.WRONG_REASON: outcomes(A_one=("FAIL", "x"), A_two="PASS", A_three="PASS"),
        R.GAP: ALL_PASS_ALPHA,
    }[verdict_of_break_one]
    baseline = R.judge_row(NONE, [result(NONE, ALPHA, ALL_PASS_ALPHA)])
    row = R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, statuses)])
    assert row.verdict == verdict_of_break_one
    return baseline, row


@pytest.mark.parametrize(
    ("verdict", "code", "strict_code"),
    [(R.CAUGHT, 0, 0), (R.COLLATERAL, 0, 1), (R.MISSED, 1, 1), (R.WRONG_REASON, 1, 1), (R.GAP, 1, 1)],
)
def test_exit_code_per_verdict_with_and_without_strict(verdict, code, strict_code):
    assert R.Matrix((ALPHA,), rows_with(verdict)).exit_code == code
    assert R.Matrix((ALPHA,), rows_with(verdict), strict=True).exit_code == strict_code


def test_unguarded_rows_do_not_decide_the_exit_code_even_with_strict():
    baseline = R.judge_row(NONE, [result(NONE, ALPHA, ALL_PASS_ALPHA)])
    noticed = R.judge_row(UNGUARDED, [result(UNGUARDED, ALPHA, outcomes(A_one=("FAIL", "x")))])
    assert noticed.verdict == R.COLLATERAL
    assert R.Matrix((ALPHA,), (baseline, noticed), strict=True).exit_code == 0


# --------------------------------------------------------------------------- executing with a fake robot


class FakeRobot:
    """Stands in for run_robot: answers per (row variables, suite file) from a table; records calls."""

    def __init__(self, answer: Callable[[Mapping[str, str], str, tuple[str, ...]], dict[str, R.Outcome]]):
        self.answer = answer
        self.calls: list[tuple[dict[str, str], str, tuple[str, ...], list[Path]]] = []
        self.lock = threading.Lock()

    def __call__(self, suite_path, output_dir, *, variables, variable_files, tests, timeout, project):
        with self.lock:
            self.calls.append((dict(variables), suite_path.name, tuple(tests or ()), list(variable_files)))
        found = self.answer(variables, suite_path.name, tuple(tests or ()))
        return R.SuiteRun(0 if all(o.status != "FAIL" for o in found.values()) else 1, found, output_dir, "", 1.5)


def fake_project(tmp_path: Path, suites=(ALPHA, BETA)) -> R.Project:
    (tmp_path / "suites").mkdir(exist_ok=True)
    for suite in suites:
        (tmp_path / "suites" / suite.file).write_text("*** Test Cases ***\n")
    return R.Project(tmp_path, tmp_path / "suites")


def guarded_answers(variables, suite_file, tests):
    """A server where every fault breaks exactly what the fake catalogue says it does."""
    suite = FAKE.suite(suite_file)
    row = FAKE.fault(variables.get("APEX_MOCK_FAULTS") or ("proxy" if variables else "none"))
    expectation = row.expectation(suite.key)
    fails = expectation.fails if expectation else {}
    return {t: R.Outcome("FAIL", f"broken: {fails[t]}") if t in fails else R.Outcome("PASS") for t in tests or suite.tests}


def test_execute_returns_results_in_plan_order_and_prints_one_line_per_cell(tmp_path):
    cells = R.plan_cells([NONE, BOTH, ON_BETA], [ALPHA, BETA])
    lines: list[str] = []
    settings = R.Settings(tmp_path / "out", fake_project(tmp_path), run=FakeRobot(guarded_answers))
    results = R.execute(cells, settings, lines.append)
    assert [r.cell for r in results] == cells
    assert len(lines) == 5
    assert "[3/5] both × suite 1: 1 of 3 failed (as guarded) 1.5 s" in lines
    assert "[1/5] none × suite 1: 0 of 3 failed (green) 1.5 s" == lines[0]
    assert results[0].output_dir == tmp_path / "out" / "runs" / "none" / "01__alpha"


def test_execute_runs_baselines_first_and_an_exclusive_suite_alone(tmp_path):
    """Two alpha cells must meet (they run at once); beta (exclusive) cells get every chance to
    meet another cell, and must not: their barrier can only break by its timeout."""
    running, beside_exclusive, order = set(), [], []
    lock = threading.Lock()
    alpha_pair = threading.Barrier(2, timeout=10)
    exclusive_meeting = threading.Barrier(2, timeout=0.5)  # bounded: breaks once when scheduling is right

    def answer(variables, suite_file, tests):
        name = variables.get("APEX_MOCK_FAULTS", "none")
        with lock:
            order.append((name, suite_file))
            running.add((name, suite_file))
            if any(f == BETA.file for _, f in running) and len(running) > 1:
                beside_exclusive.append(sorted(running))
        if suite_file == ALPHA.file and name != "none":
            alpha_pair.wait()
        if suite_file == BETA.file and name != "none":
            try:
                exclusive_meeting.wait()
            except threading.BrokenBarrierError:
                pass
        with lock:
            running.discard((name, suite_file))
        return guarded_answers(variables, suite_file, tests)

    cells = R.plan_cells([NONE, BREAK_ONE, BOTH, ON_BETA], [ALPHA, BETA])
    settings = R.Settings(tmp_path / "out", fake_project(tmp_path), jobs=2, run=FakeRobot(answer))
    R.execute(cells, settings, lambda line: None)
    assert order[:2] == [("none", ALPHA.file), ("none", BETA.file)]
    assert beside_exclusive == []
    assert exclusive_meeting.broken


def test_a_run_error_becomes_the_cells_error(tmp_path):
    def crash(*args, **kwargs):
        raise R.RobotTimeout("robot timed out after 300 s on 01__alpha.robot; killed", returncode=-9, console="", seconds=300)

    settings = R.Settings(tmp_path / "out", fake_project(tmp_path), run=crash)
    lines: list[str] = []
    [cell] = R.plan_cells([NONE], [ALPHA])
    [done] = R.execute([cell], settings, lines.append)
    assert done.error.startswith("robot timed out") and done.returncode == -9
    assert lines == ["[1/1] none × suite 1: robot timed out after 300 s on 01__alpha.robot; killed 300.0 s"]


# --------------------------------------------------------------------------- report


def fake_matrix(tmp_path: Path) -> R.Matrix:
    out = tmp_path / "out"
    found_break = outcomes(A_one=("FAIL", "one broke: <b> & co\nline 2"), A_two="PASS", A_three=("SKIP", "no op"))
    results = [
        result(NONE, ALPHA, ALL_PASS_ALPHA, output_dir=out / "runs" / "none" / "01__alpha"),
        result(BREAK_ONE, ALPHA, found_break, output_dir=out / "runs" / "break_one" / "01__alpha", seconds=2.0),
        result(BOTH, ALPHA, outcomes(A_one="PASS", A_two="PASS", A_three="PASS"), output_dir=out / "runs" / "both" / "01__alpha"),
    ]
    return R.Matrix((ALPHA,), R.judge(results), command=("apex-faults", "--suite", "1"), output=out)


def test_markdown_has_labelled_columns_a_legend_of_labels_and_the_failures(tmp_path):
    text = report.to_markdown(fake_matrix(tmp_path))
    assert "| fault | 1.1 | 1.2 | 1.3 |" in text
    assert "| `none` (green) | ✅ | ✅ | ✅ |" in text
    assert "| `break_one` (caught) | ❌ | ✅ | ⏭ |" in text
    assert "| `both` (gap) | ✅ | ❗ | ✅ |" in text
    assert "- **1.2** A two" in text
    assert "- **1.1** A one: one broke: <b> & co" in text
    assert "**2 fault modes, 1 caught, 1 gap; no-fault runs green**" in text


def test_html_escapes_messages_links_logs_and_shows_the_first_line_as_tooltip(tmp_path):
    page = report.to_html(fake_matrix(tmp_path))
    assert "<b> & co" not in page
    assert 'title="one broke: &lt;b&gt; &amp; co"' in page
    assert '<a href="runs/break_one/01__alpha/log.html#s1-t1">❌</a>' in page
    assert "one broke: &lt;b&gt; &amp; co</li>" in page
    assert "<script" not in page and "<style>" in page


def test_json_round_trips_with_cells_runs_and_summary(tmp_path):
    matrix = fake_matrix(tmp_path)
    written = report.write_report(matrix, tmp_path / "out")
    data = json.loads(written.json.read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(report.to_json(matrix)))
    row = data["rows"][1]
    assert row["cells"]["1"]["A one"] == {
        "status": "FAIL",
        "message_first_line": "one broke: <b> & co",
        "expected_fragment": "one broke",
    }
    assert row["runs"]["1"]["output_dir"] == "runs/break_one/01__alpha"
    assert row["runs"]["1"]["variables"] == {} and row["verdict"] == "caught"
    assert data["summary"]["line"] == "2 fault modes, 1 caught, 1 gap; no-fault runs green"
    assert data["exit_code"] == 1 and written.markdown.exists() and written.html.exists()


# --------------------------------------------------------------------------- CLI


def run_cli(tmp_path: Path, *argv: str, answers=guarded_answers) -> tuple[int, FakeRobot, dict]:
    robot = FakeRobot(answers)
    fake_project(tmp_path)
    out = tmp_path / "matrix"
    code = cli.main(["--suites-dir", str(tmp_path / "suites"), "--output", str(out), *argv], catalogue=FAKE, run=robot)
    return code, robot, json.loads((out / "matrix.json").read_text())


def test_cli_runs_the_plan_and_exits_0_when_every_guarded_row_is_caught(tmp_path, capsys):
    code, robot, data = run_cli(tmp_path)
    assert code == 0 and data["exit_code"] == 0
    assert [r["verdict"] for r in data["rows"]] == ["green", "green", "caught", "caught", "caught", "gap"]
    assert robot.calls[0][0] == {} and robot.calls[0][1] == ALPHA.file
    out = capsys.readouterr().out
    assert "4 fault modes, 3 caught, 1 gap; no-fault runs green" in out
    assert "  proxy:mystery: gap" in out and str(tmp_path / "matrix" / "matrix.html") in out


def test_cli_exits_1_showing_missed_when_a_guarded_fault_is_not_caught(tmp_path, capsys):
    def breaks_the_wrong_test(variables, suite_file, tests):
        found = guarded_answers(variables, suite_file, tests)
        if variables.get("APEX_MOCK_FAULTS") == "break_one":
            found.update({"A one": R.Outcome("PASS"), "A two": R.Outcome("FAIL", "two broke instead")})
        return found

    code, _, data = run_cli(tmp_path, "--fault", "break_one", answers=breaks_the_wrong_test)
    assert code == 1
    assert [r["verdict"] for r in data["rows"]] == ["green", "green", "missed"]
    out = capsys.readouterr().out
    assert "  break_one: missed" in out and "'A one' must fail under break_one but passed" in out


def test_cli_exits_1_on_a_gap(tmp_path, capsys):
    def never_breaks(variables, suite_file, tests):
        return {t: R.Outcome("PASS") for t in tests or FAKE.suite(suite_file).tests}

    code, _, data = run_cli(tmp_path, "--fault", "break_one", answers=never_breaks)
    assert code == 1 and data["rows"][2]["verdict"] == "gap"
    assert "the fault went unnoticed" in capsys.readouterr().out


def test_cli_strict_fails_on_collateral(tmp_path):
    def collateral(variables, suite_file, tests):
        found = guarded_answers(variables, suite_file, tests)
        if variables.get("APEX_MOCK_FAULTS") == "break_one":
            found["A three"] = R.Outcome("FAIL", "collateral damage")
        return found

    assert run_cli(tmp_path, "--fault", "break_one", answers=collateral)[0] == 0
    code, _, data = run_cli(tmp_path, "--fault", "break_one", "--strict", answers=collateral)
    assert code == 1 and data["rows"][2]["verdict"] == "caught+collateral"


def test_cli_with_a_variable_file_reports_mock_rows_na_and_runs_baselines_and_proxy_rows(tmp_path):
    variables = tmp_path / "staging.py"
    variables.write_text("APEX_TARGET = 'staging'\n")
    code, robot, data = run_cli(tmp_path, "--variablefile", str(variables))
    verdicts = {r["name"]: r["verdict"] for r in data["rows"]}
    assert verdicts == {"none": "green", "proxy": "green", "break_one": "n/a", "both": "n/a", "on_beta": "n/a", "proxy:mystery": "gap"}
    assert code == 0
    assert all(call[3] == [variables.resolve()] for call in robot.calls)
    assert not any("APEX_MOCK_FAULTS" in call[0] for call in robot.calls)
    assert data["rows"][2]["cells"]["1"]["A one"]["status"] == "n/a"


@pytest.mark.parametrize(
    ("file", "mock"),
    [("staging.py", False), ("mock.py", True), ("soak.py", True)],
)
def test_which_of_the_projects_variable_files_keep_the_built_in_mock(file, mock):
    assert cli.targets_the_built_in_mock([ROOT / "resources" / "variables" / file]) is mock


def test_a_variable_file_with_a_computed_or_non_python_target_counts_as_another_server(tmp_path):
    computed = tmp_path / "computed.py"
    computed.write_text("import os\nAPEX_TARGET = os.environ.get('T', 'mock')\n")
    yaml = tmp_path / "target.yaml"
    yaml.write_text("APEX_TARGET: mock\n")
    assert not cli.targets_the_built_in_mock([computed])
    assert not cli.targets_the_built_in_mock([yaml])


def test_cli_with_a_durations_only_variable_file_still_runs_mock_rows(tmp_path):
    durations = tmp_path / "durations.py"
    durations.write_text("BURST_PAUSE = '2 s'\n")
    code, robot, data = run_cli(tmp_path, "--variablefile", str(durations), "--fault", "break_one")
    assert code == 0 and data["rows"][2]["verdict"] == "caught"
    assert {"APEX_MOCK_FAULTS": "break_one"} in [call[0] for call in robot.calls]


def test_cli_suite_selection_leaves_out_rows_guarding_other_suites(tmp_path):
    code, robot, data = run_cli(tmp_path, "--suite", "01", "--layer", "mock")
    assert code == 0
    assert [r["name"] for r in data["rows"]] == ["none", "proxy", "break_one", "both"]
    assert data["not_selected"] == ["on_beta"]
    assert {call[1] for call in robot.calls} == {ALPHA.file}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--suite", "9"], "unknown suite '9'; choose one of: 1 (01__alpha.robot), 2 (02__beta.robot)"),
        (["--fault", "nope"], "unknown fault 'nope'; choose one of: none, proxy, break_one, both, on_beta, proxy:mystery"),
        (["--fault", "break_one", "--layer", "proxy"], "'break_one' is a mock fault, but --layer proxy"),
        (["--variablefile", "missing.py"], "variable file 'missing.py' not found"),
        (["--jobs", "0"], "must be a whole number of at least 1"),
    ],
)
def test_cli_usage_errors_exit_2_naming_the_valid_choices(tmp_path, capsys, argv, says):
    fake_project(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--suites-dir", str(tmp_path / "suites"), *argv], catalogue=FAKE, run=FakeRobot(guarded_answers))
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_cli_says_which_suite_file_is_missing(tmp_path, capsys):
    (tmp_path / "suites").mkdir()
    with pytest.raises(SystemExit):
        cli.main(["--suites-dir", str(tmp_path / "suites")], catalogue=FAKE)
    assert f"suite 1 (01__alpha.robot) is not in {tmp_path / 'suites'}" in capsys.readouterr().err


def test_cli_list_prints_the_real_catalogue(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\nslow_reconnect +mock +2\.9; 3\.9 \(alone\) ", out)
    assert re.search(r"\nproxy:drop_deliveries +proxy +2\.1 2\.2 2\.4 2\.12 \(alone\) ", out)
    assert "   1.1  Messages In Rapid Succession Are Answered In Order Exactly Once" in out
    assert len([line for line in out.splitlines() if " mock " in line or " proxy " in line]) == len(CATALOGUE.faults)


def test_cli_help_explains_verdicts_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "caught+collateral" in out and "wrong-reason" in out and "exit codes:" in out


# --------------------------------------------------------------------------- running robot (no robot)


def test_robot_command_and_environment(tmp_path):
    command = R.robot_command(
        tmp_path / "s.robot", tmp_path / "o", variables={"A": "b:c"}, variable_files=["v.py"], tests=["T 1"]
    )
    assert command[1:] == [
        "-m", "robot", "--outputdir", str(tmp_path / "o"), "--console", "dotted",
        "--test", "T 1", "--variable", "A:b:c", "--variablefile", "v.py", str(tmp_path / "s.robot"),
    ]  # fmt: skip
    assert R.exact_pattern("Is it [really] 100*?") == "Is it [[]really] 100[*][?]"
    env = R.robot_environment(tmp_path, {"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path / "libraries"), "/x"])


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time, pathlib;"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid));"
        "print('started', flush=True); time.sleep(60)"
    )
    done = R.run_process_group([sys.executable, "-c", script], cwd=tmp_path, env=os.environ, timeout=2)
    assert done.timed_out and "started" in done.output
    # communicate() returned, so every holder of the output pipe, the grandchild too, has exited
    assert _dead(int(pid_file.read_text()))


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_missing_output_xml_is_a_clear_error_naming_exit_code_and_output(tmp_path):
    done = R.Completed(252, "[ ERROR ] Suite 'x' contains no tests.", False, 0.4)
    with pytest.raises(R.RobotRunError, match=r"robot wrote no output.xml in .* \(exit code 252\)\. Console output:\n\[ ERROR \]"):
        R.read_outcomes(tmp_path / "output.xml", done)
