"""Suite 3 end to end: the checks the fault matrix does not make.

Every run starts its own mock (the suite setup does) on a free port on 127.0.0.1 and stops it;
the load is bounded by the suite's own durations. Which scenario must fail under which fault
(the whole suite, or the guarding scenario alone), and with what message, is the fault
matrix's catalogue (``apex_faults.catalogue``); ``tests/integration/test_fault_matrix.py``
checks it, and with it the no-fault run and its artefacts.
"""

from __future__ import annotations

import json
import warnings

import pytest
from apex_faults.catalogue import Throughput, suite

from .robot_runs import assert_no_secret_in_artefacts, assert_passed_or_inconclusive, hand_started_mock, run_suite

pytestmark = pytest.mark.suite

SUITE = suite("3").file
OVERLOAD = Throughput.OVERLOAD


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("throughput")


TOKEN = "qa-token-that-must-never-be-logged-3c9d"


#: The scenarios whose path differs against a server the suite did not start: reconnecting with
#: the token, the session control and partition operations, the server's memory and CPU from
#: ``server_stats`` (written by the connection scaling's resource monitor).
#: (The whole suite runs through the staging variable file in the netra dialect,
#: tests/integration/test_netra_dialect.py, and against the built-in mock in the fault matrix.)
STAGING_PATHS = (Throughput.DROPS, OVERLOAD, Throughput.CONNECTIONS, Throughput.MEMORY, Throughput.RECOVERY)


def test_the_scenarios_pass_through_the_staging_variable_file_against_a_mock_started_by_hand(results_dir, tmp_path):
    """Server memory and CPU then come from server_stats, not from a process the library started."""
    with hand_started_mock(tmp_path / "mock.log") as url:
        run = run_suite(
            SUITE,
            results_dir / "staging",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": TOKEN},
            tests=list(STAGING_PATHS),
            timeout=400,
        )
    inconclusive = assert_passed_or_inconclusive(run, set(STAGING_PATHS))
    if inconclusive:
        warnings.warn(f"inconclusive on this machine (the load generator fell behind): {sorted(inconclusive)}", stacklevel=1)
    resources = json.loads(sorted((run.output_dir / "monitor").glob("*.json"))[0].read_text())
    assert resources["server"]["source"].startswith("server_stats")
    assert_no_secret_in_artefacts(run.output_dir, TOKEN)


def test_a_server_without_session_control_skips_the_overload_scenarios_saying_why(results_dir, tmp_path):
    with hand_started_mock(tmp_path / "mock.log", "--without", "configure_session") as url:
        run = run_suite(
            SUITE,
            results_dir / "without-configure",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": "qa"},
            tests=[OVERLOAD],
            timeout=120,
        )
    outcome = run.outcomes[OVERLOAD]
    assert outcome.status == "SKIP", outcome
    assert "The target has no 'configure_session' operation in dialect 'apex'" in outcome.message
    assert "unsupported" in outcome.message
