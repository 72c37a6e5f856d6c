"""The load generator judges itself, end to end in Robot (docs/measuring.md).

- A generator starved of CPU (this test pins robot to one core with three CPU hogs beside it,
  so it gets about a quarter of that core, and the mock alone on the other core) at a rate it
  cannot reach: the test ends SKIP, tagged
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
from apex_faults.processes import kill_groups, popen
from apex_faults.runner import read_outcomes, robot_command, robot_environment, run_process_group, run_robot

from .robot_runs import ROOT, hand_started_mock

pytestmark = pytest.mark.suite

SUITE = ROOT / "tests" / "integration" / "robot" / "generator_health.robot"
STARVED = "A Generator That Cannot Keep Its Schedule Makes The Run Inconclusive"
DEAF = "A Server That Stops Reading Fails As The Server's Fault"
#: CPU hogs sharing the generator's core.
HOGS = 3


def _staging(url: str) -> dict[str, str]:
    return {**os.environ, "APEX_WS_URL": url, "APEX_TOKEN": "qa", "APEX_ADMIN_TOKEN": "admin-qa"}


def _run(tmp_path, url: str, test: str, env: dict[str, str]):
    return run_robot(
        SUITE, tmp_path / "out", variable_files=[ROOT / "resources/variables/staging.py"], env=env,
        tests=[test], timeout=180, project=ROOT,
    )


def _run_pinned(tmp_path, test: str, env: dict[str, str], core: int):
    """``_run`` with robot on ``core`` only. Pinning this process would not do: on Linux an
    affinity is a thread's, and robot is forked from apex_faults.processes' own thread."""
    output = tmp_path / "out"
    output.mkdir(parents=True, exist_ok=True)
    robot = robot_command(SUITE, output, variable_files=[ROOT / "resources/variables/staging.py"], tests=[test])
    pin = f"import os, sys; os.sched_setaffinity(0, {{{core}}}); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    done = run_process_group([sys.executable, "-c", pin, *robot[1:]], cwd=ROOT, env=robot_environment(ROOT, env), timeout=180)
    assert not done.timed_out, done.output[-3000:]
    return read_outcomes(output / "output.xml", done)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores to pin the generator and the server apart")
def test_a_starved_generator_ends_the_test_inconclusive_naming_the_generator(tmp_path):
    generator_core, server_core = sorted(os.sched_getaffinity(0))[:2]
    # A quarter of a core: the generator falls far behind even on a machine twice as fast as this
    # one, and stays slower than the mock on its own core, so its lateness is its own and not
    # TCP backpressure (which would make the run fail as the server's fault).
    hogs: list[subprocess.Popen] = []
    try:
        for _ in range(HOGS):
            hogs.append(popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL))
            os.sched_setaffinity(hogs[-1].pid, {generator_core})
        with hand_started_mock(tmp_path / "mock.log") as url:
            for pid in _mock_pids():
                os.sched_setaffinity(pid, {server_core})
            outcomes = _run_pinned(tmp_path, STARVED, _staging(url), generator_core)
    finally:
        kill_groups(hogs)
    outcome = outcomes[STARVED]
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
