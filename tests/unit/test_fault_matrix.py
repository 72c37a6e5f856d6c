"""The fault matrix (apex_faults) with fake robot runs: catalogue, planning, judging, report, CLI.

No robot runs here: ``run`` is replaced by a fake that returns made-up outcomes. The only
subprocesses are a few ``python -c`` one-liners checking that a timeout kills a process group
and that children die with their parent.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from apex_faults import catalogue as C
from apex_faults import cli, processes, report
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
    with pytest.raises(ValueError, match=r"unknown suite '5'; choose one of: 1 \(01__rapid.*4 \(04__agent"):
        C.suite("5")
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
        self.envs: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, suite_path, output_dir, *, variables, variable_files, tests, timeout, project, env=None):
        with self.lock:
            self.calls.append((dict(variables), suite_path.name, tuple(tests or ()), list(variable_files)))
            self.envs.append(dict(env or {}))
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
    row = FAKE.fault(variables.get("APEX_MOCK_FAULTS") or ("proxy" if variables.get("APEX_PROXY") else "none"))
    expectation = row.expectation(suite.key)
    fails = expectation.fails if expectation else {}
    return {t: R.Outcome("FAIL", f"broken: {fails[t]}") if t in fails else R.Outcome("PASS") for t in tests or suite.tests}


class FakeClock:
    """A monotonic clock that moves only when told to: ``advance(60)`` is a minute later."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_execute_returns_results_in_plan_order_and_prints_a_line_per_run_start_and_end(tmp_path):
    """Every fake run takes a minute: each start line says which run of how many, the time
    elapsed, and the minutes left; each end line how it went."""
    clock = FakeClock()

    def a_minute_each(variables, suite_file, tests):
        clock.advance(60)
        return guarded_answers(variables, suite_file, tests)

    cells = R.plan_cells([NONE, BOTH, ON_BETA], [ALPHA, BETA])
    lines: list[str] = []
    settings = R.Settings(tmp_path / "out", fake_project(tmp_path), run=FakeRobot(a_minute_each))
    results = R.execute(cells, settings, lines.append, clock=clock)
    assert [r.cell for r in results] == cells
    assert lines == [
        "[apex-faults] run 1 of 5: none (suite 1) \u2014 elapsed 0s, estimating\u2026",
        "[1/5] none × suite 1: 0 of 3 failed (green) 1.5 s",
        "[apex-faults] run 2 of 5: none (suite 2) \u2014 elapsed 1m00s, about 4m left",
        "[2/5] none × suite 2: 0 of 2 failed (green) 1.5 s",
        "[apex-faults] run 3 of 5: both (suite 1) \u2014 elapsed 2m00s, about 3m left",
        "[3/5] both × suite 1: 1 of 3 failed (as guarded) 1.5 s",
        "[apex-faults] run 4 of 5: both (suite 2) \u2014 elapsed 3m00s, about 2m left",
        "[4/5] both × suite 2: 1 of 1 failed (as guarded) 1.5 s",
        "[apex-faults] run 5 of 5: on_beta (suite 2) \u2014 elapsed 4m00s, about 1m left",
        "[5/5] on_beta × suite 2: 1 of 2 failed (as guarded) 1.5 s",
    ]
    assert all("\r" not in line and "\n" not in line for line in lines)
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
    assert lines[1:] == ["[1/1] none × suite 1: robot timed out after 300 s on 01__alpha.robot; killed 300.0 s"]


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
    assert "| `none`: green (no fault: every scenario passed) | pass | pass | pass |" in text
    assert "| `break_one`: caught (good: the suites detect this fault) | failed as expected | pass | skip |" in text
    assert "| `both`: gap (bad: no scenario noticed this fault) | pass | pass: missed! | pass |" in text
    assert "- **1.2** A two" in text
    assert "- **1.1** A one: one broke: <b> & co" in text
    assert "**2 fault modes, 1 caught, 1 gap; no-fault runs green**" in text


def test_html_escapes_messages_links_logs_and_shows_the_first_line_as_tooltip(tmp_path):
    page = report.to_html(fake_matrix(tmp_path))
    assert "<b> & co" not in page
    assert 'title="failed as expected: one broke: &lt;b&gt; &amp; co"' in page
    assert '<a href="runs/break_one/01__alpha/log.html#s1-t1">failed as expected</a>' in page
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
        "inconclusive": False,
        "rerun": False,
        "message_first_line": "one broke: <b> & co",
        "failures": 1,
        "expected_fragment": "one broke",
        "shown": "failed as expected",
        "kind": "expected",
    }
    assert row["cells"]["1"]["A three"]["shown"] == "skip" and row["cells"]["1"]["A three"]["failures"] == 0
    assert (row["verdict_text"], row["verdict_tone"]) == ("caught (good: the suites detect this fault)", "good")
    assert (data["rows"][2]["verdict_tone"], data["rows"][0]["verdict_tone"]) == ("bad", "good")
    assert row["runs"]["1"]["output_dir"] == "runs/break_one/01__alpha"
    assert row["runs"]["1"]["variables"] == {} and row["verdict"] == "caught"
    assert data["summary"]["line"] == "2 fault modes, 1 caught, 1 gap; no-fault runs green"
    assert data["exit_code"] == 1 and written.markdown.exists() and written.html.exists()


# --------------------------------------------------------------------------- failure messages: the failing check

#: Robot's message for a test that failed three times, exactly as Robot 7 writes it (the real
#: run below checks the format still holds).
SEVERAL = (
    "Several failures occurred:\n\n"
    "1) agent_state.message_count was 19, expected == 20\n\n"
    "2) ai_response count was 2, expected == 1\nIdempotency broken\n\n"
    "3) queue_full count was 0, expected > 0"
)

