"""Agent runs that stream events (docs/protocol.md §4.9): agents.py alone, then apex and netra over real
WebSockets with an in-process MockServer on port 0, the CLI flag, and the stream faults.

No assertion on a measured time: timings are checked on the plan (agents.plan_run), and where a fault
delays something the wire test checks an ORDER with a wide margin (a stalled run's second event comes
after another run has finished; a slowed first event after a reply due long before it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime

import orjson
import pytest
from apex_mock import MockServer
from apex_mock import agents as A
from apex_mock import faults as F
from apex_mock.cli import build_parser, main
from test_mock_netra import Netra, token
from test_mock_netra import started as netra_started
from test_mock_server import Client, _env, cli_mock, gone, poll, run, started
from websockets.asyncio.client import connect

#: A quick, exactly timed stream (no jitter); runs take a few milliseconds.
FAST = {"first_event_ms": 0, "gap_ms": 2, "jitter": 0}
#: The apex ai_response's fields today (without streaming).
TODAY = {"type", "message_id", "sequence_id", "priority", "content", "contributing_agents", "processed_at_ns"}


def progress(frames: list[dict], run_id=None) -> list[dict]:
    return [f for f in frames if f["type"] == "agent_progress" and (run_id is None or f["run_id"] == run_id)]


def finals(frames: list[dict], run_id=None) -> list[dict]:
    return [f for f in frames if f["type"] == "ai_response" and (run_id is None or f.get("run_id") == run_id)]


def events_of(frames: list[dict], run_id) -> list[str]:
    return [f["event"] for f in progress(frames, run_id)]


async def configure(c: Client, rid="cfg", **stream) -> dict:
    reply = await c.request(rid, type="configure_session", processing_ms=0, agent_stream=stream)
    assert reply["type"] == "session_configured", reply
    return reply


async def send_messages(c: Client, n: int, prefix: str = "m", **extra) -> None:
    for i in range(1, n + 1):
        await c.send(type="user_message", message_id=f"{prefix}{i}", content=f"question {i}", **extra)


async def quiet(server: MockServer, started_runs: int) -> None:
    """Until ``started_runs`` runs have started and none is active any more."""
    await poll(lambda: server.runs.started == started_runs and not server.runs.active and not server.runs.tasks,
               5.0, f"{started_runs} runs over")


# --------------------------------------------------------------------------- settings (pure)


def test_normalize_fills_the_defaults_and_none_is_off():
    assert A.normalize_stream(None) is None
    assert A.normalize_stream({}) == A.STREAM_DEFAULTS
    assert A.STREAM_DEFAULTS == {"thinking_steps": 2, "tools": 1, "first_event_ms": 50.0, "gap_ms": 30.0,
                                 "jitter": 0.5, "answer_chars": 0, "chunks": 0, "max_concurrent_runs": 4, "seed": 0}
    given = {"tools": 0, "seed": -7, "jitter": 1, "gap_ms": 0.5}
    assert A.normalize_stream(given) == {**A.STREAM_DEFAULTS, **given}
    assert A.normalize_stream(given) is not A.normalize_stream(given)  # never shared


@pytest.mark.parametrize("key,value,rule", [
    ("thinking_steps", 51, "an integer 0..50"),
    ("thinking_steps", 1.5, "an integer 0..50"),
    ("tools", -1, "an integer 0..20"),
    ("tools", True, "an integer 0..20"),
    ("first_event_ms", 60_001, "a number 0..60000"),
    ("gap_ms", "30", "a number 0..60000"),
    ("jitter", 1.01, "a number 0..1"),
    ("answer_chars", 100_001, "an integer 0..100000"),
    ("chunks", 1001, "an integer 0..1000"),
    ("max_concurrent_runs", 0, "an integer 1..1000"),
    ("seed", 0.5, "an integer"),
    ("seed", None, "an integer"),
])
def test_each_key_is_validated_naming_it_and_its_rule(key, value, rule):
    with pytest.raises(ValueError) as exc:
        A.normalize_stream({key: value})
    assert f"'agent_stream.{key}' must be {rule}" in str(exc.value)


def test_an_unknown_key_lists_the_known_ones_and_a_non_object_is_refused():
    with pytest.raises(ValueError, match=r"unknown field 'agent_stream.steps' \(known: thinking_steps, tools, "
                                         r"first_event_ms, gap_ms, jitter, answer_chars, chunks, max_concurrent_runs, seed\)"):
        A.normalize_stream({"steps": 1})
    with pytest.raises(ValueError, match="'agent_stream' must be null or an object"):
        A.normalize_stream(True)


def test_cli_spec_parses_and_bad_specs_name_the_key(capsys):
    assert A.parse_stream_spec("thinking_steps=3,tools=0") == {**A.STREAM_DEFAULTS, "thinking_steps": 3, "tools": 0}
    assert A.parse_stream_spec("") == A.STREAM_DEFAULTS
    assert A.parse_stream_spec(" jitter = 0.25 , seed=-3 ,") == {**A.STREAM_DEFAULTS, "jitter": 0.25, "seed": -3}
    for spec, message in [
        ("tools=x", "'agent_stream.tools' must be a number, got 'x'"),
        ("tools", "'tools' is not key=value"),
        ("tools=99", "'agent_stream.tools' must be an integer 0..20, got 99"),
        ("steps=1", "unknown field 'agent_stream.steps' (known: thinking_steps,"),
        ("tools=1,tools=2", "agent_stream.tools given twice"),
    ]:
        with pytest.raises(ValueError) as exc:
            A.parse_stream_spec(spec)
        assert message in str(exc.value), spec
    assert build_parser().parse_args([]).agent_stream is None  # off by default
    assert build_parser().parse_args(["--agent-stream"]).agent_stream == ""  # on, the defaults
    assert build_parser().parse_args(["--agent-stream", "thinking_steps=3,tools=0"]).agent_stream == \
        "thinking_steps=3,tools=0"
    assert main(["--agent-stream", "thinking_steps=3,tools=99"]) == 2
    assert capsys.readouterr().err == \
        "apex-mock: --agent-stream: field 'agent_stream.tools' must be an integer 0..20, got 99\n"


def test_mock_server_validates_its_default_stream():
    with pytest.raises(ValueError, match="'agent_stream.chunks' must be an integer 0..1000"):
        MockServer(agent_stream={"chunks": -1})
    assert MockServer().defaults.agent_stream is None
    assert MockServer(agent_stream={}).defaults.agent_stream == A.STREAM_DEFAULTS


# --------------------------------------------------------------------------- the plan (pure)


def test_answer_text_pads_to_exactly_n_chars_deterministically():
    base = "Response to: hello"
    assert A.answer_text(base, 0) == base
    assert A.answer_text(base, 5) == base  # never shortened
    padded = A.answer_text(base, 1000)
    assert len(padded) == 1000 and padded.startswith(base + A.FILLER) and padded == A.answer_text(base, 1000)
    assert len(A.answer_text(base, len(base) + 1)) == len(base) + 1


@pytest.mark.parametrize("length,chunks", [(15, 3), (15, 4), (100, 7), (3, 5), (1, 1)])
def test_chunks_are_n_nearly_equal_consecutive_parts(length, chunks):
    text = "".join(chr(ord("a") + i % 26) for i in range(length))
    parts = A.split_chunks(text, chunks)
    assert len(parts) == chunks and "".join(parts) == text
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert A.split_chunks(text, 0) == []


def test_plan_order_interleaves_thinking_and_tools_then_chunks():
    stream = {**A.STREAM_DEFAULTS, "thinking_steps": 3, "tools": 2, "chunks": 2}
    plan = A.plan_run(stream, "m1", "Response to: x")
    assert [(e["event"], e.get("step"), e.get("tool_name"), e.get("index")) for e in plan.events] == [
        ("agent_started", None, None, None),
        ("agent_thinking", 1, None, None),
        ("tool_executing", None, "apex_lookup_1", None),
        ("tool_completed", None, "apex_lookup_1", None),
        ("agent_thinking", 2, None, None),
        ("tool_executing", None, "apex_lookup_2", None),
        ("tool_completed", None, "apex_lookup_2", None),
        ("agent_thinking", 3, None, None),
        ("answer_chunk", None, None, 0),
        ("answer_chunk", None, None, 1),
    ]
    more_tools = A.plan_run({**stream, "thinking_steps": 1, "tools": 2, "chunks": 0}, "m1", "a")
    assert [e["event"] for e in more_tools.events] == ["agent_started", "agent_thinking", "tool_executing",
                                                      "tool_completed", "tool_executing", "tool_completed"]
    bare = A.plan_run({**stream, "thinking_steps": 0, "tools": 0, "chunks": 0}, "m1", "a")
    assert [e["event"] for e in bare.events] == ["agent_started"] and bare.final
    assert len(plan.waits_s) == len(plan.events) + 1  # before every event, then before the final


def test_same_seed_and_message_same_gaps_within_the_jitter_bounds():
    stream = {**A.STREAM_DEFAULTS, "gap_ms": 100.0, "jitter": 0.5, "seed": 42}
    gaps = A.gaps_s(stream, "m-1", 200)
    assert gaps == A.gaps_s(stream, "m-1", 200)
    assert A.gaps_s(stream, "m-1", 10) == gaps[:10]  # a prefix: fewer events, same timings
    assert gaps != A.gaps_s(stream, "m-2", 200)
    assert gaps != A.gaps_s({**stream, "seed": 43}, "m-1", 200)
    assert all(0.05 <= g <= 0.15 for g in gaps) and max(gaps) - min(gaps) > 0.05  # spread over the range
    assert A.gaps_s({**stream, "jitter": 0}, "m-1", 5) == [0.1] * 5
    plan = A.plan_run(stream, "m-1", "Response to: x")
    assert plan == A.plan_run(stream, "m-1", "Response to: x")
    assert plan.waits_s == (0.05, *gaps[: len(plan.events)])  # first_event_ms, then one gap each


def test_faults_change_the_plan_of_the_runs_they_name_only():
    stream = {**A.STREAM_DEFAULTS, "thinking_steps": 2, "tools": 2, "chunks": 2}
    clean = A.plan_run(stream, "m", "Response to: x")
    names = [e["event"] for e in clean.events]

    def plan(n, **faults):
        return A.plan_run(stream, "m", "Response to: x", n, faults)

    for name in (F.STALL_STREAM, F.TRUNCATE_STREAM, F.DUPLICATE_FINAL, F.EVENT_AFTER_FINAL, F.MISSING_STARTED,
                 F.UNPAIRED_TOOL, F.CROSS_TALK):
        assert plan(3, **{name: 2}) == clean, name  # run #3 is not a multiple of 2
    stalled = plan(4, stall_stream=2)
    assert stalled.waits_s[1] == clean.waits_s[1] + F.STALL_STREAM_S
    assert stalled.waits_s[2:] == clean.waits_s[2:] and stalled.events == clean.events
    truncated = plan(2, truncate_stream=2)
    assert [e["event"] for e in truncated.events] == ["agent_started", "agent_thinking"] and not truncated.final
    assert not truncated.duplicate_final and truncated.after_final is None
    no_thinking = A.plan_run({**stream, "thinking_steps": 0}, "m", "x", 5, {F.TRUNCATE_STREAM: 5})
    assert [e["event"] for e in no_thinking.events] == ["agent_started"]
    assert plan(2, duplicate_final=2).duplicate_final
    late = plan(2, event_after_final=2)
    assert late.after_final == {"event": "agent_thinking", "step": 3, "text": "Step 3: one more thought"}
    missing = plan(2, missing_started=2)
    assert [e["event"] for e in missing.events] == names[1:] and missing.waits_s[0] == clean.waits_s[0]
    unpaired = plan(2, unpaired_tool=2)
    assert [e["event"] for e in unpaired.events] == names[:2] + names[3:]  # the first tool_executing only
    no_tools = {**stream, "tools": 0}
    assert A.plan_run(no_tools, "m", "x", 2, {F.UNPAIRED_TOOL: 2}) == A.plan_run(no_tools, "m", "x", 2)
    slow = plan(1, slow_first_event=1500)
    assert slow.waits_s[0] == clean.waits_s[0] + 1.5 and slow.waits_s[1:] == clean.waits_s[1:]
    assert plan(2, cross_talk=2).cross_talk
    # Faults together: each still changes its one property.
    both = plan(2, missing_started=2, truncate_stream=2)
    assert [e["event"] for e in both.events] == ["agent_thinking"] and not both.final
    assert len(plan(2, missing_started=2, stall_stream=2).waits_s) == len(names)


# --------------------------------------------------------------------------- apex over the wire


def test_streaming_off_replies_exactly_as_before():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "plain")
            configured = await c.request(1, type="configure_session", queue_capacity=10)
            assert configured["agent_stream"] is None
            await send_messages(c, 3)
            replies = await c.wait_type("ai_response", 3)
            assert all(set(r) == TODAY for r in replies)
            assert [r["content"] for r in replies] == [f"Response to: question {i}" for i in (1, 2, 3)]
            assert not progress(c.frames)
            stats = await c.request(2, type="get_server_stats")
            assert stats["agent_runs"] == {"started": 0, "completed": 0, "active": 0}
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_a_streamed_run_on_the_apex_wire():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "streamer")
            configured = await configure(c, thinking_steps=2, tools=1, chunks=3, answer_chars=50, **FAST)
            assert configured["agent_stream"] == {**A.STREAM_DEFAULTS, "thinking_steps": 2, "tools": 1, "chunks": 3,
                                                  "answer_chars": 50, **FAST}
            await c.send(type="user_message", message_id="m1", content="hi", sequence_id=7, request_id="q1")
            (final,) = await c.wait_type("ai_response")
            events = progress(c.frames)
            assert [(e["seq"], e["event"]) for e in events] == [
                (1, "agent_started"), (2, "agent_thinking"), (3, "tool_executing"), (4, "tool_completed"),
                (5, "agent_thinking"), (6, "answer_chunk"), (7, "answer_chunk"), (8, "answer_chunk")]
            assert events[0] == {"type": "agent_progress", "event": "agent_started", "message_id": "m1", "run_id": "r-1",
                                 "seq": 1, "agent": "apex_mock_agent", "request_id": "q1"}
            assert events[1] == {"type": "agent_progress", "event": "agent_thinking", "message_id": "m1",
                                 "run_id": "r-1", "seq": 2, "step": 1, "text": "Step 1: working out the answer",
                                 "request_id": "q1"}
            assert events[2]["tool_name"] == events[3]["tool_name"] == "apex_lookup_1"
            assert events[3]["status"] == "success"
            assert [e["index"] for e in events[5:]] == [0, 1, 2]
            # The final: today's fields plus run_id and events; the content is the padded answer.
            assert set(final) == TODAY | {"request_id", "run_id", "events"}
            assert (final["run_id"], final["events"], final["sequence_id"], final["request_id"]) == ("r-1", 8, 7, "q1")
            assert len(final["content"]) == 50 and final["content"].startswith("Response to: hi")
            assert "".join(e["text"] for e in events[5:]) == final["content"]
            assert c.frames.index(final) == len(c.frames) - 1  # nothing of the run after its final
            assert all("thread_id" not in e for e in events)  # netra only
            # The agent state counts the message; the stats count the run.
            state = await c.request(2, type="get_agent_state")
            assert state["message_count"] == 1
            stats = await c.request(3, type="get_server_stats")
            assert stats["agent_runs"] == {"started": 1, "completed": 1, "active": 0}
            # A second message: run r-2; turning streaming off answers as before.
            await c.send(type="user_message", message_id="m2", content="again")
            await c.wait_type("ai_response", 2)
            assert finals(c.frames)[1]["run_id"] == "r-2" and progress(c.frames)[-1]["run_id"] == "r-2"
            off = await c.request(4, type="configure_session", agent_stream=None)
            assert off["agent_stream"] is None
            await c.send(type="user_message", message_id="m3", content="plain")
            third = (await c.wait_type("ai_response", 3))[2]
            assert set(third) == TODAY and len(progress(c.frames)) == 16
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_a_target_agent_names_the_run_agent():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "agents")
            await c.request(1, type="configure_agents", agents=["planner", "writer"])
            await configure(c, thinking_steps=0, tools=0, **FAST)
            await c.send(type="user_message", message_id="m1", content="x", target_agents=["writer", "planner"])
            await c.wait_type("ai_response")
            assert progress(c.frames)[0]["agent"] == "writer"
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_the_server_default_streams_for_a_client_that_cannot_configure():
    async def scenario():
        server = await started(processing_ms=0, agent_stream={"thinking_steps": 1, "tools": 0, **FAST},
                               without=["all"])
        try:
            c = await Client.open(server, "no-config")
            await c.send(type="user_message", message_id="m1", content="hi")
            await c.wait_type("ai_response")
            assert events_of(c.frames, "r-1") == ["agent_started", "agent_thinking"]
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_configure_session_refuses_a_bad_stream_naming_the_key_atomically():
    async def scenario():
        server = await started(processing_ms=3)
        try:
            c = await Client.open(server, "validate")
            cases = [
                ({"tools": 21}, "field 'agent_stream.tools' must be an integer 0..20, got 21"),
                ({"jitter": -0.1}, "field 'agent_stream.jitter' must be a number 0..1"),
                ({"colour": 1}, "unknown field 'agent_stream.colour' (known: thinking_steps, tools, first_event_ms"),
                ([1, 2], "field 'agent_stream' must be null or an object"),
            ]
            for i, (value, message) in enumerate(cases):
                err = await c.request(f"bad{i}", type="configure_session", processing_ms=0, agent_stream=value)
                assert err["type"] == "error" and err["code"] == "bad_field", err
                assert message in err["message"]
            qs = await c.request("qs", type="get_queue_state")
            assert qs["processing_ms"] == 3  # nothing of a refused configure_session applied
            await c.send(type="user_message", message_id="m1", content="x")
            (reply,) = await c.wait_type("ai_response")
            assert "run_id" not in reply and not progress(c.frames)
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_one_run_at_a_time_never_overlaps():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "serial")
            await configure(c, thinking_steps=2, tools=1, max_concurrent_runs=1, **FAST)
            await send_messages(c, 4)
            await c.wait_type("ai_response", 4)
            for n in range(2, 5):
                started_at = c.frames.index(progress(c.frames, f"r-{n}")[0])
                previous_final = c.frames.index(finals(c.frames, f"r-{n - 1}")[0])
                assert started_at > previous_final, n
            assert [f["message_id"] for f in finals(c.frames)] == ["m1", "m2", "m3", "m4"]
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_three_runs_at_a_time_overlap():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "parallel")
            await configure(c, thinking_steps=3, tools=1, max_concurrent_runs=3, first_event_ms=0, gap_ms=10, jitter=0)
            await send_messages(c, 3)
            await c.wait_type("ai_response", 3)
            first_final = c.frames.index(finals(c.frames)[0])
            starts = [c.frames.index(progress(c.frames, f"r-{n}")[0]) for n in (1, 2, 3)]
            assert all(s < first_final for s in starts)  # all three started before any ended
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_messages_waiting_for_a_run_slot_stay_in_the_bounded_queue():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "bounded")
            await c.request(1, type="configure_session", queue_capacity=2, processing_ms=0,
                            agent_stream={"max_concurrent_runs": 1, "first_event_ms": 0, "gap_ms": 300, "jitter": 0})
            await c.send(type="user_message", message_id="m1", content="long")
            await c.wait_type("agent_progress")  # run 1 holds the only slot for ~1 s
            await send_messages(c, 3, prefix="w")
            (full,) = await c.wait_type("queue_full")
            assert full["message_id"] == "w3"
            qs = await c.request(2, type="get_queue_state")
            assert qs["queue_size"] == 2 and qs["in_flight"] == 0  # waiting for a slot, not taken
            stats = await c.request(3, type="get_server_stats")
            assert stats["agent_runs"]["active"] == 1
            await c.close()
        finally:
            await server.stop()

    run(scenario(), 10)


def test_events_follow_the_user_to_another_connection_and_are_never_queued_offline():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            a = await Client.open(server, "mover")
            await configure(a, thinking_steps=3, tools=0, first_event_ms=0, gap_ms=300, jitter=0)
            await a.send(type="user_message", message_id="m1", content="x")
            await a.wait_type("agent_progress")
            b = await Client.open(server, "mover")
            await gone(server, a)  # the origin is gone: the rest goes to the newest readable connection
            (final,) = await b.wait_type("ai_response", timeout=5)
            seqs = [e["seq"] for e in progress(a.frames)] + [e["seq"] for e in progress(b.frames)]
            assert sorted(seqs) == [1, 2, 3, 4] and len(set(seqs)) == 4 and progress(b.frames)
            assert final["events"] == 4
            # Away during a run: its events are dropped, its final waits in the offline queue.
            await b.send(type="user_message", message_id="m2", content="y")
            await b.wait_type("agent_progress", 5)
            await gone(server, b)
            await quiet(server, 2)
            c = await Client.open(server, "mover")
            assert c.frames[0]["queued"] == 1
            (late,) = await c.wait_type("ai_response")
            assert late["message_id"] == "m2" and late["run_id"] == "r-2" and "delivery_id" in late
            assert not progress(c.frames)
            await c.close()
        finally:
            await server.stop()

    run(scenario(), 15)


def test_stop_cancels_runs_in_flight_cleanly():
    async def scenario():
        server = await started(processing_ms=0)
        c = await Client.open(server, "stopper")
        await configure(c, thinking_steps=5, first_event_ms=0, gap_ms=1000, jitter=0)
        await send_messages(c, 2)
        await c.wait_type("agent_progress", 2)
        assert server.runs.stats()["active"] == 2
        await server.stop()
        assert not server.runs.tasks and server.runs.stats() == {"started": 2, "completed": 0, "active": 0}
        await c.reader

    run(scenario())


def test_the_cli_flag_streams_every_users_runs():
    with cli_mock("--agent-stream", "thinking_steps=3,tools=0,first_event_ms=0,gap_ms=1",
                  "--processing-ms", "0") as (proc, line):
        url = line.rsplit(" ", 1)[1].strip()

        async def scenario():
            c = await Client.open(url, "cli-user")
            await c.send(type="user_message", message_id="m1", content="x")
            await c.wait_type("ai_response")
            configured = await c.request(1, type="configure_session")
            await c.close()
            return c.frames, configured

        frames, configured = run(scenario())
        assert events_of(frames, "r-1") == ["agent_started"] + ["agent_thinking"] * 3
        assert configured["agent_stream"]["thinking_steps"] == 3 and configured["agent_stream"]["tools"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    bad = subprocess.run([sys.executable, "-m", "apex_mock", "--agent-stream", "gap_ms=fast"], check=False,
                         capture_output=True, text=True, env=_env(), timeout=10)
    assert bad.returncode == 2
    assert bad.stderr == "apex-mock: --agent-stream: field 'agent_stream.gap_ms' must be a number, got 'fast'\n"


# --------------------------------------------------------------------------- netra over the wire


def test_netra_streaming_off_keeps_the_five_events():
    async def scenario():
        server = await netra_started(processing_ms=0)
        try:
            c = await Netra.connect(server, token("plain-netra"))
            await c.chat("hello", "m1", run_id="run-A")
            await c.wait_type("agent_completed")
            types = [f["type"] for f in c.frames if f.get("run_id") == "run-A"]
            assert types == ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_a_streamed_run_on_the_netra_wire():
    async def scenario():
        server = await netra_started(processing_ms=0,
                                     agent_stream={"thinking_steps": 2, "tools": 1, "chunks": 4, **FAST})
        try:
            c = await Netra.connect(server, token("stream-netra"))
            await c.chat("what is up", "m1", run_id="run-A", thread_id="th-9")
            (completed,) = await c.wait_type("agent_completed")
            run_frames = [f for f in c.frames if f.get("run_id") == "run-A"]
            assert [f["type"] for f in run_frames] == [
                "agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_thinking",
                "agent_response_chunk", "agent_response_chunk", "agent_response_chunk", "agent_response_chunk",
                "agent_completed"]
            for f in run_frames:
                assert (f["thread_id"], f["user_id"], f["agent_name"]) == ("th-9", "stream-netra", "apex_mock_agent")
                assert datetime.fromisoformat(f["timestamp"]).utcoffset() is not None
            progress_frames = run_frames[:-1]
            assert all("message_id" not in f and "message_id" not in f.get("data", {}) for f in progress_frames)
            started_, thinking, executing, done = progress_frames[:4]
            assert started_["data"] == {"status": "started", "message": "Processing your request"}
            assert thinking["data"]["reasoning"] == "Step 1: working out the answer"
            assert thinking["data"]["step_number"] == 1 and "progress_percentage" in thinking["data"]
            assert executing["tool_name"] == "apex_lookup_1" and executing["data"] == {"parameters": {}}
            assert (done["tool_name"], done["status"]) == ("apex_lookup_1", "success")
            assert "result" in done["data"] and "execution_time_ms" in done["data"] and "results" in done
            chunks = [f["data"] for f in progress_frames if f["type"] == "agent_response_chunk"]
            assert [d["chunk_index"] for d in chunks] == [0, 1, 2, 3]
            assert "".join(d["chunk"] for d in chunks) == completed["result"] == "Response to: what is up"
            assert completed["data"]["message_id"] == "m1" and completed["run_id"] == "run-A"
            assert len([f for f in c.frames if f["type"] == "agent_completed"]) == 1
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_a_plain_client_with_only_the_handshake_reads_a_stream_to_agent_completed():
    """The published platform client's shape: no configure_session (``--without all``), the
    server's --agent-stream default, a bare handshake and ``user_message {payload: ...}``."""

    async def scenario():
        server = await netra_started(processing_ms=0, without=["all"],
                                     agent_stream={"thinking_steps": 1, "tools": 1, "chunks": 2, **FAST})
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/ws",
                               subprotocols=[f"jwt.{token('published')}"]) as ws:
                seen: list[dict] = []

                async def until(kind: str) -> dict:
                    while True:
                        frame = orjson.loads(await ws.recv())
                        seen.append(frame)
                        if frame["type"] == kind:
                            return frame

                hs = await until("handshake_response")
                await ws.send(orjson.dumps({"type": "handshake_acknowledged", "thread_id": hs["thread_id"]}).decode())
                await until("handshake_complete")
                await ws.send(orjson.dumps({"type": "user_message", "payload": {
                    "content": "plain", "thread_id": "th-p", "run_id": "run-plain"}}).decode())
                completed = await until("agent_completed")
            types = [f["type"] for f in seen if f.get("run_id") == "run-plain"]
            assert types == ["agent_started", "agent_thinking", "tool_executing", "tool_completed",
                             "agent_response_chunk", "agent_response_chunk", "agent_completed"]
            assert completed["result"] == "Response to: plain" and completed["thread_id"] == "th-p"
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- the stream faults on the wire


