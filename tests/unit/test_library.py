"""MessagingLibrary's keywords called from Python against a real apex-mock process.

These pin the behaviours a QA engineer relies on: specific errors for refused connections and
bad tokens, replies routed by request_id, bad frames answered with errors on a connection that
stays usable, waits that end at their timeout, and checks that fail naming messages.
"""

import asyncio
import socket
import threading
import time
from datetime import timedelta

import pytest
from fakes import Keywords
from MessagingLibrary import MessagingLibrary
from robot.api.types import Secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_named(lib):
    url = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(AssertionError, match="connection refused"):
        lib.connect("nowhere", url=url, timeout=timedelta(seconds=2))


def test_missing_and_malformed_tokens_get_http_401(lib):
    with pytest.raises(AssertionError, match="HTTP 401.*Check the token"):
        lib.connect("anonymous", authenticate=False)
    with pytest.raises(AssertionError, match="HTTP 401"):
        lib.connect("bad", token=Secret("has spaces and ünïcode"))


def test_tokens_never_appear_in_errors_or_frames(lib):
    lib.connect("main")
    info = lib.get_session_info()
    assert info["user_id"].startswith("user-") and "unit" not in info["user_id"]


def test_state_queries_never_steal_chat_replies(lib):
    lib.connect("main")
    lib.configure_session(processing_ms=50)
    lib.send_numbered_messages(5, timedelta(0))
    for _ in range(5):
        lib.get_agent_state()  # interleaved with replies still being produced
    assert lib.wait_for_responses(5) == 5
    lib.responses_should_be_in_send_order()
    assert lib.get_agent_state("message_count") == 5


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", "bad_json"),
        ("[1, 2, 3]", "bad_json"),
        ('{"type": "no_such_type"}', "unknown_type"),
        ('{"type": "user_message", "content": "no id"}', "missing_field"),
        ('{"type": "user_message", "message_id": 7}', "bad_field"),
    ],
)
def test_bad_frames_get_an_error_and_the_connection_stays_usable(lib, frame, code):
    lib.connect("main")
    lib.send_raw_frame(frame)
    assert lib.wait_for_responses(1, "error") == 1
    assert lib.get_responses("error")[0]["code"] == code
    lib.send_message("still here", "after-error")
    lib.wait_for_responses(1)
    lib.connection_should_be_open()


def test_wait_ends_at_its_timeout_with_a_specific_message(lib):
    lib.connect("main")
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"Timed out after 0.5 s waiting for 3 ai_response \(got 0\)"):
        lib.wait_for_responses(3, timeout=timedelta(milliseconds=500))
    assert time.monotonic() - started < 3


def test_server_closing_mid_wait_is_reported_with_its_close_code(lib):
    lib.connect("main")
    lib.send_raw_frame("x" * (2**20 + 10))  # over 1 MiB: the server closes with 1009
    with pytest.raises(AssertionError, match="closed by the server or the network, code 1009"):
        lib.wait_for_responses(1, timeout=timedelta(seconds=5))
    assert lib.get_disconnection_count() == 1


def test_settle_names_unanswered_messages(lib):
    lib.connect("main")
    lib.configure_session(processing_ms=2000)
    lib.send_numbered_messages(2, timedelta(0))
    with pytest.raises(AssertionError, match=r"got no reply \(lost or late\): seq-msg-(0, seq-msg-)?1"):
        lib.wait_until_messages_are_settled(timedelta(milliseconds=300))
    assert lib.wait_until_messages_are_settled(timedelta(milliseconds=300), must_settle=False) >= 1


def test_measuring_keywords_assert_with_operators_and_time_strings(lib):
    from assertionengine import AssertionOperator as Op

    lib.connect("main")
    lib.send_numbered_messages(3, timedelta(milliseconds=5))
    lib.wait_until_messages_are_settled()
    assert lib.get_delivery_ratio(Op[">="], "1") == 1.0
    assert lib.get_response_time(lib_statistic("p95"), Op["<"], "2 s") < 2
    with pytest.raises(AssertionError, match=r"response time max was .* s, expected < 0.0001 s"):
        lib.get_response_time(lib_statistic("max"), Op["<"], "0.1 ms")
    with pytest.raises(AssertionError, match="agent_state.message_count was 3, expected == 4"):
        lib.get_agent_state("message_count", Op["=="], "4")
    with pytest.raises(AssertionError, match="agent_state has no field 'nope'"):
        lib.get_agent_state("nope")


def test_reconnect_comes_back_as_the_same_user(lib):
    lib.connect("main")
    first = lib.get_session_info()["user_id"]
    lib.drop_connection()
    assert lib.reconnect() < 5
    assert lib.get_session_info()["user_id"] == first
    lib.connect("second", same_user_as="main")
    assert lib.get_session_info("second")["user_id"] == first