SEVERAL_SUITE = """\
*** Test Cases ***
Several Checks Fail
    Run Keyword And Continue On Failure    Fail    agent_state.message_count was 19, expected == 20
    Run Keyword And Continue On Failure    Fail    ai_response count was 2, expected == 1\\nIdempotency broken
    Fail    queue_full count was 0, expected > 0

Setup Fails
    [Setup]    Fail    mock did not start
    No Operation

Test And Teardown Fail
    Fail    body broke
    [Teardown]    Fail    teardown broke
"""


@pytest.mark.parametrize(
    ("message", "checks", "shown"),
    [
        (SEVERAL, ("agent_state.message_count was 19, expected == 20", "ai_response count was 2, expected == 1",
                   "queue_full count was 0, expected > 0"), "agent_state.message_count was 19, expected == 20 (+2 more)"),
        ("boom\nmore", ("boom",), "boom"),
        ("", (), ""),
        ("Setup failed:\nmock did not start", ("setup failed: mock did not start",), "setup failed: mock did not start"),
        ("body broke\n\nAlso teardown failed:\nteardown broke", ("body broke", "teardown failed: teardown broke"),
         "body broke (+1 more)"),
        ("Teardown failed:\nSeveral failures occurred:\n\n1) td one\n\n2) td two",
         ("teardown failed: td one", "teardown failed: td two"), "teardown failed: td one (+1 more)"),
        ("*HTML* Several failures occurred:\n\n1) <b>x</b>\n\n2) y", ("<b>x</b>", "y"), "<b>x</b> (+1 more)"),
        # a line of a failure that looks numbered is part of it; numbers go in sequence
        ("Several failures occurred:\n\n1) first\n2) not a failure\n\n3) not either\n\n2) second",
         ("first", "second"), "first (+1 more)"),
        ("Several failures occurred:", ("Several failures occurred:",), "Several failures occurred:"),
    ],
)  # fmt: skip
def test_failure_checks_split_robots_message_into_its_failing_checks(message, checks, shown):
    assert R.failure_checks(message) == checks
    assert R.headline(message) == shown == R.Outcome("FAIL", message).first_line


def test_the_headline_of_a_guarded_failure_is_the_check_with_its_fragment():
    assert R.headline(SEVERAL, "ai_response count was … expected == 1") == "ai_response count was 2, expected == 1 (+2 more)"
    assert R.headline(SEVERAL, "no such check") == "agent_state.message_count was 19, expected == 20 (+2 more)"


def test_a_real_robot_run_with_several_failures_is_shown_by_its_first_failing_check(tmp_path):
    (tmp_path / "several.robot").write_text(SEVERAL_SUITE, encoding="utf-8")
    run = R.run_robot(tmp_path / "several.robot", tmp_path / "out", timeout=120, project=tmp_path)
    several = run.outcomes["Several Checks Fail"]
    assert several.status == "FAIL" and several.message == SEVERAL  # Robot's own wording, as SEVERAL has it
    assert several.checks == R.failure_checks(SEVERAL) and len(several.checks) == 3
    assert several.first_line == "agent_state.message_count was 19, expected == 20 (+2 more)"
    assert run.outcomes["Setup Fails"].first_line == "setup failed: mock did not start"
    assert run.outcomes["Test And Teardown Fail"].first_line == "body broke (+1 more)"


def test_every_report_shows_the_failing_check_not_several_failures_occurred(tmp_path):
    """A baseline failing several times, and a guarded scenario whose expected message is the
    second of three failures: problems, cells, json, markdown and html all name the check."""
    guarded = FaultMode("idempotency", C.MOCK, "dups", (Expectation("1", {"A one": "ai_response count was 2"}),))
    out = tmp_path / "out"
    cells = [
        result(NONE, ALPHA, outcomes(A_one=("FAIL", SEVERAL), A_two="PASS", A_three="PASS"), output_dir=out / "n"),
        result(guarded, ALPHA, outcomes(A_one=("FAIL", SEVERAL), A_two="PASS", A_three="PASS"), output_dir=out / "g"),
    ]
    matrix = R.Matrix((ALPHA,), R.judge(cells), output=out)
    baseline, row = matrix.rows
    assert [p.text for p in baseline.problems] == [
        "suite 1, 'A one' failed: agent_state.message_count was 19, expected == 20 (+2 more)"
    ]
    assert row.verdict == R.CAUGHT
    data = report.to_json(matrix)
    assert data["rows"][0]["cells"]["1"]["A one"]["message_first_line"] == (
        "agent_state.message_count was 19, expected == 20 (+2 more)"
    )
    assert data["rows"][1]["cells"]["1"]["A one"]["message_first_line"] == "ai_response count was 2, expected == 1 (+2 more)"
    assert data["rows"][1]["cells"]["1"]["A one"]["failures"] == 3
    text, page = report.to_markdown(matrix), report.to_html(matrix)
    assert "- **1.1** A one: ai_response count was 2, expected == 1 (+2 more)" in text
    assert 'title="failed as expected: ai_response count was 2, expected == 1 (+2 more)"' in page
    assert 'title="failed without a fault: agent_state.message_count was 19, expected == 20 (+2 more)"' in page
    for written in (text, page, json.dumps(data)):
        assert "Several failures occurred" not in written


# --------------------------------------------------------------------------- report: words and colours, no emoji


