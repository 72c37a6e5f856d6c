"""The load engine following agent runs, against a scripted WebSocket server (in process, 127.0.0.1).

The server answers every chat message with a run the test scripts (events, the final, extras
sent to another connection), so each integrity class is produced on purpose and the engine
must put it where it belongs. No timing thresholds: counts and witnesses only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from MessagingLibrary.engine.load import LoadEngine, LoadPlan, LoadResult
from MessagingLibrary.engine.schedule import Phase
from websockets.asyncio.server import serve

Script = Callable[[dict, int], list[dict]]


def golden(frame: dict, n: int) -> list[dict]:
    """The legal run of chat message ``frame`` (the n-th the server got, from 1)."""
    mid = frame["message_id"]
    events = ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    out = [{"type": "agent_progress", "event": e, "message_id": mid, "run_id": f"r-{n}", "tool_name": "t"} for e in events]
    out.append({"type": "agent_progress", "event": "answer_chunk", "message_id": mid, "run_id": f"r-{n}", "text": "Resp"})
    out.append({"type": "agent_progress", "event": "answer_chunk", "message_id": mid, "run_id": f"r-{n}", "text": "onse"})
    out.append({"type": "ai_response", "message_id": mid, "sequence_id": frame.get("sequence_id"), "content": "Response"})
    return out


async def _serve(script: Script, to_other: Callable[[dict, int], list[dict]] | None):
    connections: list = []
    count = 0

    async def handler(ws) -> None:
        nonlocal count
        connections.append(ws)
        await ws.send(orjson.dumps({"type": "session_started", "user_id": "u", "resumed": False, "queued": 0}).decode())
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("type") == "configure_session":
                    await ws.send(orjson.dumps({"type": "session_configured", "request_id": frame.get("request_id")}).decode())
                    continue
                if frame.get("type") != "user_message":
                    continue
                count += 1
                for out in script(frame, count):
                    await ws.send(orjson.dumps(out).decode())
                    await asyncio.sleep(0.001)
                if to_other is not None:
                    other = next((c for c in connections if c is not ws), None)
                    if other is not None:
                        for out in to_other(frame, count):
                            await other.send(orjson.dumps(out).decode())
        finally:
            connections.remove(ws)

    return await serve(handler, "127.0.0.1", 0, compression=None)


def follow(script: Script, *, connections: int = 1, users: int | None = None, messages: int = 10,
           to_other=None, drain_s: float = 2.0) -> LoadResult:
    async def _go() -> LoadResult:
        server = await _serve(script, to_other)
        port = server.sockets[0].getsockname()[1]
        tokens = [f"user-{i % (users or connections)}" for i in range(connections)]
        plan = LoadPlan(
            url=f"ws://127.0.0.1:{port}", tokens=tokens, phases=[Phase("steady", messages / 0.5, 0.5)],
            connections=connections, message_type="user_message", streams=True, run_id="agents",
            drain_timeout_s=drain_s, quiet_s=0.2,
        )
        engine = LoadEngine(plan)
        try:
            await engine.open()
            return await engine.run()
        finally:
            await engine.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(_go())


def test_legal_runs_are_complete_with_every_figure():
    result = follow(golden)
    streams = result.streams
    assert streams["runs"] == 10 and streams["classes"]["complete"] == 10
    assert sum(streams["classes"][k] for k in streams["classes"] if k != "complete") == 0
    assert streams["events_per_run"]["p50_events"] == 7
    for figure in ("time_to_first_event", "time_to_first_progress", "time_to_final", "inter_event_gap"):
        assert streams[figure]["count"] > 0, figure
    assert streams["inter_event_gap"]["count"] == 60
    assert streams["chars_per_second"]["count"] == 10


def test_an_event_after_the_final_is_seen_even_after_every_message_was_answered():
    def late(frame, n):
        run = golden(frame, n)
        if n == 10:  # the last message: its extra event comes after everything was answered
            run.append({"type": "agent_progress", "event": "agent_thinking", "message_id": frame["message_id"]})
        return run

    streams = follow(late).streams
    assert streams["classes"]["out_of_order"] == 1 and streams["classes"]["complete"] == 9
    assert "agent_thinking at +" in streams["witnesses"]["out_of_order"][0]
    assert "came after its final outcome" in streams["witnesses"]["out_of_order"][0]


def test_a_run_without_its_final_is_truncated_when_the_drain_ends():
    def cut(frame, n):
        return golden(frame, n)[:2] if n == 3 else golden(frame, n)

    streams = follow(cut, drain_s=0.5).streams
    assert streams["classes"]["truncated"] == 1 and streams["classes"]["complete"] == 9
    [witness] = streams["witnesses"]["truncated"]
    assert witness.startswith("run 'r-3' (message 'agents-0-2') on connection c0: no final outcome within the drain timeout")
    assert "its last event was agent_thinking" in witness


def test_a_duplicated_final_and_an_unpaired_tool():
    def broken(frame, n):
        run = golden(frame, n)
        if n == 2:
            run.append(run[-1])
        if n == 4:
            del run[2]  # tool_executing
        return run

    streams = follow(broken).streams
    assert streams["classes"]["duplicated_final"] == 1 and streams["classes"]["out_of_order"] == 1
    assert "a second final outcome (ai_response)" in streams["witnesses"]["duplicated_final"][0]
    assert "tool_completed 't' at +" in streams["witnesses"]["out_of_order"][0]
    assert "has no tool_executing before it" in streams["witnesses"]["out_of_order"][0]


def test_another_users_events_are_cross_talk_and_unknown_runs_are_orphans():
    def copy(frame, n):  # every 3rd run's first event also reaches the other connection
        return golden(frame, n)[:1] if n % 3 == 0 else []

    def orphan(frame, n):
        run = golden(frame, n)
        if n == 5:
            run.insert(0, {"type": "agent_progress", "event": "agent_thinking", "run_id": "nobody's"})
        return run

    result = follow(orphan, connections=2, to_other=copy)
    streams = result.streams
    assert streams["classes"]["cross_talk"] == 3
    assert streams["classes"]["orphan"] == 1
    assert streams["classes"]["complete"] == 10
    assert "which connection c" in streams["witnesses"]["cross_talk"][0]
    assert "names run_id 'nobody's', a run this load run never started" in streams["witnesses"]["orphan"][0]


def test_two_connections_of_one_user_share_events_without_cross_talk():
    def copy(frame, n):
        return golden(frame, n)[:1]

    streams = follow(golden, connections=2, users=1, to_other=copy).streams
    assert streams["classes"]["cross_talk"] == 0
    # the same user's other connection got a copy of agent_started: a second agent_started
    assert streams["classes"]["out_of_order"] > 0
