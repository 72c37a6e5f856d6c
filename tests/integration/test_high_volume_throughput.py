"""Suite 3 end to end: green against a correct mock, red in exactly the expected tests under each fault.

Every run starts its own mock (the suite setup does) on a free port on 127.0.0.1 and stops it;
the load is bounded by the suite's own durations. The expected failures are the specification:
a fault must break the scenario that guards its guarantee, with a message naming what was
measured, and leave the unrelated scenarios passing.
"""

from __future__ import annotations

import json
import time

import pytest

from .robot_runs import assert_fails_exactly, assert_no_secret_in_artefacts, hand_started_mock, run_suite

pytestmark = pytest.mark.suite

SUITE = "03__high_volume_throughput.robot"
RATES = "Throughput Keeps Up With The Offered Rate"
FLOOD = "Order Holds Under A 10,000-Message Flood"
TEN = "Order Holds On Each Of Ten Connections"
DROPS = "Every Message Is Processed Exactly Once Despite Connection Drops"
OVERLOAD = "Overload Is Signalled And Service Recovers"
LATENCY = "Latency Percentiles Stay Within Target Under Constant Arrival Rate"
CONNECTIONS = "Connections Scale From 1 To 500"
MEMORY = "Memory Stays Bounded Under Sustained Load"
RECOVERY = "Service Recovers From Connection Drops And Overload"
BENCHMARK = "Phased Benchmark Meets Its Targets"
ALL = {RATES, FLOOD, TEN, DROPS, OVERLOAD, LATENCY, CONNECTIONS, MEMORY, RECOVERY, BENCHMARK}

#: fault -> {test that must fail: text its failure message must contain}. The whole suite runs
#: under each of these, and every other test must pass.
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "throttle": {
        RATES: "achieved ratio of load 'rate-2500' was",
        FLOOD: "message(s) never delivered",
        LATENCY: "delivery ratio of load 'latency' was",
        MEMORY: "delivery ratio of load 'memory' was",
        BENCHMARK: "achieved ratio of load 'benchmark' phase peak was",
    },
    "slow": {
        LATENCY: "latency p50 of load 'latency' was 1.2",
        CONNECTIONS: "worst connection mean latency of load 'connections-1' was 1.2",
        BENCHMARK: "latency p95 of load 'benchmark' was 1.2",
    },
    "reorder": {
        FLOOD: "out of order on 1 of 1 connection(s): sequence 1 arrived after 2 on connection c0",
        TEN: "out of order on 10 of 10 connection(s)",
        # two messages per connection: the held-back one waits 1 s for a successor that never comes
        CONNECTIONS: "worst connection mean latency of load 'connections-500' was",
    },
    "leak": {
        MEMORY: "server bytes per message was",
    },
    "disconnect_every": {
        RATES: "disconnects of load 'rate-100' was 1, expected == 0",
        FLOOD: "closed by the server or the network (code 1006)",
        TEN: "closed by the server or the network (code 1006)",
        OVERLOAD: "delivery ratio of load 'baseline' was",
        LATENCY: "delivery ratio of load 'latency' was",
        CONNECTIONS: "delivery ratio of load 'connections-1' was",
        MEMORY: "delivery ratio of load 'memory' was",
        RECOVERY: "delivery ratio of load 'baseline' was",
        BENCHMARK: "achieved ratio of load 'benchmark' phase peak was",
        # DROPS passes: it reconnects and resends, which is what it checks.
    },
}

#: Faults whose guarantee only one or two scenarios check: those scenarios run alone
#: (``--test``), which keeps the project's test run short. fault -> {test: fragment}.
TARGETED_FAILURES: dict[str, dict[str, str]] = {
    "no_backpressure": {OVERLOAD: "the server never signalled backpressure"},
    "ignore_priority": {OVERLOAD: "high-priority delivery ratio of load 'overload' was"},
    # Server-wide and for good: every later scenario would fail too, so it runs alone.
    "sticky_overload": {OVERLOAD: "receive rate of load 'after-recovery' was"},
    "no_dedup": {DROPS: "processed more than once by the server"},
    "slow_reconnect": {RECOVERY: "reconnect time of load 'drops' was"},
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("throughput")


def test_suite_passes_against_the_mock_in_under_three_minutes(results_dir):
    started = time.monotonic()
    run = run_suite(SUITE, results_dir / "no-fault", timeout=400)
    elapsed = time.monotonic() - started
    assert run.passed == ALL, {name: o.message for name, o in run.outcomes.items() if o.status != "PASS"}
    assert run.returncode == 0
    assert elapsed < 180, f"suite took {elapsed:.1f} s"
    figures = sorted((run.output_dir / "load").glob("*.json"))
    assert figures, "no load run wrote its figures"
    flood = json.loads(next(p for p in figures if p.name.startswith("flood-")).read_text())
    assert flood["scheduled"] == flood["answered"] == 10_000
    assert {"p50_s", "p90_s", "p95_s", "p99_s", "p99.9_s", "max_s"} <= set(flood["latency"])
    assert list((run.output_dir / "resources").glob("*.json")), "no resource figures were written"
    metrics = (run.output_dir / "metrics.jsonl").read_text()
    assert "latency p99 of load 'latency'" in metrics and '"threshold"' in metrics


@pytest.mark.parametrize("fault", sorted(EXPECTED_FAILURES))
def test_each_fault_fails_exactly_the_scenarios_guarding_its_guarantee(results_dir, fault):
    run = run_suite(SUITE, results_dir / fault.replace("=", "-"), variables={"APEX_MOCK_FAULTS": fault}, timeout=400)
    assert_fails_exactly(run, fault, EXPECTED_FAILURES[fault], ALL)


@pytest.mark.parametrize("fault", sorted(TARGETED_FAILURES))
def test_each_targeted_fault_fails_the_scenario_guarding_its_guarantee(results_dir, fault):
    expected = TARGETED_FAILURES[fault]
    run = run_suite(
        SUITE, results_dir / fault, variables={"APEX_MOCK_FAULTS": fault}, tests=sorted(expected), timeout=300
    )
    assert_fails_exactly(run, fault, expected, set(expected))


TOKEN = "qa-token-that-must-never-be-logged-3c9d"


def test_suite_passes_through_the_staging_variable_file_against_a_mock_started_by_hand(results_dir, tmp_path):
    """Server memory and CPU then come from server_stats, not from a process the library started."""
    with hand_started_mock(tmp_path / "mock.log") as url:
        run = run_suite(
            SUITE,
            results_dir / "staging",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": TOKEN},
            timeout=400,
        )
    assert run.passed == ALL, {name: o.message for name, o in run.outcomes.items() if o.status != "PASS"}
    resources = json.loads(sorted((run.output_dir / "resources").glob("*.json"))[0].read_text())
    assert resources["server"]["source"].startswith("server_stats")
    assert_no_secret_in_artefacts(run, TOKEN)


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
    assert "cannot configure the session" in outcome.message and "unsupported" in outcome.message