def test_bad_keyword_input_names_the_problem(lib):
    lib.connect("main")
    with pytest.raises(ValueError, match="count must be at least 1"):
        lib.send_numbered_messages(0)
    with pytest.raises(ValueError, match="Bad template 'id-{n}'"):
        lib.send_numbered_messages(1, message_id="id-{n}")
    with pytest.raises(ValueError, match="unknown field"):
        lib.send_messages([{"content": "x", "colour": "red"}])
    with pytest.raises(RuntimeError, match="No connection with alias 'ghost'"):
        lib.disconnect("ghost")
    with pytest.raises(ValueError, match="must start with ws://"):
        lib.configure_target("http://example.invalid/ws", Secret("t"))


def lib_statistic(name):
    from MessagingLibrary.keywords.checks import Statistic

    return Statistic(name)


# -- offline queue keywords ------------------------------------------------------------------


def test_push_labels_with_a_bad_priority_are_refused_naming_it(lib):
    lib.connect("alice")
    with pytest.raises(ValueError, match="Unknown priority 'urgent' in 'X:urgent'"):
        lib.push_messages("alice", "X:urgent")


def test_push_message_keeps_a_sentence_as_one_message(lib):
    lib.connect("alice")
    result = lib.push_message("alice", "Your report is ready:high")
    assert result["status"] == "delivered"
    deliveries = lib.wait_for_queued_deliveries("alice", count=1)
    assert [(d["label"], d["priority"]) for d in deliveries] == [("Your report is ready", "high")]


def test_pushing_needs_an_admin_token_and_names_it(mock):
    library = MessagingLibrary(timeout=timedelta(seconds=5))
    kw = Keywords(library)
    kw.configure_target(mock.url, Secret("unit"))
    try:
        kw.connect("alice")
        with pytest.raises(RuntimeError, match=r"no admin token is set \(APEX_ADMIN_TOKEN\)"):
            kw.push_messages("alice", "N1")
    finally:
        library._close()


def test_pushes_deliveries_and_accounting_round_trip(lib):
    lib.connect("alice")
    lib.disconnect("alice")
    results = lib.push_messages("alice", "N1 H1:high", "L1:low")
    assert [r["status"] for r in results] == ["queued"] * 3
    seconds_taken = lib.reconnect("alice")
    assert 0 < seconds_taken < 5
    deliveries = lib.wait_for_queued_deliveries("alice")  # count announced by session_started
    assert [d["label"] for d in deliveries] == ["H1", "N1", "L1"]
    assert all(d["delivery_id"] and d["redelivered"] is False for d in deliveries)
    lib.delivered_messages_should_be("H1 N1 L1", connection="alice")
    assert lib.deliveries_should_follow_priority_order("alice") == 3
    counts = lib.offline_messages_should_be_accounted_for("alice")
    assert counts == {"pushed": 3, "delivered": 3, "dropped": 0, "rejected": 0, "expired": 0, "unaccounted": 0}
    assert lib.get_queue_state("offline_unacked", connection="alice") == 0


def test_waiting_for_deliveries_that_never_come_names_what_is_missing(lib):
    lib.connect("alice")
    lib.disconnect("alice")
    lib.push_messages("alice", "N1")
    lib.reconnect("alice")
    lib.wait_for_queued_deliveries("alice", count=1)
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"waiting for 2 queued deliveries \(1 arrived: N1; session_started announced 1\)"):
        lib.wait_for_queued_deliveries("alice", count=2, timeout=timedelta(milliseconds=300))
    assert time.monotonic() - started < 3


def test_redelivery_check_refuses_when_nothing_was_left_unacknowledged(lib):
    lib.connect("alice")
    lib.disconnect("alice")
    lib.push_messages("alice", "N1")
    lib.reconnect("alice")
    lib.wait_for_queued_deliveries("alice", count=1)
    lib.reconnect("alice")
    with pytest.raises(AssertionError, match="Nothing was left unacknowledged on 'alice'"):
        lib.unacknowledged_deliveries_should_be_redelivered("alice")


def test_manual_acknowledgement_leaves_deliveries_unacked_until_asked(lib):
    lib.connect("alice")
    lib.set_automatic_acknowledgement(False, "alice")
    lib.disconnect("alice")
    lib.push_messages("alice", "N1 N2")
    lib.reconnect("alice")
    lib.wait_for_queued_deliveries("alice", count=2)
    assert lib.get_queue_state("offline_unacked", connection="alice") == 2
    assert lib.acknowledge_deliveries(connection="alice") == 2
    assert lib.get_queue_state("offline_unacked", connection="alice") == 0


# -- checking the target in a suite setup ----------------------------------------------------


