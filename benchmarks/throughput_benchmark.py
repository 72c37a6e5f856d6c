#!/usr/bin/env python
"""Side-by-side benchmark: the library's load engine vs. a bare websockets client, in one run.

Pairs (servers in their own processes, on 127.0.0.1, the same event loop choice on every side,
orjson on every client):

* ``engine``: ``MessagingLibrary.engine.load`` -> apex-mock's throughput path
  (``--processing-ms 0 --throughput-processing-ms 0``);
* ``netra``:  the same engine in the netra dialect (a minted JWT as subprotocol ``jwt.<token>``,
  the version-B handshake) -> a second apex-mock with the same flags and ``--dialect netra``.
  The workload is the same ``throughput_test``: in netra it travels as the extension frame
  ``apex.throughput_test {payload}``, answered ``apex.throughput_response {data}``, so this pair
  measures the dialect seam's translation on both sides (the engine's NetraCodec, the mock's
  edge codec), not the platform's chat path (``user_message`` -> agent events);
* ``bare``:   ``benchmarks/bare_client.py`` -> ``benchmarks/bare_echo_server.py``;
* ``cross``:  (diagnostic, no target) the bare client -> apex-mock: separates client cost from
  server cost when the engine pair is slower.

Measures (a) the highest open-loop rate the engine, netra and bare pairs sustain with p99 <= 10 ms
from the intended send time and every message answered (``--cross``: the cross pair too), (a2)
client and server CPU per message in saturated bursts (every pair), (b) the time and client RSS
to open 500 connections (each client in a fresh subprocess), (c) sequential ping-pong p50, and
(d) checks the targets (b-d: apex only). ``--json PATH`` saves every figure.

    python benchmarks/throughput_benchmark.py [--quick] [--no-uvloop] [--no-netra] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
try:
    import MessagingLibrary  # noqa: F401 (installed with pip install -e .)
except ImportError:
    sys.path.insert(0, str(HERE.parent / "libraries"))

import bare_client
import orjson
import psutil
import websockets
from MessagingLibrary.dialects import load_dialect
from MessagingLibrary.engine.auth import development_jwt_secret, mint_jwt
from MessagingLibrary.engine.history import History
from MessagingLibrary.engine.load import LoadEngine, LoadPlan, run_load
from MessagingLibrary.engine.mock_process import MockProcess, start_mock
from MessagingLibrary.engine.schedule import Phase
from MessagingLibrary.engine.session import Session
from websockets.exceptions import WebSocketException

P99_LIMIT_S = 0.010
RATIO_TARGET, RATIO_AIM = 0.60, 0.80
OPEN_COUNT = 500
OPEN_TARGET_S = 2.0
KB_PER_CONNECTION_TARGET = 50.0
PING_PONG_RATIO_TARGET = 1.5
PING_PONG_WARMUP = 100
COOLDOWN_S = 0.3  # between trials: let the previous trial's leftovers settle
#: The environment variable both apex-mock --dialect netra (it inherits this process's
#: environment) and the library read the JWT secret from; unset: the public development secret.
JWT_SECRET_ENV = "APEX_JWT_SECRET"
#: Pairs whose client is the library's load engine (the rest run bare_client.py).
ENGINE_PAIRS = ("engine", "netra")
#: Every pair, in the order the report shows them.
PAIRS = ("engine", "netra", "bare", "cross")
LABELS = {
    "engine": "engine -> apex-mock",
    "netra": "engine -> apex-mock --dialect netra",
    "bare": "bare client -> echo server",
    "cross": "bare client -> apex-mock (diagnostic)",
}


# --------------------------------------------------------------------------- event loop


def uvloop_version() -> str | None:
    try:
        import uvloop
    except ImportError:
        return None
    return getattr(uvloop, "__version__", "?")


def loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        from MessagingLibrary.engine.loop import new_event_loop

        return new_event_loop
    return asyncio.new_event_loop


# --------------------------------------------------------------------------- servers


class EchoServer:
    """``bare_echo_server.py`` in its own process; ready when it printed its URL and accepts TCP."""

    LINE = re.compile(r"listening on (ws://(?P<host>[^\s/:]+):(?P<port>\d+)/)")

    def __init__(self, use_uvloop: bool, timeout: float = 10.0) -> None:
        command = [sys.executable, str(HERE / "bare_echo_server.py"), "--host", "127.0.0.1", "--port", "0"]
        if not use_uvloop:
            command.append("--no-uvloop")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="bare-echo-stdout", daemon=True).start()
        deadline = time.monotonic() + timeout
        seen = []
        try:
            while True:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
                if line is None:
                    raise RuntimeError(f"bare echo server exited before listening: {''.join(seen)!r}")
                seen.append(line)
                match = self.LINE.search(line)
                if match:
                    break
            self.url, self.host, self.port = match[1], match["host"], int(match["port"])
            while True:  # readiness: the port accepts connections
                try:
                    socket.create_connection((self.host, self.port), timeout=1.0).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # polling interval of a readiness check
        except (queue.Empty, OSError, RuntimeError) as error:
            self.stop()
            raise RuntimeError(f"bare echo server not ready within {timeout:g} s: {error} {''.join(seen)!r}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def mock_arguments(use_uvloop: bool) -> list[str]:
    """The mock's throughput path: no processing delay; the same loop choice as the clients."""
    help_text = subprocess.run(
        [sys.executable, "-m", "apex_mock", "--help"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    args = ["--processing-ms", "0"]
    if "--throughput-processing-ms" in help_text:
        args += ["--throughput-processing-ms", "0"]
    if not use_uvloop:
        if "--no-uvloop" not in help_text:
            raise SystemExit("apex-mock has no --no-uvloop flag: cannot force asyncio on the mock side.")
        args.append("--no-uvloop")
    return args


# --------------------------------------------------------------------------- rate trials


@dataclass
class Trial:
    pair: str
    rate: float
    seconds: float
    scheduled: int
    sent: int
    answered: int
    lost: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    missed_sends: int
    wall_s: float = 0.0
    #: CPU seconds the client process (this one) and the server process used during the trial.
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    #: CPU seconds every other process on the machine used meanwhile (noise: a busy machine).
    other_cpu_s: float = 0.0
    passed: bool = False
    why: str = ""
    #: The engine's dialect as its result describes it (``dialect 'netra' (token in subprotocol)``); bare: "".
    dialect: str = ""

    def judge(self, p99_limit_s: float = P99_LIMIT_S) -> Trial:
        if self.why:  # timed out or failed to run
            self.passed = False
        elif self.answered < self.scheduled or self.lost:
            self.why = f"{self.scheduled - self.answered} of {self.scheduled} unanswered"
        elif self.p99_ms > p99_limit_s * 1e3:
            self.why = f"p99 {self.p99_ms:.1f} ms > {p99_limit_s * 1e3:g} ms"
        self.passed = not self.why
        return self


def engine_tokens(dialect: str, trial_id: str, connections: int) -> list[str]:
    """One token, hence one mock user, per connection: opaque for apex, a minted HS256 JWT for netra."""
    subjects = [f"bench-{trial_id}-{i}" for i in range(connections)]
    if dialect == "apex":
        return subjects
    secret = development_jwt_secret()
    return [mint_jwt(secret, subject) for subject in subjects]


async def engine_trial(
    url: str,
    rate: float,
    seconds: float,
    connections: int = 1,
    trial_id: str = "e",
    drain_s: float = 2.0,
    dialect: str = "apex",
) -> Trial:
    """One open-loop run of the library's load engine in ``dialect`` (``apex``: pair engine, ``netra``: pair netra).

    The workload is the same in both: ``throughput_test`` frames (in netra the extension frame
    ``apex.throughput_test``, answered ``apex.throughput_response``).
    """
    plan = LoadPlan(
        url=url,
        tokens=engine_tokens(dialect, trial_id, connections),
        phases=[Phase("steady", rate, seconds)],
        connections=connections,
        run_id=trial_id,
        drain_timeout_s=drain_s,
        connect_timeout_s=10.0,
        dialect=load_dialect(dialect),
    )
    result = await run_load(plan)
    lat = result.latency
    why = "; ".join(result.connect_failures[:1] + result.close_reasons[:1])
    return Trial(
        "engine" if dialect == "apex" else dialect,
        rate,
        seconds,
        result.scheduled,
        result.sent,
        result.answered,
        result.lost,
        lat["p50_s"] * 1e3,
        lat["p99_s"] * 1e3,
        lat["max_s"] * 1e3,
        result.missed_sends,
        why=why,
        dialect=result.dialect,
    )


async def bare_trial(
    url: str,
    rate: float,
    seconds: float,
    connections: int = 1,
    trial_id: str = "b",
    drain_s: float = 2.0,
    pair: str = "bare",
    token: str | None = None,
) -> Trial:
    """One open-loop run of the bare client (``token``: for the mock, which wants a bearer token)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    r = await bare_client.open_loop(url, rate, seconds, connections, trial_id, drain_s, headers)
    return Trial(
        pair,
        rate,
        seconds,
        r["scheduled"],
        r["sent"],
        r["answered"],
        r["lost"],
        r["p50_ns"] / 1e6,
        r["p99_ns"] / 1e6,
        r["max_ns"] / 1e6,
        r["missed_sends"],
    )


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


async def run_trial(
    pair: str,
    make: Callable[[], Awaitable[Trial]],
    rate: float,
    seconds: float,
    drain_s: float,
    server: psutil.Process | None = None,
) -> Trial:
    """Run one trial with a hard time limit; a trial that fails to run counts as failed."""
    gc.collect()
    client = psutil.Process()
    client_cpu, server_cpu, machine = cpu_seconds(client), cpu_seconds(server), machine_busy_seconds()
    started = time.perf_counter()
    limit = 3 * seconds + drain_s + 15
    try:
        trial = await asyncio.wait_for(make(), limit)
    except TimeoutError:
        trial = Trial(
            pair, rate, seconds, round(rate * seconds), 0, 0, 0, 0, 0, 0, 0, why=f"timed out after {limit:g} s"
        )
    except (OSError, ConnectionError, WebSocketException) as error:
        trial = Trial(pair, rate, seconds, round(rate * seconds), 0, 0, 0, 0, 0, 0, 0, why=f"could not run: {error}")
    trial.wall_s = time.perf_counter() - started
    trial.client_cpu_s = cpu_seconds(client) - client_cpu
    trial.server_cpu_s = cpu_seconds(server) - server_cpu
    trial.other_cpu_s = max(0.0, machine_busy_seconds() - machine - trial.client_cpu_s - trial.server_cpu_s)
    await asyncio.sleep(COOLDOWN_S)
    return trial.judge()


@dataclass
class RateSearch:
    """Grow the rate by ``factor`` until a trial fails, then bisect between the last pass and the first fail.

    A failing rate is tried again up to ``retries`` times before it counts as failed (machines
    are noisy; the same rule holds for every pair). If the first rate fails, the search steps
    down by ``factor`` instead.
    """

    start: float
    factor: float = 1.5
    bisect_steps: int = 3
    retries: int = 1
    max_rate: float = 1_000_000
    min_rate: float = 100
    low: float = 0.0  # highest rate that passed
    high: float | None = None  # lowest rate that failed
    phase: str = "grow"
    steps_left: int = 0
    current: float | None = None
    attempts: int = 0
    trials: list[Trial] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = self.start
        self.steps_left = self.bisect_steps

    def next_rate(self) -> float | None:
        return self.current

    def record(self, trial: Trial) -> None:
        self.trials.append(trial)
        rate = trial.rate
        if not trial.passed and self.attempts < self.retries:
            self.attempts += 1
            return  # try the same rate again
        self.attempts = 0
        if trial.passed:
            self.low = max(self.low, rate)
        else:
            self.high = rate if self.high is None else min(self.high, rate)
        if self.phase == "grow":
            if trial.passed:
                nxt = round(rate * self.factor)
                self.current = nxt if nxt <= self.max_rate else None
                return
            self.phase = "shrink" if self.low == 0 else "bisect"
        if self.phase == "shrink":
            if not trial.passed:
                nxt = round(rate / self.factor)
                self.current = nxt if nxt >= self.min_rate else None
                return
            self.phase = "bisect"
        assert self.high is not None
        if self.phase == "bisect":
            if self.steps_left <= 0 or (self.high - self.low) <= 0.02 * self.low:
                self.current = None
                return
            self.steps_left -= 1
            self.current = round((self.low + self.high) / 2)

    def summary(self) -> dict[str, Any]:
        best = [t for t in self.trials if t.passed and t.rate == self.low]
        return {
            "max_rate": self.low,
            "first_failing_rate": self.high,
            "at_max": asdict(best[-1]) if best else None,
            "trials": [asdict(t) for t in self.trials],
        }


def describe_trial(t: Trial, note: str = "") -> str:
    verdict = ("pass" if t.passed else f"FAIL ({t.why})") + note

    def busy(cpu: float) -> str:
        return f"{cpu / t.wall_s:4.0%}" if t.wall_s else "  - "

    server_us = t.server_cpu_s / t.scheduled * 1e6 if t.scheduled else 0.0
    return (
        f"  {t.pair:<7} {t.rate:>8,.0f}/s  p50 {t.p50_ms:6.2f} ms  p99 {t.p99_ms:7.2f} ms  "
        f"answered {t.answered:>7,}/{t.scheduled:<7,} late sends {t.missed_sends:>6,}  "
        f"cpu client {busy(t.client_cpu_s)} server {busy(t.server_cpu_s)} ({server_us:4.1f} us/msg) "
        f"others {busy(t.other_cpu_s)}  {verdict}"
    )


async def find_max_rates(
    urls: dict[str, str],
    args: argparse.Namespace,
    log: Callable[[str], None] = print,
    pids: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Step every pair's search in turn (interleaved, so machine noise spreads over all pairs)."""
    makers: dict[str, Callable[[float, str], Awaitable[Trial]]] = {
        "engine": lambda rate, tid, secs=args.trial_seconds: engine_trial(
            urls["engine"], rate, secs, args.connections, tid, args.drain_seconds
        ),
        "netra": lambda rate, tid, secs=args.trial_seconds: engine_trial(
            urls["netra"], rate, secs, args.connections, tid, args.drain_seconds, "netra"
        ),
        "bare": lambda rate, tid, secs=args.trial_seconds: bare_trial(
            urls["bare"], rate, secs, args.connections, tid, args.drain_seconds
        ),
        "cross": lambda rate, tid, secs=args.trial_seconds: bare_trial(
            urls["cross"], rate, secs, args.connections, tid, args.drain_seconds, "cross", f"bench-{tid}"
        ),
    }
    searches = {
        name: RateSearch(args.start_rate, args.factor, args.bisect_steps, args.retries, args.max_rate) for name in urls
    }
    servers = {name: psutil.Process(pid) for name, pid in (pids or {}).items()}
    serial = 0
    if args.warmup_seconds > 0:  # first connection, first code paths: not part of the search
        for name in searches:
            serial += 1
            tid = f"{name[0]}{serial}w"
            warm = await run_trial(
                name,
                lambda name=name, tid=tid: makers[name](args.start_rate, tid, args.warmup_seconds),
                args.start_rate,
                args.warmup_seconds,
                args.drain_seconds,
                servers.get(name),
            )
            log(describe_trial(warm, " (warm-up, not counted)"))
    while any(s.next_rate() is not None for s in searches.values()):
        for name, search in searches.items():
            rate = search.next_rate()
            if rate is None:
                continue
            serial += 1
            tid = f"{name[0]}{serial}"
            trial = await run_trial(
                name,
                lambda name=name, rate=rate, tid=tid: makers[name](rate, tid),
                rate,
                args.trial_seconds,
                args.drain_seconds,
                servers.get(name),
            )
            search.record(trial)
            log(describe_trial(trial))
    return {name: {"label": LABELS[name], **s.summary()} for name, s in searches.items()}


async def measure_saturation(
    urls: dict[str, str],
    args: argparse.Namespace,
    log: Callable[[str], None] = print,
    pids: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """CPU per message with the sender never waiting: bursts whose messages are all due at once.

    The rate search's sender sleeps between sends, and under uvloop a sleep shorter than 1 ms
    spins (libuv timers have 1 ms resolution), so its client CPU is ~100 % at any rate. In a
    burst the sender is always behind, so CPU time is the client's own work. Each figure is a
    difference between a burst of ``args.burst`` messages and one of a tenth of that, so the
    fixed costs of a run (connecting, closing, the engine's end-of-run summary) cancel out:
    (CPU big - CPU small) / (messages big - messages small). Median of ``args.burst_repeats``.
    """
    rate = 10_000_000.0
    sizes = (max(args.burst // 10, 100), args.burst)
    servers = {name: psutil.Process(pid) for name, pid in (pids or {}).items()}

    def make(name: str, count: int, tid: str) -> Callable[[], Awaitable[Trial]]:
        seconds = count / rate
        if name in ENGINE_PAIRS:
            dialect = "apex" if name == "engine" else name
            return lambda: engine_trial(urls[name], rate, seconds, args.connections, tid, 15.0, dialect)
        token = f"bench-{tid}" if name == "cross" else None
        return lambda: bare_trial(urls[name], rate, seconds, args.connections, tid, 15.0, name, token)

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    for repeat in range(args.burst_repeats):
        for name in urls:
            small, big = [
                await run_trial(name, make(name, n, f"{name[0]}s{repeat}n{n}"), rate, n / rate, 15.0, servers.get(name))
                for n in sizes
            ]
            messages = max(big.scheduled - small.scheduled, 1)
            figures = {
                "client_us_per_msg": (big.client_cpu_s - small.client_cpu_s) / messages * 1e6,
                "server_us_per_msg": (big.server_cpu_s - small.server_cpu_s) / messages * 1e6,
                "msgs_per_s": messages / (big.wall_s - small.wall_s) if big.wall_s > small.wall_s else None,
                "others_cores": (big.other_cpu_s / big.wall_s) if big.wall_s else 0.0,
                "answered": [small.answered, big.answered],
                "trials": [asdict(small), asdict(big)],
            }
            runs[name].append(figures)
            log(
                f"  {name:<7} bursts of {small.scheduled:,} and {big.scheduled:,}: answered {small.answered:,} and "
                f"{big.answered:,}; client {figures['client_us_per_msg']:5.1f} us/msg, "
                f"server {figures['server_us_per_msg']:5.1f} us/msg, others {figures['others_cores']:.0%} of a core"
            )

    def median(values: list[float | None]) -> float | None:
        known = sorted(v for v in values if v is not None)
        return known[len(known) // 2] if known else None

    return {
        name: {
            "label": LABELS[name],
            "messages": list(sizes),
            "client_us_per_msg": median([r["client_us_per_msg"] for r in results]),
            "server_us_per_msg": median([r["server_us_per_msg"] for r in results]),
            "msgs_per_s": median([r["msgs_per_s"] for r in results]),
            "repeats": results,
        }
        for name, results in runs.items()
    }


# --------------------------------------------------------------------------- connection opening


def connect_worker(side: str, url: str, count: int, use_uvloop: bool, token: bool) -> dict[str, Any]:
    """In a fresh process: open ``count`` connections, measure the time and the RSS growth while open.

    The growth counts from before ``LoadEngine(plan)`` is built, so the engine's per-run objects
    (histograms, one LoadConnection per connection) are included; ``setup_bytes`` says how much
    of it the construction alone took. The time counts ``open()`` / the connects only.
    """
    process = psutil.Process()

    async def measure() -> dict[str, Any]:
        gc.collect()
        before_setup = process.memory_info().rss
        engine = None
        if side == "engine":
            plan = LoadPlan(
                url=url,
                tokens=[f"bench-open-{i}" for i in range(count)],
                phases=[Phase("idle", 1, 1)],
                connections=count,
                run_id="open",
                connect_timeout_s=10.0,
            )
            engine = LoadEngine(plan)
        gc.collect()
        baseline = process.memory_info().rss
        started = time.perf_counter()
        connections = []
        if engine is not None:
            await engine.open()
            opened = engine.opened
        else:
            headers = {"Authorization": "Bearer bench-open"} if token else None
            connections = await bare_client.open_connections(url, count, headers=headers)
            opened = len(connections)
        seconds = time.perf_counter() - started
        await asyncio.sleep(0.3)  # let greetings (the mock's session_started) be read
        rss_open = process.memory_info().rss
        if engine is not None:
            await engine.close()
        else:
            await bare_client.close_connections(connections)
        return {
            "side": side,
            "count": count,
            "opened": opened,
            "seconds": seconds,
            "rss_baseline_bytes": before_setup,
            "rss_open_bytes": rss_open,
            # LoadEngine(plan) before open(): its histograms and one LoadConnection per connection
            "setup_bytes": baseline - before_setup,
            # everything, construction included (conservative for the engine)
            "kb_per_connection": (rss_open - before_setup) / max(opened, 1) / 1024,
        }

    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(asyncio.wait_for(measure(), 60))


def measure_connections(side: str, url: str, count: int, use_uvloop: bool, token: bool = False) -> dict[str, Any]:
    """Run :func:`connect_worker` in a fresh subprocess (earlier trials must not pollute its RSS)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker-connect",
        side,
        "--worker-url",
        url,
        "--worker-count",
        str(count),
    ]
    if not use_uvloop:
        command.append("--no-uvloop")
    if token:
        command.append("--worker-token")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        return {"side": side, "error": "timed out after 90 s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"side": side, "error": (done.stderr or done.stdout).strip()[-500:]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- ping-pong


def summarize_round_trips(times_ns: list[int]) -> dict[str, Any]:
    ordered = sorted(times_ns)
    return {
        "rounds": len(ordered),
        "p50_us": bare_client.percentile_ns(ordered, 50) / 1e3,
        "p90_us": bare_client.percentile_ns(ordered, 90) / 1e3,
        "p99_us": bare_client.percentile_ns(ordered, 99) / 1e3,
        "mean_us": sum(ordered) / len(ordered) / 1e3 if ordered else 0.0,
    }


async def ping_pongs(urls: dict[str, str], rounds: int, block: int = 100) -> dict[str, dict[str, Any]]:
    """Sequential round trips of every client, interleaved in blocks of ``block`` (noise hits all alike).

    library: ``Session.request(latency_probe)`` -> mock; bare: send + await the echo -> echo
    server; cross: the bare client -> mock. Each first does ``PING_PONG_WARMUP`` uncounted rounds.
    """
    session = Session(
        "bench", urls["engine"], History(), headers={"Authorization": "Bearer bench-pingpong"}, token="bench-pingpong"
    )
    bare_ws = cross_ws = None
    try:
        await session.open(10.0)
        bare_ws = await bare_client.connect(urls["bare"], open_timeout=10, **bare_client.CONNECT_OPTIONS)
        cross_ws = await bare_client.connect(
            urls["cross"],
            additional_headers={"Authorization": "Bearer bench-pingpong-bare"},
            open_timeout=10,
            **bare_client.CONNECT_OPTIONS,
        )
        clients: dict[str, Callable[[int], Awaitable[Any]]] = {
            "library": lambda i: session.request(
                {"type": "latency_probe", "probe_id": i, "client_send_ns": time.monotonic_ns()}, 5.0
            ),
            "bare": lambda i: bare_client.probe(bare_ws, i),
            "cross": lambda i: bare_client.probe(cross_ws, i),
        }
        clock = time.perf_counter_ns
        times: dict[str, list[int]] = {name: [] for name in clients}
        for name, one in clients.items():
            for i in range(PING_PONG_WARMUP):
                await one(i)
        gc.collect()
        for first in range(PING_PONG_WARMUP, PING_PONG_WARMUP + rounds, block):
            for name, one in clients.items():
                record = times[name].append
                for i in range(first, min(first + block, PING_PONG_WARMUP + rounds)):
                    started = clock()
                    await one(i)
                    record(clock() - started)
        return {name: summarize_round_trips(values) for name, values in times.items()}
    finally:
        await session.close(5.0)
        await bare_client.close_connections([ws for ws in (bare_ws, cross_ws) if ws is not None])


# --------------------------------------------------------------------------- profiling


async def profile_engine(url: str, rate: float, seconds: float, connections: int, burst: int) -> str:
    """One engine run under cProfile (this thread runs the loop): the top functions.

    ``rate`` 0: a saturated burst of ``burst`` messages (the sender never sleeps, so the profile
    is all per-message work, no timer spinning); else a rate trial of ``seconds``.
    """
    if not rate:
        rate, seconds = 10_000_000.0, max(burst, 1000) / 10_000_000.0
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        trial = await engine_trial(url, rate, seconds, connections, "prof", 15.0)
    finally:
        profiler.disable()
    trial.judge()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(
        f"cProfile of one engine run ({trial.scheduled:,} messages, {trial.answered:,} answered; "
        "times inflated by the profiler)\n"
    )
    stats.sort_stats("tottime").print_stats(25)
    out.write("\nMessagingLibrary/engine and hdrh functions only, by own time:\n")
    stats.sort_stats("tottime").print_stats(r"MessagingLibrary[/\\]engine|hdrh", 25)
    return out.getvalue()


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def client_cpu_ratios(sat: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Saturated client CPU per message as ratios: engine / bare, and (when measured) netra / bare and netra / engine."""

    def us(name: str) -> float | None:
        return (sat.get(name) or {}).get("client_us_per_msg")

    ratios = {"engine_to_bare": ratio(us("engine"), us("bare"))}
    if "netra" in sat:
        ratios["netra_to_bare"] = ratio(us("netra"), us("bare"))
        ratios["netra_to_engine"] = ratio(us("netra"), us("engine"))
    return ratios


def build_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rates, conns, pp = report["max_rate"], report["connections"], report["ping_pong"]
    r = rates.get("ratio_engine_to_bare")
    targets = [
        {
            "name": "engine max rate / bare max rate",
            "value": r,
            "target": f">= {RATIO_TARGET:.0%} (aim {RATIO_AIM:.0%})",
            "met": r is not None and r >= RATIO_TARGET,
            "aim_met": r is not None and r >= RATIO_AIM,
        }
    ]
    engine = conns.get("engine", {})
    targets.append(
        {
            "name": f"engine opens {engine.get('count', OPEN_COUNT)} connections",
            "value": engine.get("seconds"),
            "unit": "s",
            "target": f"< {OPEN_TARGET_S:g} s",
            "met": engine.get("opened") == engine.get("count") and engine.get("seconds", math.inf) < OPEN_TARGET_S,
        }
    )
    targets.append(
        {
            "name": "engine client memory per connection",
            "value": engine.get("kb_per_connection"),
            "unit": "KB",
            "target": f"< {KB_PER_CONNECTION_TARGET:g} KB",
            "met": engine.get("kb_per_connection", math.inf) < KB_PER_CONNECTION_TARGET,
        }
    )
    p = pp.get("ratio_library_to_bare")
    targets.append(
        {
            "name": "ping-pong p50 library / bare",
            "value": p,
            "target": f"<= {PING_PONG_RATIO_TARGET:g}",
            "met": p is not None and p <= PING_PONG_RATIO_TARGET,
        }
    )
    return targets


def fmt(value: Any, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def render_header(report: dict[str, Any]) -> str:
    env, settings = report["environment"], report["settings"]
    return "\n".join(
        [
            (
                f"Throughput benchmark: loop {env['loop']}, websockets {env['websockets']}, orjson {env['orjson']}, "
                f"Python {env['python']}, {env['cpus']} CPUs, load average {env['load_average']}, {env['platform']}"
            ),
            (
                f"  open loop, {settings['connections']} connection(s) per trial, trials of {settings['trial_seconds']:g} s "
                f"(+ up to {settings['drain_seconds']:g} s drain); pass = p99 <= {P99_LIMIT_S * 1e3:g} ms from the intended"
            ),
            (
                f"  send time and every message answered; a failing rate is retried {settings['retries']}x; "
                f"start {settings['start_rate']:,.0f}/s, x{settings['factor']:g}, {settings['bisect_steps']} bisection steps"
            ),
            f"  servers: apex-mock {' '.join(settings['mock_args'])}; "
            + (
                f"apex-mock {' '.join(settings['netra_mock_args'])} (JWT in subprotocol jwt.<token>); "
                if settings.get("netra_mock_args")
                else ""
            )
            + "bare_echo_server.py",
        ]
    )


def render_body(report: dict[str, Any]) -> str:
    lines = [
        "a. Highest sustained rate (figures of the passing trial at that rate; cpu: busy share of one core)",
        (
            f"  {'pair':<40} {'max rate':>10} {'p50':>9} {'p99':>9} {'first fail':>11} {'trials':>6} "
            f"{'client cpu':>10} {'server cpu':>10} {'server cpu/msg':>15}"
        ),
    ]
    rates = report["max_rate"]
    for name in PAIRS:
        if name not in rates:
            continue
        s = rates[name]
        at = s["at_max"] or {}
        scheduled, wall = at.get("scheduled") or 0, at.get("wall_s") or 0
        client_busy = at["client_cpu_s"] / wall if wall else None
        server_busy = at["server_cpu_s"] / wall if wall else None
        server_us = at["server_cpu_s"] / scheduled * 1e6 if scheduled else None
        lines.append(
            f"  {s['label']:<40} {s['max_rate']:>8,.0f}/s {fmt(at.get('p50_ms'), '6.2f'):>6} ms {fmt(at.get('p99_ms'), '6.2f'):>6} ms "
            f"{fmt(s['first_failing_rate'], ',.0f', 'none'):>9}{'/s' if s['first_failing_rate'] else '  '} "
            f"{len(s['trials']):>6} "
            f"{fmt(client_busy, '10.0%'):>10} {fmt(server_busy, '10.0%'):>10} {fmt(server_us, '12.1f'):>12} us"
        )
    if any(rates[n]["first_failing_rate"] is None for n in ("engine", "netra", "bare") if n in rates):
        lines.append("  (no failing rate: the search stopped at --max-rate, so that max rate is a lower bound)")
    lines.append(f"  ratio engine / bare: {fmt(rates.get('ratio_engine_to_bare'), '.2f')}")
    if "netra" in rates:
        lines.append(
            f"  ratio netra engine / bare: {fmt(rates.get('ratio_netra_to_bare'), '.2f')} "
            f"(netra / apex engine {fmt(rates.get('ratio_netra_to_engine'), '.2f')})"
        )
    if "ratio_cross_to_bare" in rates:
        lines.append(
            f"  (diagnostic: bare client -> mock / bare pair {fmt(rates.get('ratio_cross_to_bare'), '.2f')}; "
            f"engine / bare client, both on the mock, {fmt(rates.get('ratio_engine_to_cross'), '.2f')})"
        )
    sat = report.get("saturation") or {}
    if sat:
        first = next(iter(sat.values()))
        small, big = first["messages"]
        lines += [
            "",
            (
                f"a2. CPU per message, saturated (a burst of {big:,} minus a burst of {small:,} messages, all due "
                f"at once; median of {len(first['repeats'])})"
            ),
            f"  {'pair':<40} {'client cpu/msg':>15} {'server cpu/msg':>15} {'burst rate':>12}",
        ]
        for name in PAIRS:
            if name in sat:
                x = sat[name]
                lines.append(
                    f"  {x['label']:<40} {fmt(x['client_us_per_msg'], '12.1f'):>12} us "
                    f"{fmt(x['server_us_per_msg'], '12.1f'):>12} us {fmt(x['msgs_per_s'], '10,.0f'):>10}/s"
                )
        cpu = report.get("client_cpu_ratios") or client_cpu_ratios(sat)
        lines.append(f"  client cpu/msg engine / bare client: {fmt(cpu.get('engine_to_bare'), '.2f')}")
        if "netra" in sat:
            lines.append(
                f"  client cpu/msg netra engine / bare client: {fmt(cpu.get('netra_to_bare'), '.2f')} "
                f"(netra / apex engine {fmt(cpu.get('netra_to_engine'), '.2f')})"
            )
    count = report["settings"].get("open_count", OPEN_COUNT)
    lines += [
        "",
        f"b. Opening {count} connections (each client in a fresh process; client RSS growth while open / {count})",
    ]
    lines.append(f"  {'client':<40} {'opened':>7} {'time':>9} {'KB/conn':>9} {'of which LoadEngine(plan)':>25}")
    for name, label in (
        ("engine", "LoadEngine(plan).open() -> apex-mock"),
        ("bare", "websockets connect() -> echo server"),
        ("cross", "websockets connect() -> apex-mock"),
    ):
        c = report["connections"].get(name)
        if c is None:
            continue
        if "error" in c:
            lines.append(f"  {label:<40} ERROR {c['error']}")
            continue
        lines.append(
            f"  {label:<40} {c['opened']:>7} {c['seconds']:>7.3f} s {c['kb_per_connection']:>9.1f} "
            f"{c['setup_bytes'] / 1024:>22.0f} KB"
        )
    lines.append(
        "  (KB/conn counts everything from before LoadEngine(plan) was built; the last column is the part the "
        "construction took)"
    )
    pp = report["ping_pong"]
    lines += [
        "",
        (
            f"c. Ping-pong (sequential request/reply round trips, after {PING_PONG_WARMUP} warm-up rounds; "
            "clients interleaved in blocks of 100)"
        ),
    ]
    lines.append(f"  {'client':<40} {'rounds':>7} {'p50':>10} {'p90':>10} {'p99':>10}")
    if "error" in pp:
        lines.append(f"  ERROR {pp['error']}")
    for name, label in (
        ("library", "Session.request -> apex-mock"),
        ("bare", "bare send/recv -> echo server"),
        ("cross", "bare send/recv -> apex-mock"),
    ):
        p = pp.get(name)
        if p is None:
            continue
        if "error" in p:
            lines.append(f"  {label:<40} ERROR {p['error']}")
            continue
        lines.append(
            f"  {label:<40} {p['rounds']:>7} {p['p50_us']:>7.1f} us {p['p90_us']:>7.1f} us {p['p99_us']:>7.1f} us"
        )
    lines.append(f"  ratio p50 library / bare: {fmt(pp.get('ratio_library_to_bare'), '.2f')}")
    if "ratio_library_to_cross" in pp:
        lines.append(
            f"  (diagnostic: library / bare client, both on the mock, {fmt(pp.get('ratio_library_to_cross'), '.2f')})"
        )
    lines += ["", "d. Targets"]
    for t in report["targets"]:
        value = t["value"]
        shown = "n/a" if value is None else f"{value:.2f} {t.get('unit', '')}".strip()
        verdict = "MET" if t["met"] else "NOT MET"
        if "aim_met" in t:
            verdict += ", aim met" if t["aim_met"] else ", aim not met"
        lines.append(f"  {t['name']:<42} {shown:>10}   target {t['target']:<20} {verdict}")
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    return render_header(report) + "\n\n" + render_body(report)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter run (1 s trials, x2 steps, 2 bisections, 1 burst, 500 round trips): under a minute",
    )
    parser.add_argument(
        "--no-uvloop", action="store_true", help="asyncio's default loop on every side (clients, mock, echo server)"
    )
    parser.add_argument("--connections", type=int, default=1, help="connections per rate trial (default 1)")
    parser.add_argument("--trial-seconds", type=float, help="length of one rate trial (default 2, quick 1)")
    parser.add_argument("--drain-seconds", type=float, default=2.0, help="how long a trial waits for the last answers")
    parser.add_argument("--start-rate", type=float, default=2000, help="first offered rate, msg/s (default 2000)")
    parser.add_argument("--factor", type=float, help="rate growth per step until a trial fails (default 1.5, quick 2)")
    parser.add_argument("--bisect-steps", type=int, help="bisection steps after the first failure (default 3, quick 2)")
    parser.add_argument("--retries", type=int, default=1, help="times a failing rate is tried again (default 1)")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=0.5,
        help="an uncounted trial at the start rate per pair before the search (default 0.5; 0: none)",
    )
    parser.add_argument("--max-rate", type=float, default=500_000, help="stop growing above this rate")
    parser.add_argument("--burst", type=int, help="messages per saturated burst (default 50000, quick 20000; 0: skip)")
    parser.add_argument("--burst-repeats", type=int, help="saturated bursts per pair (default 3, quick 1)")
    parser.add_argument("--rounds", type=int, help="ping-pong round trips (default 2000, quick 500)")
    parser.add_argument("--open-count", type=int, default=OPEN_COUNT, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-netra",
        action="store_true",
        help="skip the netra pair (the engine in the netra dialect -> apex-mock --dialect netra)",
    )
    parser.add_argument(
        "--cross",
        action="store_true",
        help="also search the max rate of the diagnostic pair bare client -> mock (adds ~40 s)",
    )
    parser.add_argument(
        "--profile",
        type=float,
        nargs="?",
        const=0.0,
        metavar="RATE",
        help="also profile the engine with cProfile and print the hotspots: one saturated burst "
        "(no RATE), or one rate trial at RATE msg/s",
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure to PATH as JSON")
    parser.add_argument("--worker-connect", choices=("engine", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-url", help=argparse.SUPPRESS)
    parser.add_argument("--worker-count", type=int, default=OPEN_COUNT, help=argparse.SUPPRESS)
    parser.add_argument("--worker-token", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    if args.trial_seconds is None:
        args.trial_seconds = 1.0 if quick else 2.0
    if args.factor is None:
        args.factor = 2.0 if quick else 1.5
    if args.factor <= 1:
        parser.error("--factor must be > 1")
    if args.bisect_steps is None:
        args.bisect_steps = 2 if quick else 3
    if args.burst is None:
        args.burst = 20_000 if quick else 50_000
    if args.burst_repeats is None:
        args.burst_repeats = 1 if quick else 3
    if args.rounds is None:
        args.rounds = 500 if quick else 2000
    if args.connections < 1:
        parser.error("--connections must be >= 1")
    return args


def environment(use_uvloop: bool) -> dict[str, Any]:
    version = uvloop_version()
    return {
        "loop": f"uvloop {version}" if use_uvloop else "asyncio" + (" (uvloop installed, not used)" if version else ""),
        "websockets": websockets.__version__,
        "orjson": orjson.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
    }


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the servers, measure a-c, stop the servers (always), return the report."""
    use_uvloop = not args.no_uvloop and uvloop_version() is not None
    mock: MockProcess | None = None
    netra_mock: MockProcess | None = None
    echo: EchoServer | None = None
    started = time.perf_counter()
    try:
        mock_args = mock_arguments(use_uvloop)
        mock = start_mock(extra_args=mock_args)
        # The netra pair's server: the same mock, the same throughput path, in the netra dialect
        # (it verifies the engine's minted JWTs with APEX_JWT_SECRET, inherited, else the
        # development secret: see auth.development_jwt_secret()).
        netra_args = [] if args.no_netra else [*mock_args, "--dialect", "netra"]
        if netra_args:
            netra_mock = start_mock(extra_args=netra_args)
        echo = EchoServer(use_uvloop)
        all_urls = {"engine": mock.url}
        if netra_mock is not None:
            all_urls["netra"] = netra_mock.url
        all_urls |= {"bare": echo.url, "cross": mock.url}
        urls = {k: v for k, v in all_urls.items() if k != "cross" or args.cross}
        report: dict[str, Any] = {
            "environment": environment(use_uvloop),
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("worker")}
            | {"mock_args": mock_args, "netra_mock_args": netra_args},
        }
        log(render_header(report))
        log("\nrate trials:")
        factory = loop_factory(use_uvloop)
        with asyncio.Runner(loop_factory=factory) as runner:
            pids = {"engine": mock.pid, "bare": echo.process.pid, "cross": mock.pid}
            if netra_mock is not None:
                pids["netra"] = netra_mock.pid
            rates = runner.run(find_max_rates(urls, args, log, pids))
        rates["ratio_engine_to_bare"] = ratio(rates["engine"]["max_rate"], rates["bare"]["max_rate"])
        if "netra" in rates:
            rates["ratio_netra_to_bare"] = ratio(rates["netra"]["max_rate"], rates["bare"]["max_rate"])
            rates["ratio_netra_to_engine"] = ratio(rates["netra"]["max_rate"], rates["engine"]["max_rate"])
        if "cross" in rates:
            rates["ratio_cross_to_bare"] = ratio(rates["cross"]["max_rate"], rates["bare"]["max_rate"])
            rates["ratio_engine_to_cross"] = ratio(rates["engine"]["max_rate"], rates["cross"]["max_rate"])
        report["max_rate"] = rates
        if args.burst > 0:
            log("\nsaturated bursts (client and server CPU per message):")
            with asyncio.Runner(loop_factory=factory) as runner:
                report["saturation"] = runner.run(measure_saturation(all_urls, args, log, pids))
            report["client_cpu_ratios"] = client_cpu_ratios(report["saturation"])
        log(f"\nopening {args.open_count} connections per client (fresh processes) ...")
        conns = {
            "engine": measure_connections("engine", mock.url, args.open_count, use_uvloop),
            "bare": measure_connections("bare", echo.url, args.open_count, use_uvloop),
        }
        conns["cross"] = measure_connections("bare", mock.url, args.open_count, use_uvloop, token=True)
        report["connections"] = conns
        log(f"ping-pong, {args.rounds} round trips per client ...")
        with asyncio.Runner(loop_factory=factory) as runner:
            try:
                pp = runner.run(asyncio.wait_for(ping_pongs(all_urls, args.rounds), 120))
            except (TimeoutError, OSError, ConnectionError, AssertionError, WebSocketException) as error:
                pp = {"error": f"ping-pong failed: {type(error).__name__}: {error}"}
            if args.profile is not None:
                log("profiling the engine ...")
                report["profile"] = runner.run(
                    asyncio.wait_for(
                        profile_engine(mock.url, args.profile, args.trial_seconds, args.connections, args.burst), 120
                    )
                )
        pp["ratio_library_to_bare"] = ratio(pp.get("library", {}).get("p50_us"), pp.get("bare", {}).get("p50_us"))
        if "cross" in pp:
            pp["ratio_library_to_cross"] = ratio(pp.get("library", {}).get("p50_us"), pp["cross"].get("p50_us"))
        report["ping_pong"] = pp
        report["targets"] = build_targets(report)
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        return report
    finally:
        if echo is not None:
            echo.stop()
        if netra_mock is not None:
            netra_mock.stop()
        if mock is not None:
            mock.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker_connect:
        result = connect_worker(
            args.worker_connect,
            args.worker_url,
            args.worker_count,
            not args.no_uvloop and uvloop_version() is not None,
            args.worker_token,
        )
        print(json.dumps(result))
        return 0
    report = run_benchmark(args)
    print()
    print(render_body(report))
    if "profile" in report:
        print()
        print(report["profile"])
    print(f"\n(whole run {report['wall_seconds']:g} s)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