async def faulted(fault: str, n_messages: int = 4, **stream):
    """A server with ``fault``, one user streaming ``n_messages`` runs (run #k is message m<k>); the
    client once every run has ended."""
    server = await started(fault, processing_ms=0)
    c = await Client.open(server, f"user-{fault.split('=')[0]}")
    await configure(c, **{"thinking_steps": 2, "tools": 1, "chunks": 2, **FAST, **stream})
    await send_messages(c, n_messages)
    await quiet(server, n_messages)
    await c.request("sync", type="get_agent_state")  # everything sent before it was read
    return server, c


CLEAN = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_thinking",
         "answer_chunk", "answer_chunk"]


def test_fault_truncate_stream_ends_the_named_runs_without_a_final():
    async def scenario():
        server, c = await faulted("truncate_stream=2")
        try:
            for n in (1, 3):
                assert events_of(c.frames, f"r-{n}") == CLEAN and len(finals(c.frames, f"r-{n}")) == 1
            for n in (2, 4):
                assert events_of(c.frames, f"r-{n}") == ["agent_started", "agent_thinking"]
                assert not finals(c.frames, f"r-{n}")
            assert sorted(f["message_id"] for f in finals(c.frames)) == ["m1", "m3"]
            assert c.frames[-1]["message_count"] == 4  # processed all the same
            stats = await c.request("st", type="get_server_stats")
            assert stats["agent_runs"] == {"started": 4, "completed": 2, "active": 0}
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_duplicate_final_sends_the_named_finals_twice_back_to_back():
    async def scenario():
        server, c = await faulted("duplicate_final=2")
        try:
            for n in (1, 3):
                assert len(finals(c.frames, f"r-{n}")) == 1 and events_of(c.frames, f"r-{n}") == CLEAN
            for n in (2, 4):
                twice = [i for i, raw in enumerate(c.raw) if f'"run_id":"r-{n}"' in raw and '"ai_response"' in raw]
                assert len(twice) == 2 and twice[1] == twice[0] + 1 and c.raw[twice[0]] == c.raw[twice[1]]
                assert events_of(c.frames, f"r-{n}") == CLEAN
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_event_after_final_sends_one_more_thinking_after_the_named_finals():
    async def scenario():
        server, c = await faulted("event_after_final=2")
        try:
            for n in (1, 3):
                assert events_of(c.frames, f"r-{n}") == CLEAN
            for n in (2, 4):
                final_at = c.frames.index(finals(c.frames, f"r-{n}")[0])
                after = [f for f in c.frames[final_at:] if f.get("run_id") == f"r-{n}" and f["type"] == "agent_progress"]
                assert [(f["event"], f["seq"]) for f in after] == [("agent_thinking", 8)]
                assert events_of(c.frames, f"r-{n}") == CLEAN + ["agent_thinking"]
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_missing_started_drops_agent_started_of_the_named_runs():
    async def scenario():
        server, c = await faulted("missing_started=2")
        try:
            for n in (1, 3):
                assert events_of(c.frames, f"r-{n}") == CLEAN
            for n in (2, 4):
                events = progress(c.frames, f"r-{n}")
                assert [e["event"] for e in events] == CLEAN[1:]
                assert [e["seq"] for e in events] == list(range(1, len(CLEAN)))
                assert finals(c.frames, f"r-{n}")[0]["events"] == len(CLEAN) - 1
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_unpaired_tool_drops_the_first_tool_executing_of_the_named_runs():
    async def scenario():
        server, c = await faulted("unpaired_tool=2", tools=2)
        try:
            full = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_thinking",
                    "tool_executing", "tool_completed", "answer_chunk", "answer_chunk"]
            for n in (1, 3):
                assert events_of(c.frames, f"r-{n}") == full
            for n in (2, 4):
                events = progress(c.frames, f"r-{n}")
                assert [e["event"] for e in events] == full[:2] + full[3:]
                tools = [(e["event"], e["tool_name"]) for e in events if "tool_name" in e]
                assert tools == [("tool_completed", "apex_lookup_1"), ("tool_executing", "apex_lookup_2"),
                                 ("tool_completed", "apex_lookup_2")]
                assert len(finals(c.frames, f"r-{n}")) == 1
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_stall_stream_holds_the_second_event_of_the_named_runs():
    async def scenario():
        server, c = await faulted("stall_stream=2", n_messages=2)
        try:
            # Run 2 started with run 1 (both ~10 ms long) but sent its second event only after run 1 ended.
            r2 = progress(c.frames, "r-2")
            assert [e["event"] for e in r2] == CLEAN and len(finals(c.frames, "r-2")) == 1
            first_final = c.frames.index(finals(c.frames, "r-1")[0])
            assert c.frames.index(r2[0]) < first_final < c.frames.index(r2[1])
            await c.close()
        finally:
            await server.stop()

    run(scenario(), 15)