@pytest.fixture
def silent_server():
    """A plain asyncio server on a free 127.0.0.1 port that accepts TCP and never answers."""
    loop = asyncio.new_event_loop()
    held = []

    async def hold(reader, writer):
        held.append(writer)
        await asyncio.Event().wait()

    server = loop.run_until_complete(asyncio.start_server(hold, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"

    async def shut():
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()

    asyncio.run_coroutine_threadsafe(shut(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_check_target_fails_fast_naming_a_server_that_never_completes_the_handshake(silent_server):
    library = MessagingLibrary(timeout=timedelta(seconds=10))
    kw = Keywords(library)
    kw.configure_target(silent_server + "?token=secret-in-url", Secret("tok-secret"), name="staging")
    try:
        started = time.monotonic()
        with pytest.raises(AssertionError) as failure:
            kw.check_target(timeout=timedelta(seconds=1))
        assert time.monotonic() - started < 4
    finally:
        library._close()
    message = str(failure.value)
    assert message.startswith(f"Target 'staging' at {silent_server} cannot run this suite: ")
    assert "accepted the TCP connection but completed no WebSocket handshake" in message
    assert "\n" not in message and "secret" not in message


def test_check_target_names_a_refused_port_and_a_refused_token(lib, mock):
    lib.configure_target(f"ws://127.0.0.1:{free_port()}/ws", Secret("unit"))
    with pytest.raises(AssertionError, match=r"cannot run this suite: nothing accepts connections on 127.0.0.1:\d+"):
        lib.check_target(timeout=timedelta(seconds=2))
    lib.configure_target(mock.url, Secret("has spaces"))
    with pytest.raises(AssertionError, match="the test user's connection failed: it refused the WebSocket handshake with HTTP 401"):
        lib.check_target()


def test_check_target_for_admin_needs_the_admin_token_and_names_the_variable(mock):
    library = MessagingLibrary(timeout=timedelta(seconds=5))
    kw = Keywords(library)
    kw.configure_target(mock.url, Secret("unit"), name="staging")
    try:
        kw.check_target()  # a suite that does not push needs no admin token
        started = time.monotonic()
        with pytest.raises(AssertionError, match=r"no admin token is set \(APEX_ADMIN_TOKEN\)"):
            kw.check_target(lib_need("admin"))
        assert time.monotonic() - started < 1
    finally:
        library._close()


def test_check_target_passes_against_the_mock_with_admin_and_leaves_no_connection(lib):
    lib.check_target(lib_need("admin"))
    assert lib.library.ctx.sessions == {}


def test_check_target_refuses_an_admin_token_that_is_not_an_admin(lib, mock):
    lib.configure_target(mock.url, Secret("unit"), admin_token=Secret("not-an-admin"))
    with pytest.raises(AssertionError, match=r"the admin token \(APEX_ADMIN_TOKEN\) is not an admin on this server"):
        lib.check_target(lib_need("admin"))


def lib_need(name):
    from MessagingLibrary.keywords.connection import TargetNeed

    return TargetNeed(name)


# -- health and memory figures ----------------------------------------------------------------


def test_connection_health_is_a_figure_with_an_optional_assertion(lib):
    from assertionengine import AssertionOperator as Op
    from MessagingLibrary.keywords.connection import HealthFigure

    lib.connect("main")
    lib.start_connection_monitor(interval=timedelta(milliseconds=20))
    lib.send_numbered_messages(5, timedelta(milliseconds=20))
    lib.wait_until_messages_are_settled()
    assert lib.get_connection_health(HealthFigure.pings) >= 1
    assert lib.get_connection_health(HealthFigure.missed_pings, Op["=="], "0") == 0
    assert lib.get_connection_health(HealthFigure.max_round_trip, Op["<"], "1 s") < 1
    with pytest.raises(AssertionError, match="health pongs was .*, expected > 100000"):
        lib.get_connection_health(HealthFigure.pongs, Op[">"], "100000")
    names = [m.name for m in lib.library.ctx.measurements if m.name.startswith("health ")]
    assert names == ["health pings", "health missed pings", "health max round trip", "health pongs"]


def test_the_resource_monitor_is_the_one_memory_api_with_one_row_scheme(lib, tmp_path, monkeypatch):
    from assertionengine import AssertionOperator as Op
    from MessagingLibrary.keywords.resources import ProcessRole, ResourceFigure

    lib.connect("main")
    lib.start_resource_monitor(interval=timedelta(milliseconds=20))
    lib.send_numbered_messages(10, timedelta(0))
    lib.wait_until_messages_are_settled()
    assert lib.get_resource_figure(ProcessRole.client, ResourceFigure.memory_growth, Op["<"], "100") < 100
    lib.get_resource_figure(ProcessRole.server, ResourceFigure.peak_memory)
    assert lib.wait_for_memory_recovery(Op[">="], "0.5", timeout=timedelta(seconds=1)) >= 0.5
    with pytest.raises(RuntimeError, match="No bytes per message yet: it needs a load run"):
        lib.get_resource_figure(ProcessRole.server, ResourceFigure.bytes_per_message)
    rows = [m.name for m in lib.library.ctx.measurements if m.name.split(" ", 1)[-1].startswith(("memory", "peak"))]
    assert rows == ["client memory growth", "server peak memory", "server memory recovery"]
    monkeypatch.chdir(tmp_path)  # outside Robot, the figures go to ./results/monitor/
    figures = lib.stop_resource_monitor()
    assert set(figures) == {"client", "server"} and "memory_growth" in figures["server"]
    assert list((tmp_path / "results" / "monitor").glob("resources-*.json"))
