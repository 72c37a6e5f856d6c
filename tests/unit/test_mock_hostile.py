"""apex-mock stays bounded under hostile input: 20,000 seeded hostile frames from one user.

The mock runs as a real process (``python -m apex_mock`` on a free port of 127.0.0.1, stopped
by pid). One connection sends the frames pipelined -- malformed JSON, binary frames, JSON that
is not an object, nesting deeper than the parser takes, wrong types, 100 KB message ids, 200 KB
contents, oversized request ids, shared-state keys and agent lists, floods of configure_session
and configure_agents, and valid messages with large contents -- while its reader counts the
replies. Every bad frame must get an ``error`` with its code (counted per code against what was
sent), the server's RSS must grow by less than 100 MB, the limits reached must show in
``server_stats.limits`` and ``agent_state.processed_message_ids_trimmed``, and a normal chat
must still work on another connection.

``python tests/unit/test_mock_hostile.py`` prints the figures for the mock found on PYTHONPATH
(the RSS growth of an older version, say).
"""

from __future__ import annotations

import asyncio
import random
import string
from collections import Counter
from dataclasses import dataclass, field
import orjson
import psutil
from websockets.asyncio.client import connect

from MessagingLibrary.engine.mock_process import start_mock

SEED = 20_260_611
FRAMES = 20_000
MAX_RSS_GROWTH = 100 * 2**20
TIMEOUT_S = 120.0  # a bound on the whole exchange (not asserted as a duration)
BIG_OK_CONTENT = 8_000  # valid, kept in the history until --max-history-chars trims it