def every_kind_of_cell_matrix(tmp_path: Path) -> R.Matrix:
    """Rows with every kind of cell: pass, skip, not run, failures expected, unexpected and for the
    wrong reason, missed (passed, skipped, not run), inconclusive and n/a."""
    out = tmp_path / "out"
    third = FaultMode("third", C.MOCK, "breaks A three", (Expectation("1", {"A three": "three broke"}),))
    wrong = FaultMode("wrong", C.MOCK, "breaks A one", (Expectation("1", {"A one": "one broke"}),))
    cells = [
        result(NONE, ALPHA, outcomes(A_one="PASS", A_two=("SKIP", "no push"), A_three=("FAIL", SEVERAL))),
        result(BREAK_ONE, ALPHA, outcomes(A_one=("FAIL", "one broke"), A_two=("FAIL", "collateral"), A_three="PASS")),
        result(BOTH, ALPHA, outcomes(A_one="PASS", A_two=("SKIP", "no op"), A_three="PASS")),
        result(BOTH, BETA, outcomes(B_two=("FAIL", "b broke"))),  # B one: not part of the run
        result(third, ALPHA, outcomes(A_one="PASS", A_two="PASS")),  # A three: not run
        result(wrong, ALPHA, outcomes(A_one=("FAIL", "other"), A_two="PASS", A_three="PASS")),
        result(ON_BETA, BETA, {"B one": inconclusive("b1"), "B two": R.Outcome("PASS")}),
        R.CellResult(R.Cell(UNGUARDED, BETA, (), runnable=False)),
    ]
    return R.Matrix((ALPHA, BETA), R.judge(cells), output=out)


@pytest.mark.parametrize(
    ("row", "test", "words", "css"),
    [
        ("none", "A one", "pass", "pass"),
        ("none", "A two", "skip", "skip"),
        ("none", "A three", "fail: unexpected", "failed"),
        ("break_one", "A one", "failed as expected", "expected"),
        ("break_one", "A two", "fail: unexpected", "collateral"),
        ("both", "A two", "skip: missed!", "missed"),
        ("both", "B one", "not run", "notrun"),
        ("third", "A three", "not run: missed!", "missed"),
        ("wrong", "A one", "fail: wrong reason", "wrong"),
        ("on_beta", "B one", "inconclusive", "inconclusive"),
        ("proxy:mystery", "B one", "n/a", "na"),
    ],
)
def test_a_cell_says_in_words_what_happened_judged_against_its_row(tmp_path, row, test, words, css):
    matrix = every_kind_of_cell_matrix(tmp_path)
    found = next(r for r in matrix.rows if r.fault.name == row)
    [cell] = [c for c in found.cells if test in c.cell.suite.tests]
    shown = report.mark(cell, test)
    assert (shown.words, shown.css) == (words, css)
    assert css in report.KINDS


def test_a_guarded_test_that_passed_is_shown_missed():
    row = rows_with(R.MISSED)[1]
    assert report.mark(row.cells[0], "A one") == report.Mark("pass: missed!", "missed", "missed: must fail (one broke) but: pass")


#: Characters every default font has: printable ASCII (the reports' own words are ASCII; only
#: quoted messages, ASCII in these fakes, could bring others).
SAFE = set(map(chr, range(0x20, 0x7F))) | {"\n"}


def test_the_reports_use_no_emoji_nor_any_character_a_default_font_may_lack(tmp_path):
    matrix = every_kind_of_cell_matrix(tmp_path)
    text, page = report.to_markdown(matrix), report.to_html(matrix)
    for written in (text, page, report.LEGEND):
        assert set(written) <= SAFE, sorted(set(written) - SAFE)
    for old in ("✅", "❌", "⚠", "❗", "◐", "⏭", "·", "✓", "✗"):
        assert old not in text and old not in page
    shown = set(re.findall(r'<td class="cell (\w+)"', page.split("<h2>", 1)[1]))  # the matrix's cells, not the legend
    assert shown == set(report.KINDS), "the fixture must show every kind of cell"


def test_the_legend_lists_every_cell_kind_with_its_words_and_colour(tmp_path):
    text, page = report.to_markdown(fake_matrix(tmp_path)), report.to_html(fake_matrix(tmp_path))
    for kind in report.CELL_KINDS:
        assert f"- `{kind.words}` ({kind.colour}): " in text
        assert f'<td class="cell {kind.css}">{kind.words}</td>' in page
    assert "**caught** (good news: the suites detect it)" in report.LEGEND


def css_background(page: str, selector: str) -> str:
    found = re.search(rf"^{re.escape(selector)} \{{ background: (#[0-9a-f]{{6}});", page, re.MULTILINE)
    assert found, f"no background for {selector}"
    return found.group(1)


def test_colours_read_as_a_stakeholder_reads_them(tmp_path):
    """Failing as guarded is calm blue, not alarming red; caught and green are green; missed,
    wrong-reason, gap and a red baseline red; collateral amber; inconclusive grey-amber."""
    page = report.to_html(every_kind_of_cell_matrix(tmp_path))
    blue, green, red, amber = (report.COLOURS[c][0] for c in ("blue", "green", "red", "amber"))
    assert css_background(page, ".expected") == blue
    assert css_background(page, ".pass") == css_background(page, ".tone-good") == green
    for selector in (".missed", ".wrong", ".failed", ".tone-bad"):
        assert css_background(page, selector) == red
    assert css_background(page, ".collateral") == css_background(page, ".tone-warn") == amber
    assert css_background(page, ".inconclusive") == css_background(page, ".tone-unsure") == report.COLOURS["grey-amber"][0]
    assert len({blue, green, red, amber, report.COLOURS["grey-amber"][0]}) == 5
    tones = {verdict: report.VERDICT_TONE[verdict] for verdict in R.VERDICTS}
    assert tones == {"green": "good", "caught": "good", "red": "bad", "missed": "bad", "wrong-reason": "bad",
                     "gap": "bad", "caught+collateral": "warn", "inconclusive": "unsure", "n/a": "neutral"}  # fmt: skip


