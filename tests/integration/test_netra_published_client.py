"""A client that speaks only the platform's published protocol completes a round trip against
``apex-mock --dialect netra`` (started as a subprocess on a free port, as a user would).

The client uses nothing of ours: a plain ``websockets`` client, the JWT as subprotocol
``jwt.<token>`` (minted with PyJWT and the public development secret), the session-opening
handshake, a ``user_message`` with ``payload`` and no extension fields, and the answer read from
``agent_completed``'s top-level ``result``, as the platform's own command-line client does.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import jwt
import orjson
from apex_faults.processes import kill_group, popen
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]
DEV_SECRET = "apex-acceptance-development-secret"
STEP_TIMEOUT_S = 5.0


def _start_netra_mock(log_file: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k != "APEX_JWT_SECRET"}  # the development default
    env["PYTHONPATH"] = str(ROOT / "libraries")
    process = popen(
        [sys.executable, "-m", "apex_mock", "--host", "127.0.0.1", "--port", "0", "--dialect", "netra",
         "--log-file", str(log_file), *extra],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    return process, process.stdout.readline()


async def _published_client_round_trip(url: str) -> tuple[dict, list[dict]]:
    now = int(time.time())
    token = jwt.encode({"sub": "published-client", "iat": now, "exp": now + 600}, DEV_SECRET, algorithm="HS256")
    seen: list[dict] = []

    async def next_of(ws, wanted: str) -> dict:
        while True:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S))
            seen.append(frame)
            if frame.get("type") == wanted:
                return frame

    async with connect(url, subprotocols=[f"jwt.{token}"], open_timeout=STEP_TIMEOUT_S,
                       close_timeout=STEP_TIMEOUT_S) as ws:
        assert ws.subprotocol == f"jwt.{token}"
        handshake = await next_of(ws, "handshake_response")
        thread_id = handshake["thread_id"]
        await ws.send(orjson.dumps({"type": "handshake_acknowledged", "thread_id": thread_id,
                                    "timestamp": datetime.now(UTC).isoformat()}).decode())
        await next_of(ws, "handshake_complete")
        run_id = f"cli_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
        await ws.send(orjson.dumps({"type": "user_message", "payload": {
            "content": "hello from the published client", "thread_id": thread_id, "run_id": run_id,
            "timestamp": datetime.now(UTC).isoformat(), "client_environment": None}}).decode())
        completed = await next_of(ws, "agent_completed")
    return completed, seen


def _round_trip_against_a_mock(tmp_path: Path, *extra: str) -> tuple[dict, list[dict]]:
    """Start a netra mock (``extra`` options), make the published client's round trip, stop the mock by pid."""
    process, line = _start_netra_mock(tmp_path / "mock.log", *extra)
    try:
        assert line.startswith("apex-mock listening on ws://127.0.0.1:"), line
        result = asyncio.run(asyncio.wait_for(_published_client_round_trip(line.split()[-1]), 30))
    finally:
        gone = kill_group(process)
        if process.stdout is not None:
            process.stdout.close()
    assert gone, f"apex-mock (pid {process.pid}) outlived SIGTERM and SIGKILL"
    return result


def test_published_client_round_trip(tmp_path):
    completed, seen = _round_trip_against_a_mock(tmp_path)
    assert completed["result"] == "Response to: hello from the published client"
    assert completed["user_id"] == "published-client" and completed["run_id"].startswith("cli_")
    types = [f["type"] for f in seen]
    assert types.index("connection_established") < types.index("handshake_response") < types.index("handshake_complete")
    assert types[-5:] == ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
    assert all("timestamp" in f for f in seen)
    log_text = (tmp_path / "mock.log").read_text()
    assert DEV_SECRET not in log_text and "eyJ" not in log_text  # neither the secret nor a JWT
    assert "lost_before_handshake" not in log_text


def test_published_client_completes_with_agent_streaming_on(tmp_path):
    """The server streams each run (thinking steps, tools, chunks, paced) and offers no test control:
    a client of the published protocol still reads events until agent_completed, and gets its answer."""
    spec = "thinking_steps=3,tools=2,chunks=3,gap_ms=20"
    completed, seen = _round_trip_against_a_mock(tmp_path, "--agent-stream", spec, "--without", "all")
    assert completed["result"] == "Response to: hello from the published client"
    run = [f for f in seen if f.get("run_id") == completed["run_id"]]
    types = [f["type"] for f in run]
    assert types[0] == "agent_started" and types[-1] == "agent_completed" and types.count("agent_completed") == 1
    assert types.count("agent_thinking") == 3 and types.count("tool_executing") == types.count("tool_completed") == 2
    assert types.count("agent_response_chunk") == 3
    chunks = "".join(f["data"]["chunk"] for f in run if f["type"] == "agent_response_chunk")
    assert chunks == completed["result"]
