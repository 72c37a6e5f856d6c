"""apex_mock's throughput path and its parametrised faults, over real WebSockets (127.0.0.1, port 0).

No sleeps wait for results (tests poll for conditions with timeouts), and the only timing
assertions are lower bounds: a server with a cap cannot be faster than its cap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time

import pytest
from apex_mock import MockServer
from apex_mock import faults as F
from apex_mock.cli import build_parser
from test_mock_server import Client, _env, cli_mock, poll, run, started


async def burst(c: Client, n: int, start: int = 0, kind: str = "throughput_test", prefix: str = "t") -> None:
    for i in range(start, start + n):
        await c.send(type=kind, message_id=f"{prefix}{i}", sequence_id=i)


async def stats(c: Client, rid) -> dict:
    s = await c.request(rid, type="get_server_stats")
    assert s["type"] == "server_stats", s
    return s


# --------------------------------------------------------------------------- throughput_processing_ms


def test_throughput_processing_ms_is_a_setting_echoed_and_defaulted():
    async def scenario():
        server = await started(throughput_processing_ms=0.25)
        try:
            c = await Client.open(server)
            r = await c.request(1, type="configure_session")
            assert r["throughput_processing_ms"] == 0.25 and r["processing_ms"] == 10
            r = await c.request(2, type="configure_session", throughput_processing_ms=0.5)
            assert r["type"] == "session_configured" and r["throughput_processing_ms"] == 0.5
            assert (await c.request(3, type="get_queue_state"))["throughput_processing_ms"] == 0.5
            r = await c.request(4, type="configure_session", throughput_processing_ms=2)
            assert r["throughput_processing_ms"] == 2  # ints accepted
            err = await c.request(5, type="configure_session", throughput_processing_ms=-1)
            assert err["code"] == "bad_field" and "throughput_processing_ms" in err["message"]
            assert "a number 0..60000" in err["message"]
            await c.close()
        finally:
            await server.stop()

    run(scenario())
    with pytest.raises(ValueError, match="throughput_processing_ms must be a number 0..60000"):
        MockServer(throughput_processing_ms=-0.5)


def test_each_kind_takes_its_own_processing_time():
    """throughput_test reads throughput_processing_ms, user_message reads processing_ms
    (checked by order and counts: the slow kind is still in flight, never by a timer)."""

    async def scenario():
        server = await started()
        try:
            # slow chat, fast throughput: 20 throughput replies, then the chat message stays in
            # flight and the throughput messages behind it wait (one FIFO queue per user)
            c = await Client.open(server, "slow-chat")
            await c.request(0, type="configure_session", processing_ms=60_000, throughput_processing_ms=0)
            await burst(c, 20)
            await c.send(type="user_message", message_id="chat", sequence_id=20)
            await burst(c, 5, start=21)
            got = await c.wait_type("throughput_response", 20)
            assert [r["sequence_id"] for r in got] == list(range(20))
            qs = await c.request(1, type="get_queue_state")
            assert (qs["in_flight"], qs["processed_total"], qs["queue_size"]) == (1, 20, 5)
            assert not c.of_type("ai_response")
            await c.close()

            # fast chat, slow throughput: the chat message is answered, the throughput one is not
            d = await Client.open(server, "slow-throughput")
            await d.request(0, type="configure_session", processing_ms=0, throughput_processing_ms=60_000)
            await d.send(type="user_message", message_id="chat", sequence_id=0)
            await d.send(type="throughput_test", message_id="t1", sequence_id=1)
            await d.send(type="user_message", message_id="chat2", sequence_id=2)
            (answer,) = await d.wait_type("ai_response")
            assert answer["message_id"] == "chat"
            qs = await d.request(1, type="get_queue_state")
            assert (qs["in_flight"], qs["processed_total"], qs["queue_size"]) == (1, 1, 1)
            assert not d.of_type("throughput_response")
            await d.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- the lean worker


def test_lean_worker_answers_a_pipelined_burst_in_order_exactly_once():
    n = 5000

    async def scenario():
        server = await started()  # default queue_capacity 500, throughput_processing_ms 0
        try:
            c = await Client.open(server, "lean")
            before = await stats(c, "s0")
            await burst(c, n)
            await poll(lambda: len(c.frames) >= n + 2, timeout=20, what=f"{n} answers")
            answers = c.frames[2:]
            # Every frame answered once, in order; the reader yields to the worker often
            # enough that a burst with no processing time never fills the default queue.
            assert [f["type"] for f in answers] == ["throughput_response"] * n
            assert [f["sequence_id"] for f in answers] == list(range(n))
            after = await stats(c, "s1")
            assert after["processed_total"] == after["messages_total"] == n
            assert isinstance(after["cpu_seconds"], float)
            assert after["cpu_seconds"] >= before["cpu_seconds"] >= 0
            qs = await c.request("q", type="get_queue_state")
            assert qs["admitted_total"] == qs["processed_total"] == n and qs["queue_full_total"] == 0
            assert qs["max_queue_size_seen"] <= qs["capacity"]
            assert len(c.frames) == n + 4  # nothing more came
            await c.close()
        finally:
            await server.stop()

    run(scenario(), timeout=30)


def test_throughput_path_keeps_real_backpressure():
    async def scenario():
        server = await started()
        try:
            c = await Client.open(server)
            await c.request(0, type="configure_session", throughput_processing_ms=5, queue_capacity=10)
            await burst(c, 100)
            await poll(lambda: len(c.of_type("throughput_response")) + len(c.of_type("queue_full")) >= 100,
                       timeout=10, what="100 answers")
            full = c.of_type("queue_full")
            done = c.of_type("throughput_response")
            assert full and done and len(full) + len(done) == 100
            assert {f["capacity"] for f in full} == {10}
            assert all(f["retry_after_ms"] >= 1 for f in full)
            assert [r["sequence_id"] for r in done] == sorted(r["sequence_id"] for r in done)
            qs = await c.request(1, type="get_queue_state")
            assert qs["queue_full_total"] == len(full) and qs["processed_total"] == len(done)
            assert qs["max_queue_size_seen"] <= qs["capacity"] + qs["headroom"]
            await c.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- throttle


def test_fault_throttle_caps_the_whole_server_and_keeps_order():
    async def scenario():
        server = await started("throttle=200", processing_ms=0)
        try:
            a = await Client.open(server, "throttled-a")
            b = await Client.open(server, "throttled-b")
            assert (await stats(a, "s"))["faults"] == ["throttle=200"]
            t0 = time.monotonic()
            # 200 messages, two users, both kinds: the cap is server-wide
            for i in range(50):
                await a.send(type="user_message", message_id=f"m{i}", sequence_id=2 * i)
                await a.send(type="throughput_test", message_id=f"t{i}", sequence_id=2 * i + 1)
            await burst(b, 100)
            got_a = await a.wait_type("ai_response", 50, timeout=10)
            got_b = await b.wait_type("throughput_response", 100, timeout=10)
            elapsed = time.monotonic() - t0
            # 200 completions need 199 intervals of 1/200 s: the server cannot be faster
            assert elapsed >= 0.9, elapsed
            answered_a = [f["sequence_id"] for f in a.frames[1:] if f["type"] != "server_stats"]
            assert answered_a == list(range(100))
            assert [r["sequence_id"] for r in got_b] == list(range(100))
            assert len(got_a) == 50 and not a.of_type("queue_full") and not b.of_type("queue_full")
            # queues grow under the cap, so a small queue overflows
            c = await Client.open(server, "throttled-c")
            await c.request(0, type="configure_session", queue_capacity=5)
            await burst(c, 30)
            await poll(lambda: len(c.of_type("throughput_response")) + len(c.of_type("queue_full")) >= 30,
                       what="30 answers")
            assert c.of_type("queue_full")
            for client in (a, b, c):
                await client.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- leak


def test_fault_leak_keeps_touched_memory_after_the_user_leaves():
    async def scenario():
        server = await started("leak=1000000")
        try:
            c = await Client.open(server, "leaky")
            before = await stats(c, "s0")
            assert before["faults"] == ["leak=1000000"]
            await c.request(0, type="configure_session", processing_ms=0)
            for i in range(25):
                await c.send(type="user_message", message_id=f"m{i}")
            await burst(c, 25)
            await c.wait_type("ai_response", 25)
            await c.wait_type("throughput_response", 25)
            after = await stats(c, "s1")
            assert after["processed_total"] == 50
            # The memory kept is read from the server, not from RSS: this server runs inside the
            # test process, whose heap earlier tests may have left with free pages to reuse.
            assert sum(len(block) for block in server._leaked) == 50 * 1_000_000
            await c.close()
            other = await Client.open(server, "someone-else")
            later = await stats(other, "s2")
            assert later["users"] == 1 and sum(len(block) for block in server._leaked) == 50 * 1_000_000
            await other.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- disconnect_every


async def closed_by_server(c: Client) -> None:
    await asyncio.wait_for(asyncio.shield(c.reader), 5)
    assert c.ws.close_code == 1006  # abnormal closure: no close frame came
    assert c.ws.protocol.close_rcvd is None


def test_fault_disconnect_every_aborts_each_connection_after_n_frames(caplog):
    caplog.set_level(logging.INFO, logger="apex_mock")

    async def scenario():
        server = await started("disconnect_every=5", processing_ms=0)
        try:
            c = await Client.open(server, "fragile")
            # frames 1-4, of any kind (an invalid one included), are answered
            assert (await c.request(1, type="get_queue_state"))["type"] == "queue_state"
            await c.ws.send("not json")
            await c.wait_type("error")
            assert (await c.request(3, type="get_server_stats"))["faults"] == ["disconnect_every=5"]
            assert (await c.request(4, type="get_agent_state"))["type"] == "agent_state"
            # frame 5 is handled (the message is admitted and processed), then the TCP
            # connection is aborted: no reply on it
            await c.send(type="user_message", message_id="m5", sequence_id=5)
            await closed_by_server(c)
            assert [f["type"] for f in c.frames] == [
                "session_started", "queue_state", "error", "server_stats", "agent_state"]

            # The reply had nowhere to go: it waits offline (5.1). A new connection of the
            # same user gets it, and again lives 5 frames (an ack is a frame too).
            d = await Client.open(server, "fragile")
            assert d.frames[0]["queued"] == 1
            (delivery,) = await d.wait_type("ai_response")
            assert delivery["message_id"] == "m5" and delivery["delivery_id"]
            for rid in (6, 7, 8, 9):
                assert (await d.request(rid, type="get_queue_state"))["request_id"] == rid
            await d.send(type="ack", delivery_ids=[delivery["delivery_id"]])
            await closed_by_server(d)

            e = await Client.open(server, "fragile")
            assert e.frames[0]["queued"] == 0  # the 5th frame (the ack) was handled before the abort
            qs = await e.request(10, type="get_queue_state")
            assert qs["processed_total"] == 1 and qs["offline_delivered_total"] == 1
            await e.close()
        finally:
            await server.stop()

    run(scenario())
    events = [json.loads(r.getMessage()) for r in caplog.records if "fault_disconnect" in r.getMessage()]
    assert [ev["frames"] for ev in events] == [5, 5]


def test_fault_disconnect_every_handles_nothing_after_the_nth_frame():
    async def scenario():
        server = await started("disconnect_every=3", processing_ms=0)
        try:
            c = await Client.open(server, "pipelined")
            for i in range(8):  # pipelined: frames 4-8 may already be buffered at the abort
                await c.send(type="user_message", message_id=f"m{i}", sequence_id=i)
            await closed_by_server(c)
            d = await Client.open(server, "pipelined")
            assert d.frames[0]["queued"] == 3  # the replies to frames 1-3 waited offline
            qs = await d.request(1, type="get_queue_state")
            assert qs["admitted_total"] == qs["processed_total"] == 3
            stats_ = await d.request(2, type="get_server_stats")
            assert stats_["frames_received"] == 3 + 2  # frames 4-8 of the first connection: never
            await d.send(type="ack", delivery_ids=[])
            await closed_by_server(d)  # its 3rd frame
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- sticky_overload


def test_fault_sticky_overload_caps_the_whole_server_for_good_after_a_queue_full():
    n = 200

    async def scenario():
        server = await started(F.STICKY_OVERLOAD)
        try:
            c = await Client.open(server, "sticky")
            core = server.users[c.user_id].core
            await c.request(0, type="configure_session", throughput_processing_ms=1000, queue_capacity=1)
            await c.send(type="throughput_test", message_id="t0", sequence_id=0)
            await poll(lambda: core.in_flight is not None, what="t0 in flight")
            await burst(c, 2, start=1)  # t1 waits, t2 is refused
            (full,) = await c.wait_type("queue_full")
            assert full["sequence_id"] == 2
            await c.close()
            # The overload is over, and a new user with nothing queued sends n messages, yet the
            # whole server now completes at most STICKY_RATE per second.
            fresh = await Client.open(server, "fresh")
            t0 = time.monotonic()
            await burst(fresh, n)
            got = await fresh.wait_type("throughput_response", n, timeout=10)
            elapsed = time.monotonic() - t0
            # n / STICKY_RATE seconds, less the throttle's catch-up allowance: a lower bound only
            assert elapsed >= (n - 1) / F.STICKY_RATE - F.THROTTLE_CATCH_UP_S - 0.01, elapsed
            assert [r["sequence_id"] for r in got] == list(range(n))
            await fresh.close()
        finally:
            await server.stop()

    run(scenario())


# --------------------------------------------------------------------------- parameters: server and CLI


def test_mock_server_validates_fault_parameters():
    server = MockServer(["reorder,throttle=2000", "leak"])
    assert server.faults == {"reorder", "throttle", "leak"}
    assert server.faults.labels() == ["leak=4096", "reorder", "throttle=2000"]
    for spec, message in (
        ("throttle=abc", "fault 'throttle' takes a positive number (messages per second), got 'abc'"),
        ("reorder=3", "fault 'reorder' takes no value"),
        ("throttle=0", "got '0'"),
    ):
        with pytest.raises(F.FaultValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            MockServer([spec])
    with pytest.raises(F.UnknownFault, match="nosuch"):
        MockServer(["nosuch=1"])


@pytest.mark.parametrize(
    "spec,message",
    [
        ("throttle=abc", "apex-mock: fault 'throttle' takes a positive number (messages per second), got 'abc' "
                         "(apex-mock --list-faults lists every fault)\n"),
        ("reorder=3", "apex-mock: fault 'reorder' takes no value, got 'reorder=3' "
                      "(apex-mock --list-faults lists every fault)\n"),
        ("throttle=0", "apex-mock: fault 'throttle' takes a positive number (messages per second), got '0' "
                       "(apex-mock --list-faults lists every fault)\n"),
        ("nosuch=1", "apex-mock: Unknown mock fault 'nosuch'; the faults are: reorder, duplicate_response, "),
        ("reorderr", "apex-mock: Unknown mock fault 'reorderr'; did you mean 'reorder'? "
                     "(apex-mock --list-faults lists every fault)\n"),
    ],
)
def test_cli_rejects_bad_fault_values_with_exit_2_in_one_line(spec, message):
    proc = subprocess.run(
        [sys.executable, "-m", "apex_mock", "--port", "0", "--fault", spec],
        check=False, capture_output=True, text=True, env=_env(), timeout=10,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(message)
    assert proc.stderr.count("\n") == 1  # one line: no catalogue of descriptions
    assert proc.stdout == ""


def test_cli_lists_faults():
    proc = subprocess.run([sys.executable, "-m", "apex_mock", "--list-faults"],
                          check=False, capture_output=True, text=True, env=_env(), timeout=10)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == len(F.FAULTS)
    assert lines[0].startswith("reorder ") and any(line.startswith("throttle[=RATE] ") for line in lines)


def test_unknown_fault_message_is_one_line_with_a_suggestion():
    assert F.unknown_fault_message(["reorderr"]) == (
        "Unknown mock fault 'reorderr'; did you mean 'reorder'? (apex-mock --list-faults lists every fault)"
    )
    assert F.unknown_fault_message(["reorderr", "slo"]) == (
        "Unknown mock faults 'reorderr' (did you mean 'reorder'?), 'slo' (did you mean 'slow'?) "
        "(apex-mock --list-faults lists every fault)"
    )
    no_match = F.unknown_fault_message(["zzz"])
    assert no_match == f"Unknown mock fault 'zzz'; the faults are: {', '.join(F.FAULTS)}"
    assert "\n" not in no_match and "per user" not in no_match  # names only, no descriptions
    with pytest.raises(F.UnknownFault) as exc:
        F.parse_faults(["reorder", "reorderr"])
    assert exc.value.names == ["reorderr"] and str(exc.value) == F.unknown_fault_message(["reorderr"])


def test_start_mock_reports_an_unknown_fault_in_one_line():
    from MessagingLibrary.engine.mock_process import MockStartError, exit_message, start_mock

    with pytest.raises(MockStartError) as exc:
        start_mock(faults=["reorderr"], timeout=10)
    assert str(exc.value) == F.unknown_fault_message(["reorderr"])
    assert MockStartError.ROBOT_SUPPRESS_NAME is True  # Robot shows the line alone
    assert exit_message(2, "usage: apex-mock ...\napex-mock: error: argument --port: x\n") == (
        "apex-mock: error: argument --port: x"
    )
    assert exit_message(1, "apex-mock: cannot listen\n") == (
        "apex-mock exited with code 1 before listening. Output: apex-mock: cannot listen"
    )


def test_cli_help_lists_the_parameter_forms_and_the_new_setting():
    text = build_parser().format_help()
    for usage in ("throttle[=RATE]", "leak[=BYTES]", "disconnect_every[=N]", "sticky_overload",
                  "NAME[=VALUE]", "--throughput-processing-ms"):
        assert usage in text


@pytest.mark.parametrize("value,message", [("-1", "must be a number in 0..60000"),
                                           ("60001", "must be a number in 0..60000"),
                                           ("nan", "must be a number in 0..60000"),
                                           ("abc", "not a number")])
def test_cli_rejects_bad_throughput_processing_ms(value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--throughput-processing-ms", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--throughput-processing-ms" in err and message in err


def test_cli_fault_parameters_and_throughput_setting_reach_the_server(tmp_path):
    log_file = tmp_path / "mock.log"
    with cli_mock(
        "--no-uvloop", "--log-file", str(log_file), "--fault", "reorder,throttle=1500.5",
        "--fault", "disconnect_every", "--throughput-processing-ms", "0.5",
    ) as (proc, line):
        url = line.rsplit(" ", 1)[1].strip()

        async def scenario():
            c = await Client.open(url, "cli-user")
            configured = await c.request(1, type="configure_session")
            server_stats = await c.request(2, type="get_server_stats")
            await c.close()
            return configured, server_stats

        configured, server_stats = run(scenario())
        assert configured["throughput_processing_ms"] == 0.5
        assert server_stats["faults"] == ["disconnect_every=100", "reorder", "throttle=1500.5"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        started_event = next(
            json.loads(entry.split(" ", 3)[3]) for entry in log_file.read_text().splitlines()
            if '"event":"server_started"' in entry
        )
        assert started_event["faults"] == ["disconnect_every=100", "reorder", "throttle=1500.5"]
        assert started_event["defaults"]["throughput_processing_ms"] == 0.5