def test_a_caught_row_is_green_in_words_and_its_guarded_cells_are_expected_failures_not_red(tmp_path):
    page = report.to_html(fake_matrix(tmp_path))
    row = next(line for line in page.splitlines() if "<code>break_one</code>" in line and "<tr>" in line)
    assert '<span class="verdict v-caught tone-good">caught (good: the suites detect this fault)</span>' in row
    assert '<td class="cell expected" title="failed as expected: one broke' in row
    assert not re.search(r'class="cell (failed|wrong|missed|collateral)"', row)
    baseline = next(line for line in page.splitlines() if "<code>none</code>" in line and "<tr>" in line)
    assert '<span class="verdict v-green tone-good">green (no fault: every scenario passed)</span>' in baseline


def test_verdict_words_for_baselines_and_an_inconclusive_row(tmp_path):
    rows = {row.fault.name: row for row in every_kind_of_cell_matrix(tmp_path).rows}
    assert report.verdict_text(rows["none"]) == "red (no fault, yet a scenario failed)"
    assert report.verdict_text(rows["on_beta"]) == "inconclusive (not judged: the load generator fell behind its schedule)"
    assert report.verdict_text(rows["wrong"]) == "wrong-reason (bad: a guarding scenario failed for another reason)"
    assert report.verdict_text(rows["proxy:mystery"]) == "n/a (needs the built-in mock)"
    timed_out = R.judge_row(NONE, [result(NONE, ALPHA, {}, error="robot timed out after 300 s")])
    assert report.verdict_text(timed_out) == "red (no fault, yet a run timed out or crashed)"
    skipped = R.judge_row(NONE, [result(NONE, ALPHA, outcomes(A_one="PASS", A_two=("SKIP", "no op"), A_three="PASS"))])
    assert report.verdict_text(skipped) == "green (no fault: every scenario passed or was skipped)"


# --------------------------------------------------------------------------- progress


def progress_for(cells, jobs=1):
    clock, lines = FakeClock(), []
    return R.Progress(cells, lines.append, jobs=jobs, clock=clock), clock, lines


def finish(progress: R.Progress, clock: FakeClock, cell: R.Cell, seconds: float) -> None:
    progress.started(cell)
    clock.advance(seconds)
    progress.done(R.CellResult(cell, {}))


@pytest.mark.parametrize(("jobs", "left"), [(1, "about 4m left"), (2, "about 2m left"), (4, "about 2m left")])
def test_the_time_left_takes_the_jobs_running_at_once_into_account(jobs, left):
    """Four alpha cells of 100 s each: two finished; one starts, one waits. Two jobs halve the
    time left, more jobs than cells cannot go below the longest one."""
    cells = [R.Cell(row, ALPHA) for row in (NONE, PROXY, BREAK_ONE, BOTH)]
    progress, clock, lines = progress_for(cells, jobs)
    finish(progress, clock, cells[0], 100)
    finish(progress, clock, cells[1], 100)
    progress.started(cells[2])
    assert lines[-1] == f"[apex-faults] run 3 of 4: break_one (suite 1) \u2014 elapsed 3m20s, {left}"


def test_the_time_left_uses_each_suites_own_mean_and_runs_exclusive_suites_one_after_another():
    alpha, beta_full, beta_only = R.Cell(NONE, ALPHA), R.Cell(NONE, BETA), R.Cell(BOTH, BETA, ("B two",))
    progress, clock, lines = progress_for([alpha, beta_full, beta_only, R.Cell(ON_BETA, BETA)], jobs=4)
    assert progress.seconds_left(clock()) is None
    finish(progress, clock, alpha, 60)
    finish(progress, clock, beta_full, 600)
    assert progress.expected_seconds(R.Cell(BREAK_ONE, ALPHA)) == 60
    assert progress.expected_seconds(beta_only) == 600  # no targeted beta run yet: the suite's mean
    finish(progress, clock, beta_only, 30)
    assert progress.expected_seconds(beta_only) == 30 and progress.expected_seconds(R.Cell(ON_BETA, BETA)) == 600
    assert progress.seconds_left(clock()) == 600  # on_beta: beta is exclusive, jobs do not share it
    clock.advance(10)
    progress.started(progress.pending[0])
    clock.advance(200)
    assert progress.seconds_left(clock()) == 400  # what is left of the running one
    assert lines[0].endswith("elapsed 0s, estimating\u2026") and lines[-1].endswith("elapsed 11m40s, about 10m left")
    assert [line.startswith("[apex-faults] run ") for line in lines] == [True, False] * 3 + [True]


@pytest.mark.parametrize(
    ("seconds", "elapsed", "left"),
    [(0, "0s", "1s"), (41.6, "42s", "42s"), (252, "4m12s", "5m"), (540, "9m00s", "9m"), (3780, "1h03m", "1h03m"),
     (3781, "1h03m", "1h04m")],
)  # fmt: skip
def test_durations_in_progress_lines(seconds, elapsed, left):
    assert (R.duration_text(seconds), R.left_text(seconds)) == (elapsed, left)


def test_cli_prints_a_line_per_run_start_and_end_on_stdout(tmp_path, capsys):
    run_cli(tmp_path, "--jobs", "2")
    out = capsys.readouterr().out.splitlines()
    starts = [line for line in out if line.startswith("[apex-faults] run ")]
    ends = [line for line in out if re.match(r"\[\s*\d+/10\] ", line)]
    assert len(starts) == len(ends) == 10
    assert starts[0].startswith("[apex-faults] run 1 of 10: none (suite ") and starts[0].endswith("estimating\u2026")
    assert sorted(int(line.split()[2]) for line in starts) == list(range(1, 11))
    assert all(re.search(r" \u2014 elapsed \d+s, (estimating\u2026|about \d+s left)$", line) for line in starts)


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
    assert robot.calls[0][0] == {"APEX_DIALECT": "apex"} and robot.calls[0][1] == ALPHA.file
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


