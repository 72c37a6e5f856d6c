"""Suite 2 end to end: green against a correct mock, red in exactly the expected tests under each fault.

Each offline-queue fault breaks one promise to a user who is away; the scenario guarding that
promise must fail with a message naming the rule and the messages involved, and the unrelated
scenarios must keep passing.
"""

from __future__ import annotations

import time

import pytest

from .robot_runs import assert_fails_exactly, assert_no_secret_in_artefacts, hand_started_mock, run_suite

pytestmark = pytest.mark.suite

SUITE = "02__message_queuing_during_disconnection.robot"
SINGLE = "A Message Pushed While The User Is Away Is Delivered On Reconnect"
ORDER = "Messages Queued While Away Arrive In The Order They Were Pushed"
OVERFLOW = "Offline Queue Overflow Follows The Configured Policy"
PRIORITY = "Queued Messages Are Delivered By Priority Then In Push Order"
EVICTION = "Overflow Never Evicts A Higher Priority Message First"
TTL = "Expired Messages Are Not Delivered And Free Their Capacity"
REPLY = "A Reply That Finishes While The User Is Away Is Delivered On Reconnect"
REDELIVERY = "An Unacknowledged Delivery Is Delivered Again After A Drop"
CYCLES = "Rapid Disconnect And Reconnect Cycles Lose Nothing"
PUSHERS = "Messages From Concurrent Pushers Are All Delivered In Each Pusher's Order"
BOUNDED = "The Offline Queue Stays Within Its Capacity"
SCALING = "Delivery Stays Prompt As The Offline Queue Grows"
ALL = {SINGLE, ORDER, OVERFLOW, PRIORITY, EVICTION, TTL, REPLY, REDELIVERY, CYCLES, PUSHERS, BOUNDED, SCALING}

LOST = "queued deliver"  # "waiting for N queued deliveries ... pushed and not yet delivered: ..."

#: fault -> {test that must fail: text its failure message must contain}
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "ignore_priority_offline": {
        OVERFLOW: "Offline delivery order (priority, then FIFO): 1 of 3 failed: H (high) was delivered after N2 (normal)",
        PRIORITY: "H1 (high) was delivered after N1 (normal): higher priority must come first; "
        "C (critical) was delivered after N2 (normal)",
    },
    "ignore_ttl": {
        TTL: "Expired messages must stop taking capacity: Push results differ for 2 of 5 push(es): "
        "F1 (normal): expected queued or delivered, got rejected (offline queue full (3 of 3, policy reject))",
    },
    "lazy_expiry": {
        TTL: "Expired messages must stop taking capacity: Push results differ for 2 of 5 push(es): F1 (normal)",
    },
    "evict_highest": {
        OVERFLOW: "Overflow policy drop_oldest with capacity 3: Push results differ for 2 of 4 push(es): "
        "C (critical): expected queued or delivered, got dropped (evicted by H)",
        EVICTION: "pushing H1 (high) evicted C1 (critical) while N1 (normal), N2 (normal), H1 (high) (lower priority)",
    },
    "lose_offline": {
        SINGLE: "waiting for 1 queued delivery (0 arrived; session_started announced 1); pushed and not yet delivered: Hello",
        ORDER: "pushed and not yet delivered: M1, M2, M3, M4, M5",
        OVERFLOW: LOST,
        PRIORITY: "pushed and not yet delivered: N1, H1, N2, C, L, H2, N3",
        EVICTION: "pushed and not yet delivered: C1, H1, N3",
        TTL: "pushed and not yet delivered: I1, I2, I3, F1, F2",
        REPLY: "waiting for 1 queued delivery (0 arrived; session_started announced 1)",
        REDELIVERY: "pushed and not yet delivered: R1",
        CYCLES: "pushed and not yet delivered: R1.1, R1.2",
        PUSHERS: "waiting for 8 queued deliveries (0 arrived; session_started announced 8)",
        BOUNDED: "pushed and not yet delivered: M6, M7, M8, M9, M10",
        SCALING: "pushed and not yet delivered: S1 on connection 'scale-1'",
    },
    "no_redelivery": {
        REDELIVERY: "not delivered again: R1 (normal) (at-least-once: a delivery not acknowledged before the "
        "connection ended must come again)",
    },
    "duplicate_delivery": {
        ORDER: "No duplicate deliveries: 1 of 5 failed: M1 (normal) (delivery dlv-",
        PRIORITY: "No duplicate deliveries: 1 of 7 failed: C (critical)",
        REPLY: "Exactly one outcome per message: 1 of 1 failed: reply-1 was answered 2 times (2 ai_response)",
        REDELIVERY: "arrived 2 times in one delivery pass, 2 of them without redelivered: true",
        CYCLES: "No duplicate deliveries: 5 of 10 failed: R1.1 (normal)",
        PUSHERS: "No duplicate deliveries: 1 of 8 failed: P1.1 (normal)",
        SCALING: "No duplicate deliveries: 1 of 1 failed: S1 (normal)",
    },
    "policy_confusion": {
        OVERFLOW: "Overflow policy reject with capacity 3: Push results differ for 2 of 5 push(es): "
        "N4 (normal): expected rejected, got dropped",
    },
    "unbounded_offline": {
        OVERFLOW: "Overflow policy drop_oldest with capacity 3: Push results differ for 2 of 5 push(es): "
        "N1 (normal): expected dropped, got queued",
        EVICTION: "Overflow evicts the lowest priority first: nothing to check: no push to 'alice' evicted anything",
        BOUNDED: "offline queue peak was 10, expected <= 5",
    },
    "slow_reconnect": {
        CYCLES: "reconnect time mean was 0.6",
    },
    "slow": {
        SCALING: "delivery time was 1.2",
    },
}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("queuing")


