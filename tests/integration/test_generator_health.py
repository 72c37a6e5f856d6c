"""The load generator judges itself, end to end in Robot (docs/measuring.md).

- A generator starved of CPU (this test pins robot to one core, a CPU hog beside it, and the
  mock alone on the other core) at a rate it cannot reach: the test ends SKIP, tagged
  ``inconclusive``, saying the generator fell behind; it is neither passed nor failed.
- A server that stops reading (TCP backpressure, the mock's ``stop_reading`` fault): the test
  fails as the server's fault, and is not inconclusive.

No measured number is asserted: statuses, tags and the wording of the messages.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from apex_faults.catalogue import fragment_matches
from apex_faults.processes import kill_group, popen
from apex_faults.runner import run_robot

from .robot_runs import ROOT, hand_started_mock

pytestmark = pytest.mark.suite

SUITE = ROOT / "tests" / "integration" / "robot" / "generator_health.robot"
STARVED = "A Generator That Cannot Keep Its Schedule Makes The Run Inconclusive"
DEAF = "A Server That Stops Reading Fails As The Server's Fault"


def _staging(url: str) -> dict[str, str]:
    return {**os.environ, "APEX_WS_URL": url, "APEX_TOKEN": "qa", "APEX_ADMIN_TOKEN": "admin-qa"}


def _run(tmp_path, url: str, test: str, env: dict[str, str]):
    return run_robot(
        SUITE, tmp_path / "out", variable_files=[ROOT / "resources/variables/staging.py"], env=env,
        tests=[test], timeout=180, project=ROOT,
    )


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores to pin the generator and the server apart")
def test_a_starved_generator_ends_the_test_inconclusive_naming_the_generator(tmp_path):
    generator_core, server_core = sorted(os.sched_getaffinity(0))[:2]
    hog = popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)
    try:
        os.sched_setaffinity(hog.pid, {generator_core})
        with hand_started_mock(tmp_path / "mock.log") as url:
            for pid in _mock_pids():
                os.sched_setaffinity(pid, {server_core})
            # robot (the generator) inherits this process's affinity: the hog's core
            mine = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {generator_core})
            try:
                run = _run(tmp_path, url, STARVED, _staging(url))
            finally:
                os.sched_setaffinity(0, mine)
    finally:
        kill_group(hog)
    outcome = run.outcomes[STARVED]
    assert outcome.status == "SKIP", f"{outcome.status}: {outcome.message}"
    assert outcome.inconclusive
    assert outcome.message.startswith("Inconclusive: the load generator fell behind its schedule in 'starved' (")
    assert fragment_matches("sends more than 50 ms late", outcome.message)
    assert outcome.message.endswith("this run cannot judge the server's rate or latency.")


def test_a_server_that_stops_reading_fails_as_the_servers_fault_not_inconclusive(tmp_path):
    with hand_started_mock(tmp_path / "mock.log", "--fault", "stop_reading=200") as url:
        run = _run(tmp_path, url, DEAF, _staging(url))
    outcome = run.outcomes[DEAF]
    assert outcome.status == "FAIL", f"{outcome.status}: {outcome.message}"
    assert not outcome.inconclusive, outcome.message
    assert fragment_matches("delivery ratio of load 'deaf' was …, expected >= 0.95", outcome.message), outcome.message


def _mock_pids() -> list[int]:
    """The hand-started mock: this process's child running ``apex_mock``."""
    return [p.pid for p in psutil.Process().children() if "apex_mock" in " ".join(p.cmdline())]
