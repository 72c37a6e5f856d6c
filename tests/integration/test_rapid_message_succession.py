"""Suite 1 end to end: the checks the fault matrix does not make.

Each run starts its own mock (the suite setup does) on a free port on 127.0.0.1 and stops it.
Which scenario must fail under which fault, and with what message, is the fault matrix's
catalogue (``apex_faults.catalogue``); ``tests/integration/test_fault_matrix.py`` checks it, and
with it that the suite passes against the mock, directly, through the fault proxy and through
the staging variable file.
"""

from __future__ import annotations

import pytest
from apex_faults.catalogue import Rapid, suite

from .robot_runs import assert_fails_with, hand_started_mock, run_suite

pytestmark = pytest.mark.suite

SUITE = suite("1").file
BENCHMARK = Rapid.BENCHMARK


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rapid")


def test_a_slow_server_misses_the_throughput_target(results_dir, tmp_path):
    """The benchmark's ≥10 msg/s is reachable to miss: a server taking 150 ms a message fails it."""
    with hand_started_mock(tmp_path / "mock.log", "--processing-ms", "150") as url:
        run = run_suite(
            SUITE,
            results_dir / "slow-processing",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": "qa"},
            variables={"RESPONSE_TIMEOUT": "30 s"},
            tests=[BENCHMARK],
        )
    if run.outcomes[BENCHMARK].inconclusive:
        pytest.skip(f"this machine could not keep the send schedule: {run.outcomes[BENCHMARK].message}")
    # 100 messages, each taking 150 ms, cannot be answered at 10 a second, however fast the machine
    assert_fails_with(run, BENCHMARK, "answered throughput was … msg/s, expected >= 10 msg/s")


def test_staging_without_settings_stops_the_run_naming_what_is_missing(results_dir):
    env = {"APEX_WS_URL": "", "APEX_TOKEN": "", "APEX_AUTH_URL": ""}
    run = run_suite(SUITE, results_dir / "staging-missing", variable_files=["resources/variables/staging.py"], env=env)
    assert run.returncode != 0
    assert not run.passed
    for outcome in run.outcomes.values():
        assert "Staging target is not configured; set the environment variable(s): APEX_WS_URL" in outcome.message
        assert "APEX_TOKEN" in outcome.message