def test_every_run_gets_the_dialect_apex_by_default_and_the_report_says_so(tmp_path):
    code, robot, data = run_cli(tmp_path)
    assert code == 0 and robot.calls
    assert all(call[0]["APEX_DIALECT"] == "apex" for call in robot.calls)
    assert data["dialect"] == "apex" and data["title"] == "Fault matrix (apex dialect)"
    assert data["rows"][2]["runs"]["1"]["variables"] == {"APEX_MOCK_FAULTS": "break_one", "APEX_DIALECT": "apex"}
    assert (tmp_path / "matrix" / "matrix.md").read_text(encoding="utf-8").startswith("# Fault matrix (apex dialect)\n")


def test_dialect_netra_reaches_every_robot_run_the_re_runs_and_the_report(tmp_path):
    def answer(variables, suite_file, tests):
        if variables.get("APEX_MOCK_FAULTS") == "break_one" and not tests:
            return {"A one": inconclusive(), "A two": R.Outcome("PASS"), "A three": R.Outcome("PASS")}
        return guarded_answers(variables, suite_file, tests)

    code, robot, data = run_cli(tmp_path, "--dialect", "netra", "--fault", "break_one", "--fault", "proxy:mystery",
                                answers=answer)
    assert code == 0  # proxy:mystery is an unguarded gap: it does not decide the exit code
    rows = {row["name"]: row for row in data["rows"]}
    # baselines, the fault row, its re-run and the proxy row: all in netra, nothing else changed
    assert [call[0] for call in robot.calls if call[1] == ALPHA.file] == [
        {"APEX_DIALECT": "netra"},
        {"APEX_PROXY": "on", "APEX_DIALECT": "netra"},
        {"APEX_MOCK_FAULTS": "break_one", "APEX_DIALECT": "netra"},
        {"APEX_MOCK_FAULTS": "break_one", "APEX_DIALECT": "netra"},
        {"APEX_PROXY": "on", "APEX_PROXY_FAULTS": "mystery", "APEX_DIALECT": "netra"},
    ]
    assert all(call[0]["APEX_DIALECT"] == "netra" for call in robot.calls)
    assert rows["break_one"]["verdict"] == "caught" and rows["break_one"]["runs"]["1"]["rerun"]["tests"] == ["A one"]
    assert rows["break_one"]["runs"]["1"]["variables"]["APEX_DIALECT"] == "netra"
    assert data["dialect"] == "netra" and data["title"] == "Fault matrix (netra dialect)"
    assert (tmp_path / "matrix" / "matrix.md").read_text(encoding="utf-8").startswith("# Fault matrix (netra dialect)\n")
    page = (tmp_path / "matrix" / "matrix.html").read_text(encoding="utf-8")
    assert "<title>Fault matrix (netra dialect)</title>" in page and "<h1>Fault matrix (netra dialect)</h1>" in page


def test_dialect_wins_over_a_variable_file_and_an_unknown_one_is_a_usage_error(tmp_path, capsys):
    netra_file = tmp_path / "netra.py"
    netra_file.write_text("APEX_DIALECT = 'netra'\n")
    _, robot, data = run_cli(tmp_path, "--variablefile", str(netra_file), "--fault", "break_one")
    # robot gives a command-line variable precedence over a variable file: the matrix says what ran
    assert all(call[0]["APEX_DIALECT"] == "apex" and call[3] == [netra_file.resolve()] for call in robot.calls)
    assert data["dialect"] == "apex"
    fake_project(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--suites-dir", str(tmp_path / "suites"), "--dialect", "klingon"], catalogue=FAKE,
                 run=FakeRobot(guarded_answers))
    assert exit_info.value.code == 2
    assert "argument --dialect: invalid choice: 'klingon' (choose from apex, netra)" in capsys.readouterr().err.replace("'apex', 'netra'", "apex, netra")


def test_the_runner_passes_the_dialect_as_a_robot_variable(tmp_path):
    settings = R.Settings(tmp_path / "out", fake_project(tmp_path), dialect="netra")
    [cell] = R.plan_cells([BREAK_ONE], [ALPHA])
    assert R.cell_variables(cell, settings) == {"APEX_MOCK_FAULTS": "break_one", "APEX_DIALECT": "netra"}
    assert R.DIALECTS == ("apex", "netra") and R.Settings(tmp_path, settings.project).dialect == "apex"
    command = R.robot_command(tmp_path / "s.robot", tmp_path / "o", variables=R.cell_variables(cell, settings))
    assert command[-5:] == ["--variable", "APEX_MOCK_FAULTS:break_one", "--variable", "APEX_DIALECT:netra", str(tmp_path / "s.robot")]