def test_suite_passes_against_the_mock_within_a_minute(results_dir):
    started = time.monotonic()
    run = run_suite(SUITE, results_dir / "no-fault")
    elapsed = time.monotonic() - started
    assert run.passed == ALL, {name: o.message for name, o in run.outcomes.items() if o.status != "PASS"}
    assert run.returncode == 0
    assert elapsed < 60, f"suite took {elapsed:.1f} s"
    metrics = (run.output_dir / "metrics.jsonl").read_text()
    assert "reconnect time mean" in metrics and "offline delivered" in metrics


@pytest.mark.parametrize("fault", sorted(EXPECTED_FAILURES))
def test_each_fault_fails_exactly_the_scenarios_guarding_its_guarantee(results_dir, fault):
    run = run_suite(SUITE, results_dir / fault, variables={"APEX_MOCK_FAULTS": fault})
    expected = EXPECTED_FAILURES[fault]
    assert_fails_exactly(run, fault, expected, ALL)


TOKEN = "qa-token-that-must-never-be-logged-5c1e"
ADMIN_TOKEN = "admin-token-that-must-never-be-logged-9d2b"


def test_suite_passes_through_the_staging_variable_file_against_a_mock_started_by_hand(results_dir, tmp_path):
    with hand_started_mock(tmp_path / "mock.log") as url:
        run = run_suite(
            SUITE,
            results_dir / "staging",
            variable_files=["resources/variables/staging.py"],
            env={"APEX_WS_URL": url, "APEX_TOKEN": TOKEN, "APEX_ADMIN_TOKEN": ADMIN_TOKEN},
        )
    assert run.passed == ALL, {name: o.message for name, o in run.outcomes.items() if o.status != "PASS"}
    assert_no_secret_in_artefacts(run, TOKEN, ADMIN_TOKEN)


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
    assert "The server does not support 'push' (error unsupported" in run.outcomes[SINGLE].message
    assert "The server does not support 'configure_session' (error unsupported)" in run.outcomes[EVICTION].message
