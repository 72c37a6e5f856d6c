"""Suite 2 end to end: the checks the fault matrix does not make.

Which offline-queue scenario must fail under which fault, and with what message, is the fault
matrix's catalogue (``apex_faults.catalogue``); ``tests/integration/test_fault_matrix.py``
checks it, and with it the no-fault runs (directly, through the proxy, through the staging
variable file). Here: staging without an admin token, and a server without test control.
"""

from __future__ import annotations

import pytest
from apex_faults.catalogue import Queuing, suite

from .robot_runs import hand_started_mock, run_suite

pytestmark = pytest.mark.suite

SUITE = suite("2").file
SINGLE = Queuing.SINGLE
EVICTION = Queuing.EVICTION


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("queuing")


TOKEN = "qa-token-that-must-never-be-logged-5c1e"
ADMIN_TOKEN = "admin-token-that-must-never-be-logged-9d2b"


def test_staging_without_an_admin_token_fails_the_push_scenarios_naming_it(results_dir, tmp_path):
    with hand_started_mock(tmp_path / "mock.log") as url:
        run = run_suite(
            SUITE,
            results_dir / "staging-no-admin",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": TOKEN, "APEX_ADMIN_TOKEN": ""},
            variables={"DELIVERY_TIMEOUT": "1 s"},
        )
    assert SINGLE in run.failed
    assert "no admin token is set (APEX_ADMIN_TOKEN)" in run.outcomes[SINGLE].message


def test_a_server_without_push_or_configure_session_skips_saying_why(results_dir, tmp_path):
    with hand_started_mock(tmp_path / "mock.log", "--without", "push", "--without", "configure_session") as url:
        run = run_suite(
            SUITE,
            results_dir / "staging-without-test-control",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": TOKEN, "APEX_ADMIN_TOKEN": ADMIN_TOKEN},
        )
    statuses = {name: outcome.status for name, outcome in run.outcomes.items()}
    assert set(statuses.values()) == {"SKIP"}, statuses
    assert "The target has no 'push' operation in dialect 'apex'" in run.outcomes[SINGLE].message
    assert "The target has no 'configure_session' operation in dialect 'apex'" in run.outcomes[EVICTION].message
