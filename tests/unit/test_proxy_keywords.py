"""The fault proxy keywords, called from Python, between the library and a real apex-mock process.

They pin what a suite relies on: routing every new connection (and restoring it), faults
scoped to one connection, faults recorded in the History with the connection's name, the note that puts the
cause next to a failure, and clear errors for what cannot be done.
"""

from datetime import timedelta

import pytest
from MessagingLibrary.engine.history import FAULT


def test_routing_sends_new_connections_through_the_proxy_and_stopping_restores_the_target(lib, mock):
    url = lib.start_fault_proxy()
    assert url != mock.url and url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
    assert lib.library.ctx.target.url == url
    lib.connect("alice")
    assert lib.library.ctx.session("alice").url == url
    lib.send_message("hello", "m-1")
    lib.wait_for_responses(1)
    lib.stop_fault_proxy()
    assert lib.library.ctx.target.url == mock.url


def test_a_frame_fault_on_one_connection_spares_the_others_and_is_recorded_with_its_name(lib):
    lib.start_fault_proxy()
    lib.connect("alice")
    lib.connect("bob")
    described = lib.drop_frames("ai_response", count=1, connection="alice")
    assert described == "drop the next ai_response"
    lib.send_message("to bob", "b-1", connection="bob")
    lib.wait_for_responses(1, connection="bob")
    lib.send_message("lost", "a-1", connection="alice")
    lib.send_message("kept", "a-2", connection="alice")
    with pytest.raises(AssertionError, match="waiting for 2 ai_response \\(got 1\\)"):
        lib.wait_for_responses(2, connection="alice", timeout=timedelta(milliseconds=500))
    assert lib.get_responses(connection="alice")[0]["message_id"] == "a-2"
    faults = lib.get_injected_faults()
    drops = [f for f in faults if f["fault"] == "drop"]
    assert len(drops) == 1
    assert drops[0]["connection"] == "alice"
    assert 0 <= drops[0]["at_s"] < 60  # seconds since the test (here: the library) started
    assert drops[0]["frame"] == {"type": "ai_response", "message_id": "a-1"}
    history = lib.library.ctx.history.select(direction=FAULT)
    assert [e.frame["fault"] for e in history] == ["rule added", "drop"]


def test_the_fault_note_names_the_first_fault_for_a_failed_test(lib):
    lib.start_fault_proxy()
    lib.connect("alice")
    lib.duplicate_frames("ai_response", count=1)
    lib.send_message("twice", "d-1")
    lib.wait_for_responses(2)
    note = lib.library.ctx.fault_note()
    assert note.startswith(" [Network faults injected in this test: 1 duplicate;")
    assert "the first: duplicate of ai_response d-1" in note and "on alice]" in note


def test_a_partition_of_one_connection_holds_its_replies_until_it_heals(lib):
    lib.start_fault_proxy()
    lib.connect("alice")
    lib.start_network_partition("alice")
    lib.send_message("held", "p-1")
    with pytest.raises(AssertionError):
        lib.wait_for_responses(1, timeout=timedelta(milliseconds=300))
    assert lib.end_network_partition("alice") >= 1
    lib.wait_for_responses(1)
    lib.connection_should_be_open("alice")


def test_a_tcp_reset_is_seen_as_a_disconnection(lib):
    lib.start_fault_proxy()
    lib.connect("alice")
    lib.get_session_info()
    lib.library.run_keyword("Send TCP Reset", ["alice"])
    with pytest.raises(AssertionError, match="1006"):
        lib.wait_for_responses(1, timeout=timedelta(seconds=2))
    assert lib.get_disconnection_count() == 1


def test_clear_errors(lib, mock):
    with pytest.raises(RuntimeError, match="No fault proxy is running: use 'Start Fault Proxy' first"):
        lib.drop_frames("ai_response")
    with pytest.raises(Exception, match="Unknown proxy fault 'lose_everything'. Known: reorder_responses"):
        lib.start_fault_proxy("lose_everything")
    with pytest.raises(Exception, match="not a loopback address; pass allow_remote=True"):
        lib.start_fault_proxy(target="wss://staging.example/ws")
    lib.connect("direct")
    lib.start_fault_proxy(route=False)
    with pytest.raises(RuntimeError, match=f"Connection 'direct' connects to {mock.url}, not through the fault proxy"):
        lib.library.run_keyword("Send TCP Reset", ["direct"])
    with pytest.raises(ValueError, match="every must be at least 1"):
        lib.drop_frames(every=0)
