"""A dialect written outside the project, as a team would: docs/dialect_template.py copied,
renamed, and selected with ``--pythonpath DIR -v APEX_DIALECT:module:Class`` (docs/dialects.md).

Suite 1 must pass with it against the built-in mock, and the log must name the dialect. A
dialect that does not load must stop the suite in its setup, naming it, with no test passed.
Robot runs through the project's one way of running it (:mod:`apex_faults.runner`: its own
process group, killed as a whole on timeout); only ``--pythonpath`` is added to its command.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from apex_faults.catalogue import Rapid, suite
from apex_faults.runner import SuiteRun, read_outcomes, robot_command, robot_environment, run_process_group
from robot.api import ExecutionResult

from .robot_runs import ROOT, assert_passed_or_inconclusive

pytestmark = pytest.mark.suite

SUITE = ROOT / "suites" / suite("1").file
TEMPLATE = ROOT / "docs" / "dialect_template.py"
MODULE, CLASS, NAME = "mycompany_dialect", "MyCompanyDialect", "mycompany"


def run_with_dialect(dialect: str, output_dir: Path, pythonpath: Path | None = None, timeout: float = 300) -> SuiteRun:
    """Suite 1 with ``-v APEX_DIALECT:<dialect>`` (and ``--pythonpath``), as a user would run it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    command = robot_command(SUITE, output_dir, variables={"APEX_DIALECT": dialect})
    if pythonpath is not None:
        at = command.index("robot") + 1
        command[at:at] = ["--pythonpath", str(pythonpath)]
    environment = robot_environment(ROOT, {"APEX_DIALECT": "", "APEX_AUTH_IN": ""})
    done = run_process_group(command, cwd=ROOT, env=environment, timeout=timeout)
    assert not done.timed_out, f"robot timed out after {timeout:g} s:\n{done.output[-3000:]}"
    outcomes = read_outcomes(output_dir / "output.xml", done)
    return SuiteRun(done.returncode, outcomes, output_dir, done.output, done.seconds)


def copy_template_as_a_team_would(directory: Path) -> Path:
    """The template copied as ``mycompany_dialect.py``, its class and name renamed by text substitution."""
    module = directory / f"{MODULE}.py"
    shutil.copyfile(TEMPLATE, module)
    text = module.read_text(encoding="utf-8")
    renamed = text.replace("TemplateDialect", CLASS).replace("TemplateCodec", "MyCompanyCodec")
    renamed = re.sub(r'name: ClassVar\[str\] = "template"', f'name: ClassVar[str] = "{NAME}"', renamed)
    assert renamed.count(CLASS) >= 1 and f'"{NAME}"' in renamed, "the template's class or name is not where the docs say"
    module.write_text(renamed, encoding="utf-8")
    return module


def test_the_template_copied_and_renamed_runs_suite_1_against_the_mock(tmp_path):
    copy_template_as_a_team_would(tmp_path)
    run = run_with_dialect(f"{MODULE}:{CLASS}", tmp_path / "out", pythonpath=tmp_path)
    result = ExecutionResult(str(run.output_dir / "output.xml"))
    tests = {test.name: test for test in result.suite.all_tests}
    assert set(tests) == set(Rapid.ALL), f"suite 1 ran {sorted(tests)}"
    assert_passed_or_inconclusive(run, set(Rapid.ALL))
    assert run.passed, "no test passed: every one was inconclusive on this machine"
    output = (run.output_dir / "output.xml").read_text(encoding="utf-8")
    # Configure Target and Connect say which dialect each connection speaks.
    assert f"dialect '{NAME}' (token in header)" in output
    assert "dialect 'apex'" not in output


@pytest.mark.parametrize(
    ("dialect", "named"),
    [
        ("no_such_dialect_module:Dialect", "importing 'no_such_dialect_module' failed"),
        ("netr", "Unknown dialect 'netr' (APEX_DIALECT). Did you mean 'netra'?"),
    ],
    ids=["missing-module", "misspelt-name"],
)
def test_a_dialect_that_does_not_load_fails_the_suite_setup_naming_it(tmp_path, dialect, named):
    run = run_with_dialect(dialect, tmp_path / "out", timeout=120)
    assert run.returncode != 0
    assert set(run.outcomes) == set(Rapid.ALL)
    assert not run.passed
    for name, outcome in run.outcomes.items():
        assert outcome.status == "FAIL", f"{name}: {outcome.status}"
        assert outcome.message.startswith("Parent suite setup failed:"), f"{name}: {outcome.message}"
        assert named in outcome.message, f"{name}: {outcome.message}"