def test_fault_slow_first_event_delays_every_runs_first_event():
    async def scenario():
        server = await started("slow_first_event=1500", processing_ms=0)
        try:
            streamer = await Client.open(server, "slow-first")
            await configure(streamer, thinking_steps=1, tools=0, **FAST)
            plain = await Client.open(server, "plain-user")
            await plain.request(1, type="configure_session", processing_ms=300)
            await streamer.send(type="user_message", message_id="s1", content="x")
            await plain.send(type="user_message", message_id="p1", content="y")
            await plain.wait_type("ai_response")  # due ~300 ms after it was sent
            assert not progress(streamer.frames)  # without the fault the whole run ended at ~4 ms
            await streamer.wait_type("ai_response", timeout=5)
            assert events_of(streamer.frames, "r-1") == ["agent_started", "agent_thinking"]
            await streamer.close()
            await plain.close()
        finally:
            await server.stop()

    run(scenario())


def test_fault_cross_talk_copies_the_events_of_every_nth_run_to_another_user():
    async def scenario():
        server = await started("cross_talk=2", processing_ms=0)
        try:
            bystander = await Client.open(server, "bystander")
            owner = await Client.open(server, "owner")
            await configure(owner, **FAST)
            await send_messages(owner, 4)
            await quiet(server, 4)
            await bystander.request("sync", type="get_agent_state")
            await owner.request("sync", type="get_agent_state")
            copied = progress(bystander.frames)
            assert {e["run_id"] for e in copied} == {"r-2", "r-4"}
            for n in (2, 4):
                assert progress(bystander.frames, f"r-{n}") == progress(owner.frames, f"r-{n}")  # each, identical
            for n in (1, 2, 3, 4):  # the owner still gets all of its own
                assert [e["seq"] for e in progress(owner.frames, f"r-{n}")] == [1, 2, 3, 4, 5]
            # cross_talk on ai_responses is unchanged: the 2nd and 4th dispatched were copied too.
            assert [f["message_id"] for f in bystander.of_type("ai_response")] == ["m2", "m4"]
            await bystander.close()
            await owner.close()
        finally:
            await server.stop()

    run(scenario())


