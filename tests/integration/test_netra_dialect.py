"""The suites in the netra dialect (the real platform's protocol) against ``apex-mock --dialect netra``
started by hand, through the staging variable file as a team would point them at staging.

- Suites 1 to 4 pass with the platform's preferred token placement, and suite 2 (the one
  that reconnects most) with each other placement the platform accepts; the log names the dialect and the
  placement, and no JWT, secret or token reaches any file written.
- A server with only what the public platform has (no test-control or query operation, no
  de-duplication): the idempotency scenario fails naming the duplicate processing, every
  scenario that needs a missing operation is skipped naming it and the dialect, and nothing
  that needs a missing operation passes; agent runs, streamed as the server streams them, are
  still followed and judged (suite 4 passes).

The trust faults in this dialect (cross-talk, wrong echo, false flag, wrong count) are rows of
the fault matrix, run with ``apex-faults --dialect netra`` (tests/integration/test_fault_matrix.py).
"""

from __future__ import annotations

import warnings

import pytest
from apex_faults.catalogue import Queuing, Rapid, Throughput, suite

from .robot_runs import assert_no_secret_in_artefacts, assert_passed_or_inconclusive, hand_started_mock, run_suite

pytestmark = pytest.mark.suite

#: Only these tests know it; it signs every test user's JWT, on both sides.
JWT_SECRET = "netra-secret-that-must-never-be-logged-71f3"
#: Every JWT starts with the base64 of ``{"alg":"HS256"`` or ``{"typ":"JWT"``: none may be written anywhere.
JWT_PREFIXES = ("eyJhbGciOiJIUzI1NiIs", "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("netra")


def _netra_env(url: str, auth_in: str) -> dict[str, str]:
    return {
        "APEX_WS_URL": url,
        "APEX_DIALECT": "netra",
        "APEX_AUTH_IN": auth_in,
        "APEX_JWT_SECRET": JWT_SECRET,
        "APEX_TOKEN": "",
        "APEX_ADMIN_TOKEN": "",
    }


def _all_tests(number: str) -> set[str]:
    return set(suite(number).tests)


@pytest.mark.parametrize(
    ("auth_in", "suites"),
    # the other placements only change the handshake: suite 2, which (re)connects most, proves them
    [("subprotocol", ("1", "2", "3", "4")), ("header", ("2",)), ("query", ("2",))],
)
def test_the_suites_pass_in_the_netra_dialect_through_staging(results_dir, tmp_path, auth_in, suites):
    output = results_dir / f"staging-{auth_in}"
    with hand_started_mock(tmp_path / "mock.log", "--dialect", "netra", "--jwt-secret", JWT_SECRET) as url:
        for number in suites:
            run = run_suite(
                suite(number).file,
                output / number,
                variable_files=["resources/variables/staging.py"],
                env=_netra_env(url, auth_in),
                timeout=300,
            )
            inconclusive = assert_passed_or_inconclusive(run, _all_tests(number))
            if inconclusive:
                warnings.warn(f"inconclusive on this machine (the load generator fell behind): {sorted(inconclusive)}", stacklevel=1)
            log = (output / number / "output.xml").read_text(encoding="utf-8")
            assert f"dialect 'netra' (token in {auth_in})" in log, "the log does not say the dialect and placement"
    assert_no_secret_in_artefacts(output, JWT_SECRET, *JWT_PREFIXES)


def test_a_server_like_the_public_platform_fails_idempotency_and_skips_what_it_lacks(results_dir, tmp_path):
    output = results_dir / "public-platform"
    extra = ("--dialect", "netra", "--jwt-secret", JWT_SECRET, "--without", "all", "--fault", "no_dedup")
    # Suite 3's other scenarios need only throughput messages, which this server still answers.
    lacking = {"3": [Throughput.DROPS, Throughput.OVERLOAD, Throughput.LATENCY, Throughput.MEMORY, Throughput.RECOVERY]}
    with hand_started_mock(tmp_path / "mock.log", *extra) as url:
        runs = {
            number: run_suite(
                suite(number).file,
                output / number,
                variable_files=["resources/variables/staging.py"],
                env=_netra_env(url, "subprotocol"),
                tests=lacking.get(number),
                timeout=300,
            )
            for number in ("1", "2", "3")
        }
    # A second such server streams its agent runs as the platform does (configure_session cannot
    # ask it to; streaming for every user would slow suite 3's chat loads into its queue limit).
    # Runs as long as the suite's LONG_STREAM, so 'No Stream Stalls' has the gaps its p99 needs
    # (30 runs of 17 gaps: 510, over the 368 a p99 needs; shorter runs gave 150: inconclusive).
    streaming = (*extra, "--agent-stream", "thinking_steps=4,tools=3,chunks=6,gap_ms=20")
    with hand_started_mock(tmp_path / "mock-streaming.log", *streaming) as url:
        runs["4"] = run_suite(
            suite("4").file, output / "4", variable_files=["resources/variables/staging.py"],
            env=_netra_env(url, "subprotocol"), timeout=300,
        )
    rapid, queuing, throughput = runs["1"].outcomes, runs["2"].outcomes, runs["3"].outcomes

    # Agent runs need no test-control operation: followed as the server streams them, every
    # scenario of suite 4 is judged, and the log says the sessions were not configured.
    inconclusive = assert_passed_or_inconclusive(runs["4"], _all_tests("4"))
    if inconclusive:
        warnings.warn(f"inconclusive on this machine: {sorted(inconclusive)}", stacklevel=1)
    log = (output / "4" / "output.xml").read_text(encoding="utf-8")
    assert "the target has no configure_session" in log and "the runs stream as the target streams them" in log

    duplicates = rapid[Rapid.DUPLICATES]
    assert duplicates.status == "FAIL", duplicates
    assert "duplicate processing" in duplicates.message, duplicates.message

    # Every scenario that needs a query or test-control operation is skipped naming it and the
    # dialect; none of them passes.
    needs = {
        Rapid.SEQUENTIAL: "get_agent_state",
        Rapid.OVERFLOW: "configure_session",
        Rapid.CONVERSATION: "get_agent_state",
        Rapid.STABILITY: "get_server_stats",
        Rapid.AGENTS: "configure_agents",
        Throughput.OVERLOAD: "configure_session",
        Throughput.RECOVERY: "configure_session",
        Throughput.DROPS: "get_agent_state",
        Throughput.LATENCY: "get_server_stats",
        Throughput.MEMORY: "get_server_stats",
    }
    outcomes = {**rapid, **throughput}
    for test, operation in needs.items():
        outcome = outcomes[test]
        assert outcome.status == "SKIP", f"{test}: {outcome.status} {outcome.message}"
        assert f"The target has no '{operation}' operation in dialect 'netra'" in outcome.message, outcome.message
    # Suite 2 pushes from an admin connection: with no push, nothing in it can run, and says why.
    for test, outcome in queuing.items():
        assert outcome.status == "SKIP", f"{test}: {outcome.status} {outcome.message}"
    assert "The target has no 'push' operation in dialect 'netra'" in queuing[Queuing.SINGLE].message
    assert_no_secret_in_artefacts(output, JWT_SECRET, *JWT_PREFIXES)
