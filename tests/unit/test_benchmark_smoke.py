"""Smoke test of benchmarks/throughput_benchmark.py: every measurement runs, the output has its shape.

One low rate (500 msg/s for 0.5 s), tiny bursts, 10 connections, 20 round trips: no timing
assertions (machines are noisy), only that each section produced its figures, the netra pair
(the engine in the netra dialect -> apex-mock --dialect netra) included.
"""

import importlib.util
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


def test_one_low_rate_end_to_end(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(
        [
            "--quick",
            "--start-rate",
            "500",
            "--trial-seconds",
            "0.5",
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
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for heading in (
        "a. Highest sustained rate",
        "a2. CPU per message",
        "b. Opening 10 connections",
        "c. Ping-pong",
        "d. Targets",
        "ratio engine / bare",
        "ratio netra engine / bare",
        "client cpu/msg netra engine / bare client",
        "engine -> apex-mock --dialect netra",
        "ratio p50 library / bare",
    ):
        assert heading in printed

    report = json.loads(out.read_text())
    assert set(report) >= {"environment", "settings", "max_rate", "saturation", "connections", "ping_pong", "targets"}
    assert report["settings"]["netra_mock_args"][-2:] == ["--dialect", "netra"]
    for pair in ("engine", "netra", "bare"):
        search = report["max_rate"][pair]
        assert search["trials"], pair
        first = search["trials"][0]
        assert TRIAL_FIELDS <= set(first)
        assert first["pair"] == pair
        assert first["rate"] == 500 and first["scheduled"] == 250
        assert first["sent"] == 250  # the sender ran to the end (answers are not asserted: no timing)
        assert set(search) >= {"max_rate", "first_failing_rate", "at_max"}
    # the netra pair ran the netra dialect (sent == 250 above: its minted JWT opened a session), the engine pair apex
    assert "'netra'" in report["max_rate"]["netra"]["trials"][0]["dialect"]
    assert "'apex'" in report["max_rate"]["engine"]["trials"][0]["dialect"]
    assert set(report["max_rate"]) >= {"ratio_engine_to_bare", "ratio_netra_to_bare", "ratio_netra_to_engine"}
    for pair in ("engine", "netra", "bare", "cross"):
        assert set(report["saturation"][pair]) >= {"client_us_per_msg", "server_us_per_msg", "msgs_per_s"}
    assert set(report["client_cpu_ratios"]) == {"engine_to_bare", "netra_to_bare", "netra_to_engine"}
    for pair in ("engine", "bare", "cross"):
        conn = report["connections"][pair]
        assert "error" not in conn, conn
        assert conn["opened"] == 10 and conn["seconds"] > 0 and "kb_per_connection" in conn
    for client in ("library", "bare", "cross"):
        assert report["ping_pong"][client]["rounds"] == 20
        assert report["ping_pong"][client]["p50_us"] > 0
    assert report["ping_pong"]["ratio_library_to_bare"] > 0
    assert [t["name"] for t in report["targets"]] == [
        "engine max rate / bare max rate",
        "engine opens 10 connections",
        "engine client memory per connection",
        "ping-pong p50 library / bare",
    ]
    assert all(isinstance(t["met"], bool) for t in report["targets"])


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