# kind -> weight (per 1000 frames)
KINDS = {
    "malformed_json": 90,
    "binary": 70,
    "not_an_object": 50,
    "too_deep": 40,
    "nested_content": 50,
    "wrong_type": 120,
    "huge_message_id": 30,
    "huge_content": 30,
    "huge_request_id": 25,
    "huge_shared_state_key": 25,
    "huge_type": 20,
    "unknown_type": 40,
    "config_over_limit": 60,
    "config_unknown_field": 40,
    "agents_too_many": 40,
    "agent_name_too_long": 30,
    "push_not_admin": 20,
    "config_ok": 60,
    "big_ok_message": 140,
}


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=min(n, 64))) * (n // 64 + 1)


def hostile_frame(rng: random.Random, kind: str, i: int) -> tuple[str | bytes, str | None]:
    """One frame of ``kind``, and the ``error`` code it must get (None: a valid frame)."""
    if kind == "malformed_json":
        return '{"type": "user_message", "message_id": "m' + _text(rng, rng.randint(1, 300))[:300], "bad_json"
    if kind == "binary":
        return rng.randbytes(rng.randint(1, 4000)), "bad_json"
    if kind == "not_an_object":
        return rng.choice(["[1, 2, 3]", "42", '"text"', "null", "true"]), "bad_json"
    if kind == "too_deep":
        depth = rng.randint(1100, 5000)
        return '{"type": "user_message", "message_id": "d", "content": ' + "[" * depth + "]" * depth + "}", "bad_json"
    if kind == "nested_content":
        depth = rng.randint(10, 500)
        nested = "[" * depth + "]" * depth  # deep, but within what the parser takes
        return f'{{"type": "user_message", "message_id": "n{i}", "content": {nested}}}', "bad_field"
    if kind == "wrong_type":
        frame, code = rng.choice([
            ({"type": "user_message", "message_id": rng.randint(0, 10**9)}, "bad_field"),
            ({"type": rng.randint(0, 10**9)}, "bad_field"),
            ({"type": "user_message", "message_id": f"w{i}", "sequence_id": "seven"}, "bad_field"),
            ({"type": "user_message", "message_id": f"w{i}", "priority": "urgent"}, "bad_field"),
            ({"type": "user_message", "message_id": f"w{i}", "content": 12}, "bad_field"),
            ({"type": "configure_session", "processing_ms": "fast"}, "bad_field"),
            ({"type": "configure_agents", "agents": "data"}, "bad_field"),
            ({"type": "get_agent_state", "request_id": {"nested": [1, 2]}}, "bad_field"),
            ({"type": "ack", "delivery_ids": [1, 2]}, "bad_field"),
            ({"message_id": f"w{i}"}, "missing_field"),
        ])
        return orjson.dumps(frame).decode(), code
    if kind == "huge_message_id":
        return orjson.dumps({"type": "user_message", "message_id": _text(rng, 100_000 + rng.randint(0, 1000)),
                             "content": "x"}).decode(), "too_large"
    if kind == "huge_content":
        return orjson.dumps({"type": "user_message", "message_id": f"c{i}",
                             "content": _text(rng, 200_000 + rng.randint(0, 1000))}).decode(), "too_large"
    if kind == "huge_request_id":
        return orjson.dumps({"type": rng.choice(["get_agent_state", "get_queue_state", "latency_probe"]),
                             "request_id": _text(rng, 100_000), "probe_id": 1,
                             "client_send_ns": 1}).decode(), "too_large"
    if kind == "huge_shared_state_key":
        return orjson.dumps({"type": "user_message", "message_id": f"k{i}",
                             "shared_state_key": _text(rng, 50_000)}).decode(), "too_large"
    if kind == "huge_type":
        return orjson.dumps({"type": _text(rng, 20_000)}).decode(), "too_large"
    if kind == "unknown_type":
        return orjson.dumps({"type": "t" + _text(rng, rng.randint(1, 60))[:60]}).decode(), "unknown_type"
    if kind == "config_over_limit":
        name = rng.choice(["queue_capacity", "offline_capacity"])
        return orjson.dumps({"type": "configure_session", name: rng.randint(10**6, 10**12)}).decode(), "too_large"
    if kind == "config_unknown_field":
        return orjson.dumps({"type": "configure_session", _text(rng, rng.randint(1000, 50_000)): 1}).decode(), "bad_field"
    if kind == "agents_too_many":
        n = rng.randint(1000, 20_000)
        return orjson.dumps({"type": "configure_agents", "agents": [f"agent-{k}" for k in range(n)]}).decode(), "too_large"
    if kind == "agent_name_too_long":
        return orjson.dumps({"type": "configure_agents", "agents": ["a", _text(rng, 10_000)]}).decode(), "too_large"
    if kind == "push_not_admin":
        return orjson.dumps({"type": "push", "to_user": "user-0123456789abcdef", "message_id": f"p{i}"}).decode(), "forbidden"
    if kind == "config_ok":
        return orjson.dumps({"type": "configure_session", "processing_ms": 0,
                             "queue_capacity": rng.randint(500, 10_000),
                             "duplicate_window_s": rng.choice([0, 1, 300, 10**9])}).decode(), None
    if kind == "big_ok_message":
        return orjson.dumps({"type": "user_message", "message_id": f"ok-{i}",
                             "content": _text(rng, BIG_OK_CONTENT)[:BIG_OK_CONTENT]}).decode(), None
    raise AssertionError(f"unknown kind {kind}")


def hostile_frames(seed: int = SEED, n: int = FRAMES) -> list[tuple[str | bytes, str | None]]:
    rng = random.Random(seed)
    kinds = rng.choices(list(KINDS), weights=list(KINDS.values()), k=n)
    return [hostile_frame(rng, kind, i) for i, kind in enumerate(kinds)]


@dataclass
class Outcome:
    expected: Counter = field(default_factory=Counter)  # error code -> frames sent that must get it
    errors: Counter = field(default_factory=Counter)  # error code -> error frames received
    replies: Counter = field(default_factory=Counter)  # other reply types received
    rss_before: int = 0
    rss_after: int = 0
    agent_state: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    chat: dict = field(default_factory=dict)

    @property
    def growth(self) -> int:
        return self.rss_after - self.rss_before


async def _request(ws, frame: dict, reply_type: str) -> dict:
    await ws.send(orjson.dumps(frame).decode())
    async for raw in ws:
        reply = orjson.loads(raw)
        if reply.get("type") == reply_type and reply.get("request_id") == frame.get("request_id"):
            return reply
    raise AssertionError(f"connection closed before {reply_type}")


async def hostile_exchange(url: str, pid: int, frames: list[tuple[str | bytes, str | None]]) -> Outcome:
    process = psutil.Process(pid)
    out = Outcome(expected=Counter(code for _, code in frames if code is not None))
    headers = {"Authorization": "Bearer hostile-user"}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        assert orjson.loads(await ws.recv())["type"] == "session_started"
        await _request(ws, {"type": "configure_session", "processing_ms": 0, "request_id": "warm"},
                       "session_configured")
        out.rss_before = process.memory_info().rss
        done = asyncio.Event()

        async def read() -> None:
            async for raw in ws:  # keep reading so the mock is never blocked on its writes
                reply = orjson.loads(raw)
                if reply.get("type") == "error":
                    out.errors[reply.get("code")] += 1
                elif reply.get("request_id") == "end":
                    out.agent_state = reply
                    done.set()
                    return
                else:
                    out.replies[reply.get("type")] += 1

        reader = asyncio.create_task(read())
        for payload, _ in frames:
            await ws.send(payload)
        # Errors are answered as each frame is read, so all come before this reply.
        await ws.send(orjson.dumps({"type": "get_agent_state", "request_id": "end"}).decode())
        await asyncio.wait({reader}, timeout=TIMEOUT_S)
        assert done.is_set(), "no agent_state for the end marker"
        while True:  # the valid messages still queued are processed (condition, bounded by the timeout)
            out.stats = await _request(ws, {"type": "get_server_stats", "request_id": "stats"}, "server_stats")
            if out.stats["queue_depth"] == 0:
                break
            await asyncio.sleep(0.05)
        out.rss_after = process.memory_info().rss
        out.agent_state = await _request(ws, {"type": "get_agent_state", "request_id": "final"}, "agent_state")
    async with connect(url, additional_headers={"Authorization": "Bearer normal-user"}) as ws:
        assert orjson.loads(await ws.recv())["type"] == "session_started"
        await ws.send(orjson.dumps({"type": "user_message", "message_id": "hello-1", "content": "hello"}).decode())
        async for raw in ws:
            reply = orjson.loads(raw)
            if reply.get("type") in ("ai_response", "error"):
                out.chat = reply
                break
    return out


def run_against(url: str, pid: int) -> Outcome:
    async def bounded() -> Outcome:
        return await asyncio.wait_for(hostile_exchange(url, pid, hostile_frames()), TIMEOUT_S)

    return asyncio.run(bounded())


def test_hostile_frames_from_one_user_leave_the_mock_bounded_and_answering(tmp_path):
    mock = start_mock(log_file=tmp_path / "mock.log")
    try:
        out = run_against(mock.url, mock.pid)
        assert mock.running, "the mock died"
    finally:
        mock.stop()

    assert out.errors == out.expected, f"errors received {dict(out.errors)} != expected {dict(out.expected)}"
    assert "internal" not in out.errors
    assert out.growth < MAX_RSS_GROWTH, f"RSS grew by {out.growth / 2**20:.1f} MB"
    limits = out.stats["limits"]
    assert limits["oversized_refused"] == out.expected["too_large"]
    # the valid 8 KB contents exceed --max-history-chars: the oldest are dropped, and said so
    trimmed = out.agent_state["processed_message_ids_trimmed"]
    assert trimmed > 0 and limits["history_trimmed"] == trimmed
    kept = out.agent_state["processed_message_ids"]
    assert out.agent_state["message_count"] == len(kept) + trimmed
    assert out.agent_state["corrupted"] is False
    assert out.chat["type"] == "ai_response" and out.chat["content"] == "Response to: hello"


if __name__ == "__main__":  # figures for the mock on PYTHONPATH: python tests/unit/test_mock_hostile.py
    process = start_mock()
    try:
        result = run_against(process.url, process.pid)
    finally:
        process.stop()
    print(f"RSS before {result.rss_before / 2**20:.1f} MB, after {result.rss_after / 2**20:.1f} MB, "
          f"growth {result.growth / 2**20:.1f} MB")
    print("expected errors:", dict(sorted(result.expected.items())))
    print("errors received:", dict(sorted(result.errors.items())))
    print("other replies:  ", dict(sorted(result.replies.items())))
    print("limits:", result.stats.get("limits"), "trimmed:", result.agent_state.get("processed_message_ids_trimmed"))
    print("chat:", result.chat.get("type"), result.chat.get("content"))