def test_stream_faults_leave_unstreamed_replies_alone():
    async def scenario():
        faults = [f"{name}=1" for name in F.STREAM_FAULTS]
        server = await started(*faults, processing_ms=0)
        try:
            c = await Client.open(server, "unstreamed")
            await send_messages(c, 3)
            replies = await c.wait_type("ai_response", 3)
            await c.request("sync", type="get_agent_state")
            assert len(finals(c.frames)) == 3 and all(set(r) == TODAY for r in replies)
            assert not progress(c.frames) and server.runs.started == 0
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_the_stream_faults_are_registered_with_their_parameters():
    defaults = {name: F.parse_faults([name]).param(name) for name in F.STREAM_FAULTS}
    assert defaults == {"stall_stream": 5, "truncate_stream": 5, "duplicate_final": 5, "event_after_final": 5,
                        "missing_started": 5, "unpaired_tool": 5, "slow_first_event": 1200}
    assert F.parse_faults(["slow_first_event=250.5"]).param(F.SLOW_FIRST_EVENT) == 250.5
    with pytest.raises(F.FaultValueError, match="positive integer"):
        F.parse_faults(["truncate_stream=1.5"])
    assert "every N-th run" in F.FAULTS[F.CROSS_TALK].description


def test_netra_cross_talk_copies_name_the_owners_run_and_user():
    async def scenario():
        server = await netra_started("cross_talk=1", processing_ms=0,
                                     agent_stream={"thinking_steps": 1, "tools": 0, **FAST})
        try:
            bystander = await Netra.connect(server, token("bystander"))
            owner = await Netra.connect(server, token("owner"))
            await owner.chat("secret", "m1", run_id="run-owner", thread_id="th-owner")
            await owner.wait_type("agent_completed")
            copies = await bystander.wait_type("agent_thinking")
            assert [f["type"] for f in bystander.frames if f.get("run_id") == "run-owner"][:2] == \
                ["agent_started", "agent_thinking"]
            assert (copies[0]["run_id"], copies[0]["thread_id"], copies[0]["user_id"]) == \
                ("run-owner", "th-owner", "owner")
            await bystander.close()
            await owner.close()
        finally:
            await server.stop()

    run(scenario())


def test_a_worker_waiting_for_a_slot_sees_new_settings_at_once():
    async def scenario():
        server = await started(processing_ms=0)
        try:
            c = await Client.open(server, "reconfigure")
            await configure(c, thinking_steps=1, tools=0, max_concurrent_runs=1, first_event_ms=0, gap_ms=2000, jitter=0)
            await send_messages(c, 2)
            await c.wait_type("agent_progress")  # run 1 holds the only slot for 4 s; m2 waits in the queue
            await c.request("more", type="configure_session", agent_stream={
                "thinking_steps": 1, "tools": 0, "max_concurrent_runs": 2, "first_event_ms": 0, "gap_ms": 1, "jitter": 0})
            (final,) = await c.wait_type("ai_response", timeout=2)  # m2's run, long before run 1 ends
            assert (final["message_id"], final["run_id"]) == ("m2", "r-2")
            await c.close()
        finally:
            await server.stop()

    run(scenario())