def test_cli_help_documents_the_dialect(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--dialect {apex,netra}" in out and "-v APEX_DIALECT:netra" in out


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
    assert {"APEX_MOCK_FAULTS": "break_one", "APEX_DIALECT": "apex"} in [call[0] for call in robot.calls]


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
    grandchild = int(pid_file.read_text())
    assert _eventually_dead(grandchild), f"the grandchild {grandchild} outlived its killed group"


def test_kill_group_escalates_to_sigkill_and_waits_until_the_group_is_gone(tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    process = processes.popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"  # SIGTERM is ignored from here on
        assert processes.kill_group(process, grace=0.3)
        assert processes.group_members(process.pid) == [] and process.returncode == -signal.SIGKILL
    finally:
        processes.signal_group(process.pid, signal.SIGKILL)
        process.wait(10)


PARENT = """
import sys, threading
from apex_faults.processes import popen
started = []
def start():  # a short-lived thread: the child must not die when it ends, only with the process
    started.append(popen([sys.executable, "-c", "import time; time.sleep(60)"]))
thread = threading.Thread(target=start)
thread.start()
thread.join()
child = started[0]
try:
    child.wait(0.5)
    print("died with its thread", flush=True)
except Exception:
    print(child.pid, flush=True)
sys.stdin.read()  # until killed
"""


def test_a_child_started_with_popen_dies_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = None
    try:
        line = parent.stdout.readline().strip()
        assert line.isdigit(), f"the child did not outlive the thread that started it: {line!r}"
        child = int(line)
        assert not _eventually_dead(child, timeout=0.0)
        parent.kill()  # SIGKILL: nothing of the parent's own code runs
        parent.wait(10)
        assert _eventually_dead(child), f"child {child} outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait(10)
        if child is not None and not _eventually_dead(child, timeout=0.0):
            os.killpg(child, signal.SIGKILL)


def test_die_with_parent_ends_a_child_whose_parent_is_already_gone(monkeypatch):
    """The race: the parent died between fork and prctl; the child sees another parent pid and exits."""
    preexec = processes.die_with_parent()
    monkeypatch.setattr(processes.os, "getppid", lambda: -1)
    exits = []
    monkeypatch.setattr(processes.os, "_exit", exits.append)
    monkeypatch.setattr(processes, "_PRCTL", None)
    preexec()
    assert exits == [128 + signal.SIGTERM]


def _eventually_dead(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` is gone (or a zombie) within ``timeout`` s, polling."""
    deadline = time.monotonic() + timeout
    while True:
        if _dead(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)  # polling interval of a condition with a deadline


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting to be reaped (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_missing_output_xml_is_a_clear_error_naming_exit_code_and_output(tmp_path):
    done = R.Completed(252, "[ ERROR ] Suite 'x' contains no tests.", False, 0.4)
    with pytest.raises(R.RobotRunError, match=r"robot wrote no output.xml in .* \(exit code 252\)\. Console output:\n\[ ERROR \]"):
        R.read_outcomes(tmp_path / "output.xml", done)


# --------------------------------------------------------------------------- fragments: facts, not measurements

#: ``expected <op> <threshold>[ unit]``: the part of a failure message that is the suite's, not the run's.
THRESHOLD = re.compile(r"expected (?:==|!=|<=|>=|<|>) (…|-?\d+(?:\.\d+)?)(?: ([A-Za-z%/]+))?")
#: A decimal number, or a number with a time unit, that is not part of a label such as ``R1.1``.
MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ns|µs|us|ms|s|min|h)\b|(?<![\w.])\d+\.\d+(?![\w.])")


def every_fragment():
    return [
        (fault.name, expectation.suite, test, fragment)
        for fault in C.FAULTS
        for expectation in fault.expectations
        for test, fragment in expectation.fails.items()
    ]


def measured_numbers(fragment: str) -> list[str]:
    """The measured times and ratios in ``fragment``: decimals or timed numbers outside ``expected <op> <threshold>``."""
    return MEASURED.findall(THRESHOLD.sub("", fragment))


@pytest.mark.parametrize(
    ("fragment", "found"),
    [
        ("latency p95 of load 'benchmark' was 0.3", ["0.3"]),
        ("reconnect time mean was 0.6 s, expected < 0.3 s", ["0.6 s"]),
        ("every response is sent 1200 ms late", ["1200 ms"]),
        ("latency p95 of load 'benchmark' was … s, expected <= 0.2 s", []),
        ("delivery ratio was …, expected >= 0.95. 129 of 150 messages answered", []),
        ("No duplicate deliveries: 5 of 10 failed: R1.1 (normal)", []),
        ("agent_state.message_count was 19, expected == 20", []),
    ],
)
def test_the_measured_number_detector(fragment, found):
    assert measured_numbers(fragment) == found


def test_no_fragment_expects_a_measured_time_or_ratio():
    """A measured figure moves with the machine: fragments name the figure, load and threshold, with
    ``…`` for the value; counts the fault makes certain are fine."""
    offending = [
        f"{name} / suite {suite} / {test!r}: {fragment!r} contains {numbers}"
        for name, suite, test, fragment in every_fragment()
        if (numbers := measured_numbers(fragment))
    ]
    assert not offending, "\n".join(offending)


def suite_variable_values() -> tuple[set[str], set[str]]:
    """Every suite and resource variable's value as the library formats a threshold: (numbers, times)."""
    from MessagingLibrary.context import plain_value as format_value
    from robot.utils import timestr_to_secs

    numbers, times = set(), set()
    files = [*(ROOT / "suites").glob("*.robot"), *(ROOT / "resources").glob("*.resource")]
    for path in files:
        for match in re.finditer(r"^\$\{\w+\}[ \t]{2,}(\S.*?)\s*$", path.read_text(encoding="utf-8"), re.MULTILINE):
            value = match.group(1)
            literal = re.fullmatch(r"\$\{(-?\d+(?:\.\d+)?)\}", value)
            if literal or re.fullmatch(r"-?\d+(?:\.\d+)?", value):
                number = float(literal.group(1) if literal else value)
                numbers.add(format_value(int(number) if number.is_integer() else number, ""))
                numbers.add(format_value(number, ""))
            if re.fullmatch(r"\d+(?:\.\d+)? ?(?:ms|s|seconds?|min)", value):
                times.add(format_value(float(timestr_to_secs(value, round_to=None)), "s"))
    return numbers, times


def test_every_threshold_in_a_fragment_is_a_suite_variable_as_the_library_formats_it():
    """``expected <= 0.2 s`` must be what the library prints for ``${MAX_P95}  200 ms``; integer
    counts (``== 20``, ``> 0``) and the wildcard are not checked."""
    numbers, times = suite_variable_values()
    wrong = []
    for name, suite, test, fragment in every_fragment():
        for value, unit in THRESHOLD.findall(fragment):
            if value == "…" or (not unit and "." not in value):
                continue
            known = times if unit == "s" else numbers
            shown = f"{value} s" if unit == "s" else value
            if shown not in known:
                wrong.append(f"{name} / suite {suite} / {test!r}: threshold {shown!r} is no suite variable's value")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("fragment", "message", "matches"),
    [
        ("latency p95 of load 'benchmark' was … s, expected <= 0.2 s",
         "latency p95 of load 'benchmark' was 0.4042 s, expected <= 0.2 s", True),
        ("latency p95 of load 'benchmark' was … s, expected <= 0.2 s",
         "Several failures occurred:\n\n1) latency p95 of load 'benchmark' was 1.2 s, expected <= 0.2 s [faults]", True),
        ("latency p95 of load 'benchmark' was … s, expected <= 0.2 s",
         "latency p95 of load 'benchmark' was 0.4042 s, expected <= 0.5 s", False),
        ("delivery ratio was …, expected >= 0.95. 129 of 150 messages answered",
         "delivery ratio was 0.86, expected >= 0.95. 129 of 150 messages answered", True),
        ("a … c", "a b\nc", False),  # within one line
        ("was 1.2 (literal)", "it was 1.2 (literal) indeed", True),
        ("x.*y", "x and y", False),  # only … is special
    ],
)  # fmt: skip
def test_fragment_wildcard_matches_any_text_within_a_line(fragment, message, matches):
    assert C.fragment_matches(fragment, message) is matches


def test_a_fragment_with_a_wildcard_is_judged_caught():
    fault = FaultMode("slowish", C.MOCK, "slow", (Expectation("1", {"A one": "p95 was … s, expected <= 0.2 s"}),))
    found = outcomes(A_one=("FAIL", "p95 was 0.4042 s, expected <= 0.2 s"), A_two="PASS", A_three="PASS")
    assert R.judge_row(fault, [result(fault, ALPHA, found)]).verdict == R.CAUGHT


# --------------------------------------------------------------------------- inconclusive

INCONCLUSIVE_MESSAGE = (
    "Inconclusive: the load generator fell behind its schedule (412 of 10,000 sends more than 10 ms late; "
    "client CPU 99% of a core): this run cannot judge the server's rate or latency."
)


def inconclusive(test_id: str = "") -> R.Outcome:
    return R.Outcome("SKIP", INCONCLUSIVE_MESSAGE, test_id, ("load", "inconclusive"))


def test_an_inconclusive_outcome_is_a_skip_tagged_inconclusive_and_an_ordinary_skip_is_not():
    assert inconclusive().inconclusive
    assert R.Outcome("SKIP", "Inconclusive: no tag, but the library's wording").inconclusive
    assert not R.Outcome("SKIP", "The server does not support 'push' (error unsupported)").inconclusive
    assert not R.Outcome("FAIL", INCONCLUSIVE_MESSAGE, "", ("inconclusive",)).inconclusive


def test_a_guarded_scenario_that_is_inconclusive_is_not_caught_and_the_row_is_inconclusive():
    found = {**outcomes(A_two="PASS", A_three="PASS"), "A one": inconclusive()}
    row = R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, found)])
    assert row.verdict == R.INCONCLUSIVE and not row.failing
    assert [p.text for p in row.problems] == [
        f"suite 1, 'A one' was inconclusive under break_one, so not caught: {INCONCLUSIVE_MESSAGE}"
    ]  # and no "the fault went unnoticed": it could not be judged
    baseline = R.judge_row(NONE, [result(NONE, ALPHA, ALL_PASS_ALPHA)])
    assert R.Matrix((ALPHA,), (baseline, row)).exit_code == R.EXIT_INCONCLUSIVE == 3


def test_an_inconclusive_baseline_is_not_green_and_a_failure_elsewhere_still_exits_1():
    found = {**outcomes(A_one="PASS", A_two=("SKIP", "no op")), "A three": inconclusive()}
    baseline = R.judge_row(NONE, [result(NONE, ALPHA, found)])
    assert baseline.verdict == R.INCONCLUSIVE and not baseline.failing
    assert "'A three' was inconclusive, so not green" in baseline.problems[0].text
    assert R.Matrix((ALPHA,), (baseline,)).exit_code == 3
    missed = rows_with(R.MISSED)[1]
    assert R.Matrix((ALPHA,), (baseline, missed)).exit_code == 1


def test_an_inconclusive_test_a_fault_row_does_not_guard_does_not_decide_it():
    found = {**outcomes(A_one=("FAIL", "one broke"), A_two="PASS"), "A three": inconclusive()}
    assert R.judge_row(BREAK_ONE, [result(BREAK_ONE, ALPHA, found)]).verdict == R.CAUGHT


def test_an_inconclusive_cell_is_re_run_once_with_only_its_inconclusive_tests(tmp_path):
    def answer(variables, suite_file, tests):
        if variables.get("APEX_MOCK_FAULTS") != "break_one":
            return guarded_answers(variables, suite_file, tests)
        if not tests:  # the first run: the generator fell behind on two tests
            return {"A one": inconclusive(), "A two": inconclusive(), "A three": R.Outcome("PASS")}
        return {"A one": R.Outcome("FAIL", "broken: one broke"), "A two": R.Outcome("PASS")}

    robot, lines = FakeRobot(answer), []
    settings = R.Settings(tmp_path / "out", fake_project(tmp_path), run=robot)
    [done] = R.execute(R.plan_cells([BREAK_ONE], [ALPHA]), settings, lines.append)
    assert [call[2] for call in robot.calls] == [(), ("A one", "A two")]
    assert robot.calls[0][0] == robot.calls[1][0] == {"APEX_MOCK_FAULTS": "break_one", "APEX_DIALECT": "apex"}
    assert done.rerun.tests == ("A one", "A two") and done.rerun.output_dir == done.output_dir / "rerun"
    assert done.outcome("A one").status == "FAIL" and done.outcome("A three").status == "PASS"
    assert R.judge_row(BREAK_ONE, [done]).verdict == R.CAUGHT
    assert lines[0].startswith("[apex-faults] run 1 of 1: break_one (suite 1)")
    assert lines[1] == "      break_one × suite 1: 2 inconclusive, re-running once: A one, A two"
    assert lines[2] == "[1/1] break_one × suite 1: 1 of 3 failed (after re-running 2 inconclusive) (as guarded) 3.0 s"
    assert len(lines) == 3


def test_a_row_still_inconclusive_after_its_re_run_exits_3_and_the_report_shows_it(tmp_path, capsys):
    def answer(variables, suite_file, tests):
        found = guarded_answers(variables, suite_file, tests)
        if variables.get("APEX_MOCK_FAULTS") == "break_one":
            found["A one"] = inconclusive("s1-t1")
        return found

    code, robot, data = run_cli(tmp_path, "--fault", "break_one", answers=answer)
    assert code == 3 and data["exit_code"] == 3
    assert [call[2] for call in robot.calls if "APEX_MOCK_FAULTS" in call[0]] == [(), ("A one",)]  # once re-run
    row = data["rows"][2]
    assert row["verdict"] == "inconclusive"
    assert row["runs"]["1"]["rerun"]["still_inconclusive"] == ["A one"]
    assert row["runs"]["1"]["rerun"]["output_dir"] == "runs/break_one/01__alpha/rerun"
    assert row["cells"]["1"]["A one"]["inconclusive"] and row["cells"]["1"]["A one"]["rerun"]
    out = capsys.readouterr().out
    assert "1 fault mode, 0 caught, 0 gaps, 1 inconclusive; no-fault runs green" in out
    assert "break_one: suite 1: re-ran 1 inconclusive test once (1.1): 1 still inconclusive" in out
    markdown = (tmp_path / "matrix" / "matrix.md").read_text()
    verdict = "inconclusive (not judged: the load generator fell behind its schedule (re-run once))"
    assert f"| `break_one`: {verdict} | inconclusive | pass | pass |" in markdown and "## Re-runs" in markdown
    page = (tmp_path / "matrix" / "matrix.html").read_text()
    assert '<td class="cell inconclusive" title="inconclusive (re-run once, still inconclusive): Inconclusive: the load' in page
    assert f'<span class="verdict v-inconclusive tone-unsure">{verdict}</span>' in page
    assert 'href="runs/break_one/01__alpha/rerun/log.html#s1-t1"' in page


# --------------------------------------------------------------------------- a selection that runs nothing


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--suite", "1", "--fault", "on_beta"],
         "fault 'on_beta' is not run on suite 1 (it is guarded on suite 2); add --everywhere to run it there anyway"),
        (["--suite", "2", "--layer", "mock", "--fault", "break_one"],
         "fault 'break_one' is not run on suite 2 (it is guarded on suite 1); add --everywhere to run it there anyway"),
    ],
)  # fmt: skip
def test_a_selection_that_runs_no_cell_exits_2_saying_why_in_one_line(tmp_path, capsys, argv, says):
    robot = FakeRobot(guarded_answers)
    fake_project(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--suites-dir", str(tmp_path / "suites"), "--output", str(tmp_path / "m"), *argv], catalogue=FAKE, run=robot)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"apex-faults: error: {says}\n"
    assert robot.calls == [] and not (tmp_path / "m").exists()


def test_the_real_catalogue_says_where_reorder_is_guarded(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--suite", "2", "--fault", "reorder"], run=FakeRobot(guarded_answers))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "apex-faults: error: fault 'reorder' is not run on suite 2 (it is guarded on suites 1, 3); "
        "add --everywhere to run it there anyway\n"
    )


def test_only_mock_faults_against_another_server_is_a_selection_that_runs_nothing(tmp_path, capsys):
    staging = tmp_path / "staging.py"
    staging.write_text("APEX_TARGET = 'staging'\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(tmp_path, "--layer", "mock", "--variablefile", str(staging))
    assert exit_info.value.code == 2
    assert "every selected fault row needs the built-in mock" in capsys.readouterr().err


def test_everywhere_or_the_baselines_alone_are_selections_that_run(tmp_path):
    code, robot, data = run_cli(tmp_path, "--suite", "1", "--fault", "on_beta", "--everywhere")
    assert [r["name"] for r in data["rows"]] == ["none", "proxy", "on_beta"]
    assert data["rows"][2]["verdict"] == "gap" and code == 0  # not guarded on suite 1: reported, not failing
    code, _, data = run_cli(tmp_path, "--fault", "none")
    assert code == 0 and [r["name"] for r in data["rows"]] == ["none", "proxy"]


def test_cli_help_documents_every_exit_code_and_inconclusive(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for line in ("  0    the baselines", "  1    a baseline is red", "  2    usage error", "  3    nothing of exit code 1"):
        assert line in out
    assert "inconclusive" in out and "re-run" in out
    assert "3: nothing failed, but a row is inconclusive" in cli.__doc__


def test_charts_can_be_kept_to_the_baseline_runs(tmp_path):
    """``--charts baselines``: the no-fault runs draw charts, the faulted ones run with APEX_CHARTS=off."""
    robot = FakeRobot(guarded_answers)
    settings = R.Settings(tmp_path / "out", fake_project(tmp_path), run=robot, charts="baselines")
    R.execute(R.plan_cells([NONE, BREAK_ONE], [ALPHA]), settings, lambda line: None)
    by_row = {call[0].get("APEX_MOCK_FAULTS", "none"): env for call, env in zip(robot.calls, robot.envs, strict=True)}
    assert by_row == {"none": {}, "break_one": {"APEX_CHARTS": "off"}}
    robot = FakeRobot(guarded_answers)
    R.execute(R.plan_cells([BREAK_ONE], [ALPHA]), R.Settings(tmp_path / "all", fake_project(tmp_path), run=robot),
              lambda line: None)
    assert robot.envs == [{}]  # by default every run draws its charts
