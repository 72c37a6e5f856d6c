"""Suite 1 end to end: green against a correct mock, red in exactly the expected tests under each fault.

Each run starts its own mock (the suite setup does) on a free port on 127.0.0.1 and stops it.
The expected failures are part of the specification: a fault must break the scenario that
guards its guarantee, with a message naming that guarantee and the messages involved, and must
leave the unrelated scenarios passing.
"""

from __future__ import annotations

import time

import pytest
from MessagingLibrary.engine.mock_process import start_mock

from .robot_runs import assert_fails_exactly, assert_no_secret_in_artefacts, hand_started_mock, run_suite

pytestmark = pytest.mark.suite

SUITE = "01__rapid_message_succession.robot"
SEQUENTIAL = "Messages In Rapid Succession Are Answered In Order Exactly Once"
DUPLICATES = "A Message Sent Repeatedly Is Processed Exactly Once"
OVERFLOW = "Queue Overflow Is Refused With Backpressure That Favours High Priority"
CONVERSATION = "Agent State Keeps Up With A Rapid Conversation"
STABILITY = "Connection Stays Healthy Through Message Bursts"
AGENTS = "Agents Stay In Sync Across Coordinated Messages"
BENCHMARK = "Rapid Succession Benchmark Meets Throughput And Latency Targets"
ALL = {SEQUENTIAL, DUPLICATES, OVERFLOW, CONVERSATION, STABILITY, AGENTS, BENCHMARK}

#: fault -> {test that must fail: text its failure message must contain}
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "reorder": {
        SEQUENTIAL: "Responses in send order: 4 of 20 failed: seq-msg-1 (sequence 1) was answered after seq-msg-2",
    },
    "duplicate_response": {
        SEQUENTIAL: "No duplicate ai_response: 4 of 20 failed: seq-msg-0 got 2 ai_response on connection main",
        DUPLICATES: "ai_response count for unique-message-12345 was 2, expected == 1. Idempotency broken",
        OVERFLOW: "Exactly one outcome per message",
    },
    "drop_response": {
        SEQUENTIAL: "2 got no reply (lost or late): seq-msg-6, seq-msg-13",
        OVERFLOW: "got no reply (lost or late): batch-",
        CONVERSATION: "waiting for the answer to conversation message conv-6",
        STABILITY: "delivery ratio was 0.86, expected >= 0.95. 129 of 150 messages answered",
        BENCHMARK: "got no reply (lost or late): bench-6, bench-13",
    },
    "no_dedup": {
        DUPLICATES: "ai_response count for unique-message-12345 was 10, expected == 1. Idempotency broken",
    },
    "stale_state": {
        SEQUENTIAL: "agent_state.message_count was 19, expected == 20",
        DUPLICATES: "unique-message-12345 is in the agent's processed_message_ids 0 time(s), expected exactly once",
        CONVERSATION: "Agent state after message 1 of 10 (conv-0, 'Let's analyze sales data'): message_count was 0",
    },
    "no_backpressure": {
        OVERFLOW: "queue_full count was 0, expected > 0. The server never signalled backpressure",
    },
    "ignore_priority": {
        OVERFLOW: "high-priority processed under backpressure was 0",
    },
    "agent_desync": {
        AGENTS: "Agents disagree on 2 shared-state key(s)",
    },
    "slow": {
        STABILITY: "response time mean was",
        BENCHMARK: "response time p95 was",
    },
    # 1 MB kept per processed message: the stability scenario's 150 messages grow the server
    # by about 143 MB, over its 100 MB limit (the default 4 KB could never reach it).
    "leak=1000000": {
        STABILITY: "server memory growth was",
    },
    # Every connection dies after 100 frames: only the scenarios sending that many notice.
    "disconnect_every": {
        OVERFLOW: "closed by the server or the network",
        STABILITY: "closed by the server or the network, code 1006",
        BENCHMARK: "code 1006) while waiting for replies to 100 messages",
    },
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rapid")


def test_suite_passes_against_the_mock_within_a_minute(results_dir):
    started = time.monotonic()
    run = run_suite(SUITE, results_dir / "no-fault")
    elapsed = time.monotonic() - started
    assert run.passed == ALL, {name: o.message for name, o in run.outcomes.items() if o.status != "PASS"}
    assert run.returncode == 0
    assert elapsed < 60, f"suite took {elapsed:.1f} s"
    metrics = (run.output_dir / "metrics.jsonl").read_text()
    assert '"threshold"' in metrics and "delivery ratio" in metrics
    assert list(run.output_dir.glob("history-*.jsonl")), "the History file was not written"


@pytest.mark.parametrize("fault", sorted(EXPECTED_FAILURES))
def test_each_fault_fails_exactly_the_scenarios_guarding_its_guarantee(results_dir, fault):
    run = run_suite(SUITE, results_dir / fault, variables={"APEX_MOCK_FAULTS": fault})
    expected = EXPECTED_FAILURES[fault]
    assert_fails_exactly(run, fault, expected, ALL)


def test_a_slow_server_misses_the_throughput_target(results_dir, tmp_path):
    """The benchmark's ≥10 msg/s is reachable to miss: a server taking 150 ms a message fails it."""
    mock = start_mock(extra_args=["--processing-ms", "150"], log_file=tmp_path / "mock.log")
    try:
        run = run_suite(
            SUITE,
            results_dir / "slow-processing",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": mock.url, "APEX_TOKEN": "qa"},
            variables={"RESPONSE_TIMEOUT": "30 s"},
        )
    finally:
        mock.stop()
    assert "answered throughput was" in run.outcomes[BENCHMARK].message
    assert run.outcomes[BENCHMARK].status == "FAIL"


TOKEN = "qa-token-that-must-never-be-logged-7f3a"


def test_suite_passes_through_the_staging_variable_file_against_a_mock_started_by_hand(results_dir, tmp_path):
    with hand_started_mock(tmp_path / "mock.log") as url:
        run = run_suite(
            SUITE,
            results_dir / "staging",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": TOKEN},
        )
    assert run.passed == ALL, {name: o.message for name, o in run.outcomes.items() if o.status != "PASS"}
    assert_no_secret_in_artefacts(run, TOKEN)


def test_staging_without_settings_stops_the_run_naming_what_is_missing(results_dir):
    env = {"APEX_WS_URL": "", "APEX_TOKEN": "", "APEX_AUTH_URL": ""}
    run = run_suite(SUITE, results_dir / "staging-missing", variable_files=["resources/variables/staging.py"], env=env)
    assert run.returncode != 0
    assert not run.passed
    for outcome in run.outcomes.values():
        assert "Staging target is not configured; set the environment variable(s): APEX_WS_URL" in outcome.message
        assert "APEX_TOKEN" in outcome.message
