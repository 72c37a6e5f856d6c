"""Start and stop the apex_mock server as a separate process.

The mock never runs inside the test process: it is started with the same Python interpreter
(``python -m apex_mock``) on a free port, its one start-up line is read with a timeout, and
it is ready when ``GET /health`` answers 200.
"""

from __future__ import annotations

import http.client
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from apex_faults.processes import popen

STARTUP_LINE = re.compile(r"apex-mock listening on (ws://(?P<host>[^\s/]+):(?P<port>\d+)/ws)")


USAGE_ERROR = 2  # apex-mock's exit code for a bad command line (an unknown fault, say)


class MockStartError(RuntimeError):
    """The mock did not start or did not become ready."""

    ROBOT_SUPPRESS_NAME = True  # Robot shows the message alone, not "MockStartError: ..."


def exit_message(code: int, output: str) -> str:
    """Why the mock exited before listening, as one line when it can be.

    A usage error (exit code 2) is the mock's own one-line explanation, e.g. ``Unknown mock
    fault 'reorderr'; did you mean 'reorder'? (apex-mock --list-faults lists every fault)``:
    a suite setup failure repeats it for every test, so nothing more is added.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if code == USAGE_ERROR and lines:
        last = lines[-1]
        # "apex-mock: Unknown mock fault ..." -> the explanation; argparse's "apex-mock: error: ..." stays whole
        return last if last.startswith("apex-mock: error:") else last.removeprefix("apex-mock: ")
    return f"apex-mock exited with code {code} before listening. Output: {output.strip()}"


@dataclass
class MockProcess:
    process: subprocess.Popen[str]
    url: str
    host: str
    port: int
    log_file: Path | None
    faults: tuple[str, ...]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to ``timeout``, then kill. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_mock(
    *,
    faults: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    log_file: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 10.0,
) -> MockProcess:
    """Start ``python -m apex_mock`` and wait until it is listening and healthy."""
    command = [sys.executable, "-m", "apex_mock", "--host", host, "--port", str(port)]
    for fault in faults:
        command += ["--fault", fault]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        command += ["--log-file", str(log_file)]
    command += list(extra_args)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Through apex_faults.processes: the mock dies with this process however it ends (a
    # killed robot, a CI timeout), not only when the library stops it.
    process = popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=False,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def _pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=_pump, name="apex-mock-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            process.kill()
            process.wait(5)
            raise MockStartError(f"apex-mock did not report listening within {timeout:g} s. Output: {''.join(seen)!r}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            code = process.wait(5)
            raise MockStartError(exit_message(code, "".join(seen)))
        seen.append(line)
        match = STARTUP_LINE.search(line)
        if match:
            break
    mock = MockProcess(process, match.group(1), match.group("host"), int(match.group("port")), log_file, tuple(faults))
    wait_healthy(mock.host, mock.port, max(0.5, deadline - time.monotonic()))
    return mock


def wait_healthy(host: str, port: int, timeout: float) -> None:
    """Poll ``GET /health`` until it answers 200 or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(host, port, timeout=1.0)
            connection.request("GET", "/health")
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as error:
            last = str(error)
        time.sleep(0.05)  # polling interval of a readiness check, not a wait for a result
    raise MockStartError(f"apex-mock at {host}:{port} was not healthy within {timeout:g} s ({last}).")
