"""Pure semantics of apex_mock.core (no sockets, fake clock)."""

from __future__ import annotations

import pytest
from apex_mock import faults as F
from apex_mock.core import (
    ProtocolError,
    ResponseFaults,
    Settings,
    UserCore,
    headroom_for,
    settings_problems,
    user_id_for_token,
    validate_push,
)
from fakes import FakeClock


def make(faults=(), clock=None, **settings) -> UserCore:
    ids = iter(range(1, 10_000))
    return UserCore(
        "user-test",
        Settings(**settings),
        faults,
        clock=clock or FakeClock(),
        wall_ns=lambda: 42,
        rss=lambda: 1234,
        delivery_ids=lambda: f"dlv-{next(ids)}",
    )


def msg(mid, seq=None, **extra):
    frame = {"type": "user_message", "message_id": mid, "content": f"c-{mid}"}
    if seq is not None:
        frame["sequence_id"] = seq
    frame.update(extra)
    return frame


def admit(core, frame):
    replies, job = core.handle(frame)
    return replies, job


def drain(core) -> list[dict]:
    out = []
    while (job := core.next_job()) is not None:
        out.append(core.complete(job))
    return out


# --------------------------------------------------------------------------- identity


def test_user_id_is_hash_of_token_and_never_the_token():
    uid = user_id_for_token("secret-token")
    assert uid.startswith("user-") and len(uid) == 5 + 16
    assert "secret" not in uid
    assert uid == user_id_for_token("secret-token") != user_id_for_token("other")


# --------------------------------------------------------------------------- ordering


def test_processing_is_fifo_by_admission_regardless_of_priority():
    core = make()
    prios = ["low", "critical", "normal", "high", "low", "critical"]
    for i, p in enumerate(prios):
        replies, job = admit(core, msg(f"m{i}", i, priority=p))
        assert replies == [] and job is not None
    out = drain(core)
    assert [r["message_id"] for r in out] == [f"m{i}" for i in range(6)]
    assert [r["priority"] for r in out] == prios
    assert all(r["type"] == "ai_response" for r in out)


def test_ai_response_shape_and_request_id_echo():
    core = make()
    admit(core, msg("m1", 7, request_id="r-1", content="hello"))
    (r,) = drain(core)
    assert r == {
        "type": "ai_response",
        "message_id": "m1",
        "sequence_id": 7,
        "priority": "normal",
        "content": "Response to: hello",
        "contributing_agents": [],
        "processed_at_ns": 42,
        "request_id": "r-1",
    }
    admit(core, msg("m2"))
    (r2,) = drain(core)
    assert "request_id" not in r2 and r2["sequence_id"] is None


def test_one_job_in_flight_at_a_time():
    core = make()
    admit(core, msg("a"))
    admit(core, msg("b"))
    job = core.next_job()
    assert core.next_job() is None  # still processing a
    assert core.waiting == 1 and core.queue_state()["in_flight"] == 1
    core.complete(job)
    assert core.next_job().message_id == "b"


# --------------------------------------------------------------------------- dedup


def test_duplicate_rejected_within_window_and_not_processed():
    core = make()
    admit(core, msg("m1", 1))
    replies, job = admit(core, msg("m1", 5, request_id=9))
    assert job is None
    assert replies == [
        {
            "type": "duplicate_rejected",
            "message_id": "m1",
            "sequence_id": 5,
            "original_sequence_id": 1,
            "request_id": 9,
        }
    ]
    drain(core)
    assert core.agent_state()["processed_message_ids"] == ["m1"]
    # still a duplicate after processing
    replies, job = admit(core, msg("m1", 6))
    assert replies[0]["type"] == "duplicate_rejected" and job is None
    assert core.queue_state()["duplicate_total"] == 2


def test_dedup_is_per_user():
    a, b = make(), make()
    admit(a, msg("same"))
    replies, job = admit(b, msg("same"))
    assert replies == [] and job is not None


def test_dedup_window_expiry_with_fake_clock_and_pruning():
    clock = FakeClock()
    core = make(clock=clock, duplicate_window_s=10)
    admit(core, msg("m1", 1))
    clock.advance(9.9)
    assert admit(core, msg("m1", 2))[0][0]["type"] == "duplicate_rejected"
    clock.advance(0.1)  # exactly the window: expired
    replies, job = admit(core, msg("m1", 3))
    assert replies == [] and job is not None
    # the seen map is pruned by the window (bounded memory)
    for i in range(50):
        admit(core, msg(f"x{i}"))
    clock.advance(11)
    admit(core, msg("last"))
    assert list(core.seen) == ["last"]


def test_window_zero_disables_dedup():
    core = make(duplicate_window_s=0)
    admit(core, msg("m"))
    assert admit(core, msg("m"))[1] is not None


def test_queue_full_is_not_recorded_as_seen():
    core = make(queue_capacity=1)
    admit(core, msg("a"))
    replies, job = admit(core, msg("b"))
    assert replies[0]["type"] == "queue_full" and job is None
    drain(core)
    replies, job = admit(core, msg("b"))
    assert replies == [] and job is not None


def test_invalid_message_is_not_recorded_as_seen():
    core = make()
    replies, job = admit(core, msg("a", target_agents=["ghost"]))
    assert replies[0]["code"] == "bad_field" and job is None
    assert admit(core, msg("a"))[1] is not None


# --------------------------------------------------------------------------- capacity


def test_capacity_queue_full_shape_and_headroom_for_high_priority():
    core = make(queue_capacity=10, processing_ms=20)
    assert headroom_for(10) == 1 and headroom_for(500) == 50 and headroom_for(1) == 1
    for i in range(10):
        assert admit(core, msg(f"n{i}", i))[1] is not None
    replies, job = admit(core, msg("low", 10, priority="low", request_id="q"))
    assert job is None
    assert replies == [
        {
            "type": "queue_full",
            "message_id": "low",
            "sequence_id": 10,
            "priority": "low",
            "queue_size": 10,
            "capacity": 10,
            "retry_after_ms": 200,
            "request_id": "q",
        }
    ]
    assert admit(core, msg("norm", 11))[0][0]["type"] == "queue_full"
    assert admit(core, msg("hi", 12, priority="high"))[1] is not None  # headroom: 11 waiting
    assert admit(core, msg("crit", 13, priority="critical"))[0][0]["type"] == "queue_full"
    qs = core.queue_state()
    assert qs["queue_size"] == 11 and qs["max_queue_size_seen"] == 11
    assert qs["queue_full_total"] == 3 and qs["admitted_total"] == 11 and qs["headroom"] == 1


def test_in_flight_message_does_not_count_as_waiting():
    core = make(queue_capacity=2)
    admit(core, msg("a"))
    core.next_job()  # a in flight
    assert admit(core, msg("b"))[1] is not None
    assert admit(core, msg("c"))[1] is not None
    assert admit(core, msg("d"))[0][0]["type"] == "queue_full"


def test_retry_after_is_at_least_one_ms():
    core = make(queue_capacity=1, processing_ms=0)
    admit(core, msg("a"))
    assert admit(core, msg("b"))[0][0]["retry_after_ms"] == 1


def test_max_queue_size_seen_is_the_high_water_mark():
    core = make()
    for i in range(7):
        admit(core, msg(f"m{i}"))
    drain(core)
    admit(core, msg("z"))
    qs = core.queue_state()
    assert qs["max_queue_size_seen"] == 7 and qs["queue_size"] == 1
    assert qs["processed_total"] == 7 and qs["admitted_total"] == 8


def test_throughput_test_shares_queue_without_agent_state():
    core = make(queue_capacity=2)
    r, j = core.handle({"type": "throughput_test", "message_id": "t1", "sequence_id": 1, "request_id": 5})
    assert j is not None
    core.handle({"type": "throughput_test", "message_id": "t1", "sequence_id": 2})  # no dedup
    r, j = core.handle({"type": "throughput_test", "message_id": "t3", "sequence_id": 3})
    assert r[0]["type"] == "queue_full" and j is None
    out = drain(core)
    assert out[0] == {"type": "throughput_response", "message_id": "t1", "sequence_id": 1, "request_id": 5}
    assert [o["sequence_id"] for o in out] == [1, 2]
    st = core.agent_state()
    assert st["message_count"] == 0 and not st["corrupted"]
    assert core.queue_state()["processed_total"] == 2


# --------------------------------------------------------------------------- agent state


def test_agent_state_shape_and_invariants():
    core = make()
    st = core.agent_state({"request_id": "s"})
    assert st == {
        "type": "agent_state",
        "user_id": "user-test",
        "message_count": 0,
        "last_sequence_id": None,
        "processed_message_ids": [],
        "processed_message_ids_trimmed": 0,
        "conversation_context": {"history": [], "message_count": 0},
        "conversation_complete": False,
        "memory_usage": {"rss": 1234, "total_objects": 0},
        "corrupted": False,
        "request_id": "s",
    }
    for i in range(4):
        admit(core, msg(f"m{i}", i, end_of_conversation=(i == 2)))
    drain(core)
    st = core.agent_state()
    assert st["message_count"] == 4 and st["last_sequence_id"] == 3
    assert st["processed_message_ids"] == ["m0", "m1", "m2", "m3"]
    assert st["conversation_context"] == {"history": ["c-m0", "c-m1", "c-m2", "c-m3"], "message_count": 4}
    assert st["conversation_complete"] is True  # stays true after the flag
    assert st["corrupted"] is False
    assert st["memory_usage"]["total_objects"] == 4 + 4 + 4  # ids + history + seen


def test_corrupted_flags_broken_invariants():
    core = make()
    admit(core, msg("a", 1))
    drain(core)
    assert core.corrupted() is False
    core.history.append("ghost")
    assert core.agent_state()["corrupted"] is True
    core.history.pop()
    core.last_sequence_id = 99
    assert core.corrupted() is True
    core.last_sequence_id = 1
    core.processed_message_ids.append("a")
    core.history.append("x")
    core.message_count += 1
    core._last_processed = ("a", 1)
    assert core.corrupted() is True  # duplicate id


def test_validation_errors():
    core = make()
    cases = [
        ({"type": "user_message"}, "missing_field", "message_id"),
        ({"type": "user_message", "message_id": ""}, "bad_field", "message_id"),
        ({"type": "user_message", "message_id": 5}, "bad_field", "message_id"),
        ({"type": "user_message", "message_id": "m", "sequence_id": "1"}, "bad_field", "sequence_id"),
        ({"type": "user_message", "message_id": "m", "sequence_id": True}, "bad_field", "sequence_id"),
        ({"type": "user_message", "message_id": "m", "priority": "urgent"}, "bad_field", "priority"),
        ({"type": "user_message", "message_id": "m", "content": 3}, "bad_field", "content"),
        ({"type": "user_message", "message_id": "m", "target_agents": "a"}, "bad_field", "target_agents"),
        ({"type": "user_message", "message_id": "m", "end_of_conversation": "y"}, "bad_field", "end_of_conversation"),
        ({"type": "user_message", "message_id": "m", "shared_state_key": 1}, "bad_field", "shared_state_key"),
        ({"type": "configure_agents"}, "missing_field", "agents"),
        ({"type": "configure_agents", "agents": []}, "bad_field", "agents"),
        ({"type": "configure_agents", "agents": ["a", "a"]}, "bad_field", "agents"),
        ({"type": "throughput_test"}, "missing_field", "message_id"),
    ]
    for frame, code, field in cases:
        replies, job = core.handle({**frame, "request_id": "r"})
        assert job is None, frame
        (err,) = replies
        assert err["type"] == "error" and err["code"] == code, (frame, err)
        assert field in err["message"] and err["request_id"] == "r"
    err = core.handle({"type": "user_message", "message_id": "m", "priority": 1})[0][0]
    assert err["message_id"] == "m"
    assert core.queue_state()["admitted_total"] == 0


# --------------------------------------------------------------------------- configure_session


def test_configure_session_echoes_all_effective_values():
    core = make()
    r = core.handle({"type": "configure_session", "processing_ms": 0, "queue_capacity": 3, "request_id": 1})[0][0]
    assert r == {
        "type": "session_configured",
        "processing_ms": 0,
        "throughput_processing_ms": 0.0,
        "queue_capacity": 3,
        "duplicate_window_s": 300.0,
        "offline_capacity": 100,
        "overflow_policy": "drop_oldest",
        "offline_ttl_s": 300.0,
        "agent_stream": None,
        "request_id": 1,
    }
    r = core.handle({"type": "configure_session", "overflow_policy": "reject", "offline_ttl_s": 0.5})[0][0]
    assert r["overflow_policy"] == "reject" and r["offline_ttl_s"] == 0.5 and r["queue_capacity"] == 3
    r = core.handle({"type": "configure_session", "throughput_processing_ms": 0.5})[0][0]
    assert r["throughput_processing_ms"] == 0.5 and r["processing_ms"] == 0
    r = core.handle({"type": "configure_session", "throughput_processing_ms": 60000})[0][0]
    assert r["throughput_processing_ms"] == 60000


@pytest.mark.parametrize(
    "field,value",
    [
        ("processing_ms", -1),
        ("processing_ms", 60001),
        ("processing_ms", 1.5),
        ("throughput_processing_ms", -0.5),
        ("throughput_processing_ms", 60000.5),
        ("throughput_processing_ms", True),
        ("throughput_processing_ms", "1"),
        ("throughput_processing_ms", None),
        ("queue_capacity", 0),
        ("queue_capacity", True),
        ("duplicate_window_s", -1),
        ("duplicate_window_s", "5"),
        ("offline_capacity", 0),
        ("overflow_policy", "drop_all"),
        ("offline_ttl_s", 0),
        ("bogus_key", 1),
    ],
)
def test_configure_session_rejects_bad_fields_atomically(field, value):
    core = make()
    frame = {"type": "configure_session", "queue_capacity": 7, field: value}
    (err,), _ = core.handle(frame)
    assert err["code"] == "bad_field" and field in err["message"]
    assert core.settings.queue_capacity == 500  # nothing applied


# --------------------------------------------------------------------------- agents


def test_agents_shared_state_and_contributing_agents():
    core = make()
    r = core.handle({"type": "configure_agents", "agents": ["a", "b", "c"]})[0][0]
    assert r == {"type": "agents_configured", "agents": ["a", "b", "c"]}
    plan = [["a", "b"], ["a", "b", "c"], ["b", "c"], ["a"], ["b"]]
    for i, targets in enumerate(plan):
        admit(core, msg(f"m{i}", i, target_agents=targets, shared_state_key="topic"))
    out = drain(core)
    assert out[1]["contributing_agents"] == [
        {"agent": "a", "processed_sequence": 1},
        {"agent": "b", "processed_sequence": 1},
        {"agent": "c", "processed_sequence": 1},
    ]
    st = core.all_agent_states({"request_id": 3})
    assert st["request_id"] == 3 and st["corrupted"] is False
    agents = st["agents"]
    assert {n: a["messages_processed"] for n, a in agents.items()} == {"a": 3, "b": 4, "c": 2}
    assert {n: a["last_processed_sequence"] for n, a in agents.items()} == {"a": 3, "b": 4, "c": 2}
    assert agents["a"]["shared_state"] == {"topic": "m3@3"}
    assert agents["c"]["shared_state"] == {"topic": "m2@2"}
    # without a key the message_id is the key; the value is the same for all targets
    admit(core, msg("k", 9, target_agents=["a", "c"]))
    drain(core)
    agents = core.all_agent_states()["agents"]
    assert agents["a"]["shared_state"]["k"] == agents["c"]["shared_state"]["k"] == "k@9"


def test_configure_agents_resets_counters():
    core = make()
    core.handle({"type": "configure_agents", "agents": ["a"]})
    admit(core, msg("m", 1, target_agents=["a"]))
    drain(core)
    core.handle({"type": "configure_agents", "agents": ["a", "b"]})
    agents = core.all_agent_states()["agents"]
    assert agents == {
        "a": {"messages_processed": 0, "last_processed_sequence": None, "shared_state": {}},
        "b": {"messages_processed": 0, "last_processed_sequence": None, "shared_state": {}},
    }


def test_unknown_type_is_reported():
    core = make()
    (err,), _job = core.handle({"type": "nope", "request_id": 1})
    assert err["code"] == "unknown_type" and err["request_id"] == 1


# --------------------------------------------------------------------------- faults (core level)


def test_fault_no_dedup_processes_duplicates_and_breaks_invariant():
    core = make([F.NO_DEDUP])
    admit(core, msg("m", 1))
    replies, job = admit(core, msg("m", 2))
    assert replies == [] and job is not None
    drain(core)
    st = core.agent_state()
    assert st["processed_message_ids"] == ["m", "m"] and st["corrupted"] is True


def test_fault_stale_state_lags_one_message():
    core = make([F.STALE_STATE])
    assert core.agent_state()["message_count"] == 0
    for i in range(3):
        admit(core, msg(f"m{i}", i))
        drain(core)
        st = core.agent_state()
        assert st["message_count"] == i  # one behind
        assert st["processed_message_ids"] == [f"m{k}" for k in range(i)]
        assert st["corrupted"] is False  # stale, but self-consistent
    assert make().agent_state()["message_count"] == 0


def test_fault_no_backpressure_never_queue_full():
    core = make([F.NO_BACKPRESSURE], queue_capacity=5)
    for i in range(20):
        assert admit(core, msg(f"m{i}"))[1] is not None
    assert core.queue_state()["max_queue_size_seen"] == 20


def test_fault_ignore_priority_removes_headroom():
    core = make([F.IGNORE_PRIORITY], queue_capacity=10)
    for i in range(10):
        admit(core, msg(f"m{i}"))
    assert admit(core, msg("c", priority="critical"))[0][0]["type"] == "queue_full"


def test_fault_agent_desync():
    core = make([F.AGENT_DESYNC])
    core.handle({"type": "configure_agents", "agents": ["a", "b", "c"]})
    admit(core, msg("one", 5, target_agents=["b"], shared_state_key="k"))
    admit(core, msg("m", 7, target_agents=["a", "b", "c"], shared_state_key="k"))
    out = drain(core)
    assert out[0]["contributing_agents"] == [{"agent": "b", "processed_sequence": 5}]  # single target ok
    assert out[1]["contributing_agents"] == [
        {"agent": "a", "processed_sequence": 7},
        {"agent": "b", "processed_sequence": 6},
        {"agent": "c", "processed_sequence": 6},
    ]
    agents = core.all_agent_states()["agents"]
    assert agents["a"]["shared_state"]["k"] == "m@7"
    assert agents["b"]["shared_state"]["k"] == agents["c"]["shared_state"]["k"] == "m@7~stale"


def _stream(faults, n):
    rf = ResponseFaults(faults)
    sent = []
    for i in range(1, n + 1):
        sent.extend(rf.on_produced(i))
    return sent, rf


def test_response_pipeline_without_faults_is_identity():
    assert _stream((), 20)[0] == list(range(1, 21))


def test_fault_reorder_holds_every_fifth_until_the_next():
    sent, rf = _stream([F.REORDER], 12)
    assert sent == [1, 3, 2, 4, 5, 6, 8, 7, 9, 10, 11]
    assert rf.held_token == 12
    assert rf.flush_held(11) == []  # stale timer token: nothing
    assert rf.flush_held(12) == [12]


def test_fault_duplicate_response():
    sent, _ = _stream([F.DUPLICATE_RESPONSE], 12)
    assert sent == [1, 1, 2, 3, 4, 5, 6, 6, 7, 8, 9, 10, 11, 11, 12]


def test_fault_drop_response():
    sent, rf = _stream([F.DROP_RESPONSE], 15)
    assert sent == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 15]
    assert rf.dropped == 2


def test_drop_response_still_updates_state():
    core = make([F.DROP_RESPONSE])
    for i in range(7):
        admit(core, msg(f"m{i}", i))
    out = drain(core)
    sent = [x for r in out for x in core.responses.on_produced(r)]
    assert len(sent) == 6 and core.agent_state()["message_count"] == 7


def test_fault_registry_descriptions():
    assert set(F.FAULTS) == {
        "reorder",
        "duplicate_response",
        "drop_response",
        "no_dedup",
        "stale_state",
        "no_backpressure",
        "ignore_priority",
        "agent_desync",
        "slow",
        "ignore_priority_offline",
        "ignore_ttl",
        "evict_highest",
        "lose_offline",
        "no_redelivery",
        "duplicate_delivery",
        "policy_confusion",
        "lazy_expiry",
        "unbounded_offline",
        "slow_reconnect",
        "throttle",
        "leak",
        "disconnect_every",
        "stop_reading",
        "degrade",
        "sticky_overload",
        "cross_talk",
        "wrong_sequence",
        "false_redelivered",
        "wrong_queued_count",
        "stall_stream",
        "truncate_stream",
        "duplicate_final",
        "event_after_final",
        "missing_started",
        "unpaired_tool",
        "slow_first_event",
    }
    for fault in F.FAULTS.values():
        assert fault.description and "\n" not in fault.description
        assert fault.guarantee and fault.name == fault.name.strip()
    assert len({f.guarantee for f in F.FAULTS.values()}) == len(F.FAULTS)  # one guarantee each
    assert F.parse_faults(["reorder,slow", "slow"]) == {"reorder", "slow"}
    with pytest.raises(F.UnknownFault) as exc:
        F.parse_faults(["reorder", "bogus"])
    assert exc.value.names == ["bogus"]


def test_parse_faults_with_parameters():
    faults = F.parse_faults(["reorder,throttle=2000", "leak", "disconnect_every=5"])
    assert isinstance(faults, F.FaultSet) and isinstance(faults, frozenset)
    assert faults == {"reorder", "throttle", "leak", "disconnect_every"}
    assert "throttle" in faults and "throttle=2000" not in faults
    # given values, defaults for the rest; faults without a parameter have none
    assert dict(faults.params) == {"throttle": 2000.0, "leak": F.LEAK_DEFAULT_BYTES, "disconnect_every": 5}
    assert faults.param(F.THROTTLE) == 2000.0 and isinstance(faults.param(F.DISCONNECT_EVERY), int)
    assert faults.labels() == ["disconnect_every=5", "leak=4096", "reorder", "throttle=2000"]
    assert F.parse_faults(["throttle=0.5"]).labels() == ["throttle=0.5"]
    assert F.parse_faults([]).params == {} and F.parse_faults([]) == frozenset()
    assert F.parse_faults(faults) is faults  # parameters survive a second parse
    assert F.parse_faults(["throttle", "throttle=1500"]).param("throttle") == 1500  # same value twice
    assert F.FaultSet({"throttle"}).param("throttle") == F.THROTTLE_DEFAULT_RATE


@pytest.mark.parametrize(
    "spec,message",
    [
        ("throttle=abc", "fault 'throttle' takes a positive number (messages per second), got 'abc'"),
        ("throttle=0", "fault 'throttle' takes a positive number (messages per second), got '0'"),
        ("throttle=-5", "got '-5'"),
        ("throttle=inf", "got 'inf'"),
        ("throttle=nan", "got 'nan'"),
        ("throttle=", "got ''"),
        ("leak=1.5", "fault 'leak' takes a positive integer (bytes kept per processed message), got '1.5'"),
        ("disconnect_every=0", "fault 'disconnect_every' takes a positive integer"),
        ("reorder=3", "fault 'reorder' takes no value, got 'reorder=3'"),
        ("sticky_overload=1", "fault 'sticky_overload' takes no value"),
        ("throttle=100,throttle=200", "fault 'throttle' given two values: 100 and 200"),
    ],
)
def test_parse_faults_rejects_bad_values(spec, message):
    with pytest.raises(F.FaultValueError) as exc:
        F.parse_faults([spec])
    assert message in str(exc.value)


def test_parse_faults_unknown_with_a_value_names_the_fault():
    with pytest.raises(F.UnknownFault) as exc:
        F.parse_faults(["nosuch=1", "throttle=abc"])  # unknown names are reported first
    assert exc.value.names == ["nosuch"]


def test_describe_faults_shows_parameters_and_defaults():
    text = F.describe_faults()
    for usage in ("throttle[=RATE]", "leak[=BYTES]", "disconnect_every[=N]"):
        assert usage in text
    assert "sticky_overload " in text and "sticky_overload[" not in text
    assert "default 1500" in text and "default 4096" in text and "default 100)" in text


# --------------------------------------------------------------------------- throughput path (core level)


def test_throughput_and_chat_messages_take_their_own_processing_time():
    core = make(processing_ms=7, throughput_processing_ms=0.5)
    _, chat = core.handle(msg("m1"))
    _, tp = core.handle({"type": "throughput_test", "message_id": "t1"})
    assert core.processing_s(chat) == 0.007 and core.processing_s(tp) == 0.0005
    core.handle({"type": "configure_session", "throughput_processing_ms": 3})
    assert core.processing_s(tp) == 0.003  # read when the job starts
    assert core.queue_state()["throughput_processing_ms"] == 3


def test_retry_after_uses_the_refused_messages_own_processing_time():
    core = make(queue_capacity=2, processing_ms=10, throughput_processing_ms=0.25)
    for i in range(2):
        core.handle({"type": "throughput_test", "message_id": f"t{i}"})
    (full,), _ = core.handle({"type": "throughput_test", "message_id": "t2"})
    assert full["type"] == "queue_full" and full["retry_after_ms"] == 1  # ceil(2 x 0.25)
    (full,), _ = core.handle(msg("m"))
    assert full["retry_after_ms"] == 20  # 2 x processing_ms, as before
    core.handle({"type": "configure_session", "throughput_processing_ms": 1.5})
    (full,), _ = core.handle({"type": "throughput_test", "message_id": "t3"})
    assert full["retry_after_ms"] == 3


def test_throughput_request_echo_keeps_only_the_request_id():
    core = make()
    _, plain = core.handle({"type": "throughput_test", "message_id": "t1", "padding": "x" * 100})
    _, echoed = core.handle({"type": "throughput_test", "message_id": "t2", "request_id": 9, "padding": "y"})
    assert dict(plain.request) == {} and dict(echoed.request) == {"request_id": 9}
    out = drain(core)
    assert out == [
        {"type": "throughput_response", "message_id": "t1", "sequence_id": None},
        {"type": "throughput_response", "message_id": "t2", "sequence_id": None, "request_id": 9},
    ]


# --------------------------------------------------------------------------- offline queue (core level)


def test_queue_state_reports_the_offline_queue():
    core = make(offline_capacity=3, overflow_policy="reject", offline_ttl_s=60)
    qs = core.queue_state({"request_id": "q"})
    assert {k: v for k, v in qs.items() if k.startswith("offline_") or k in ("user_id", "overflow_policy")} == {
        "user_id": "user-test",
        "offline_size": 0,
        "offline_unacked": 0,
        "offline_capacity": 3,
        "overflow_policy": "reject",
        "offline_ttl_s": 60,
        "offline_queued_total": 0,
        "offline_delivered_total": 0,
        "offline_dropped_total": 0,
        "offline_rejected_total": 0,
        "offline_expired_total": 0,
        "offline_redelivered_total": 0,
    }
    assert qs["request_id"] == "q" and qs["throughput_dropped_total"] == 0
    conn = object()
    core.offline.offer("a", "low", "push", {"type": "pushed_message"}, owner=conn)
    core.offline.offer("b", "low", "push", {"type": "pushed_message"})
    core.offline.offer("c", "low", "push", {"type": "pushed_message"})
    core.offline.offer("d", "low", "push", {"type": "pushed_message"})
    core.offline.release(conn)
    core.offline.take_for_delivery(conn)
    qs = core.queue_state()
    assert (qs["offline_size"], qs["offline_unacked"]) == (0, 3)
    assert (qs["offline_queued_total"], qs["offline_rejected_total"], qs["offline_redelivered_total"]) == (3, 1, 1)


def test_configure_session_changes_the_offline_behaviour():
    core = make()
    core.handle({"type": "configure_session", "offline_capacity": 1, "overflow_policy": "drop_newest"})
    core.offline.offer("a", "low", "push", {})
    assert core.offline.offer("b", "low", "push", {}).status == "dropped"
    core.handle({"type": "configure_session", "overflow_policy": "reject"})
    assert core.offline.offer("b", "low", "push", {}).status == "rejected"


def test_ack_through_handle_validates_and_removes():
    core = make()
    entry = core.offline.offer("a", "normal", "push", {}, owner=object()).entry
    for frame, code in (
        ({"type": "ack"}, "missing_field"),
        ({"type": "ack", "delivery_ids": None}, "missing_field"),
        ({"type": "ack", "delivery_ids": "dlv-1"}, "bad_field"),
        ({"type": "ack", "delivery_ids": [1]}, "bad_field"),
        ({"type": "ack", "delivery_ids": [""]}, "bad_field"),
    ):
        (err,), job = core.handle({**frame, "request_id": 5})
        assert job is None
        assert err["code"] == code and "delivery_ids" in err["message"] and err["request_id"] == 5
    assert core.offline.held == 1
    assert core.handle({"type": "ack", "delivery_ids": [entry.delivery_id], "request_id": 6}) == ([], None)
    assert core.offline.held == 0 and core.queue_state()["offline_delivered_total"] == 1
    assert core.handle({"type": "ack", "delivery_ids": []}) == ([], None)


def test_finished_reply_for_an_absent_user_is_queued_offline_throughput_is_counted():
    core = make()
    admit(core, msg("m1", 3, priority="high", request_id="r"))
    core.handle({"type": "throughput_test", "message_id": "t1"})
    ai, tp = drain(core)
    outcome = core.store_undeliverable(ai)
    assert outcome.status == "queued" and outcome.entry.kind == "reply"
    assert outcome.entry.priority == "high" and outcome.entry.message_id == "m1"
    assert core.store_undeliverable(tp) is None
    assert core.queue_state()["throughput_dropped_total"] == 1
    (frame,) = core.offline.take_for_delivery(object())
    assert frame == {**ai, "delivery_id": "dlv-1", "queued_at": 42, "redelivered": False}
    assert frame["request_id"] == "r"


def test_total_objects_counts_offline_entries():
    clock = FakeClock()
    core = make(clock=clock, offline_ttl_s=5)
    assert core.agent_state()["memory_usage"]["total_objects"] == 0
    core.offline.offer("a", "low", "push", {})
    core.offline.offer("b", "low", "push", {}, owner=object())
    assert core.agent_state()["memory_usage"]["total_objects"] == 2
    clock.advance(5)  # the waiting one expires; the unacked one is with a client
    assert core.agent_state()["memory_usage"]["total_objects"] == 1


@pytest.mark.parametrize(
    "frame,code,field",
    [
        ({}, "missing_field", "to_user"),
        ({"to_user": ""}, "bad_field", "to_user"),
        ({"to_user": "alice"}, "bad_field", "to_user"),
        ({"to_user": "user-0123456789ABCDEF"}, "bad_field", "to_user"),
        ({"to_user": "user-0123456789abcdef"}, "missing_field", "message_id"),
        ({"to_user": "user-0123456789abcdef", "message_id": 7}, "bad_field", "message_id"),
        ({"to_user": "user-0123456789abcdef", "message_id": "m", "content": 1}, "bad_field", "content"),
        ({"to_user": "user-0123456789abcdef", "message_id": "m", "priority": "top"}, "bad_field", "priority"),
        ({"to_user": "user-0123456789abcdef", "message_id": "m", "ttl_s": 0}, "bad_field", "ttl_s"),
        ({"to_user": "user-0123456789abcdef", "message_id": "m", "ttl_s": "5"}, "bad_field", "ttl_s"),
        ({"to_user": "user-0123456789abcdef", "message_id": "m", "ttl_s": True}, "bad_field", "ttl_s"),
        ({"to_user": "user-0123456789abcdef", "message_id": "m", "ttl_s": float("inf")}, "bad_field", "ttl_s"),
    ],
)
def test_validate_push_errors(frame, code, field):
    with pytest.raises(ProtocolError) as exc:
        validate_push({"type": "push", **frame})
    assert exc.value.code == code and f"'{field}'" in exc.value.message


def test_validate_push_defaults():
    push = validate_push({"type": "push", "to_user": "user-0123456789abcdef", "message_id": "m",
                          "content": None, "priority": None, "ttl_s": None})
    assert (push.content, push.priority, push.ttl_s) == ("", "normal", None)
    assert validate_push({"to_user": "user-0123456789abcdef", "message_id": "m", "ttl_s": 1}).ttl_s == 1


def test_settings_problems_names_every_bad_default():
    assert settings_problems(Settings()) == ""
    problems = settings_problems(Settings(offline_capacity=0, overflow_policy="drop_all"))
    assert "offline_capacity must be an integer >= 1, got 0" in problems
    assert "overflow_policy must be one of drop_oldest, drop_newest, reject, got 'drop_all'" in problems


# --------------------------------------------------------------------------- limits


def limited(faults=(), **limits) -> UserCore:
    from apex_mock.core import Limits

    return UserCore("user-test", Settings(), faults, clock=FakeClock(), wall_ns=lambda: 42,
                    limits=Limits(**limits))


def test_oversized_strings_are_refused_whole_naming_field_and_limit():
    core = limited(max_id_length=8, max_content_length=10, max_agents=2)
    cases = [
        (msg("m" * 9), "message_id", 8, "field 'message_id' has 9 characters; the limit is 8 (apex-mock --max-id-length)"),
        ({**msg("m1"), "content": "x" * 11}, "content", 10,
         "field 'content' has 11 characters; the limit is 10 (apex-mock --max-content-length)"),
        ({**msg("m1"), "shared_state_key": "k" * 9}, "shared_state_key", 8, None),
        ({"type": "get_agent_state", "request_id": "r" * 9}, "request_id", 8, None),
        ({"type": "configure_agents", "agents": ["a", "b", "c"]}, "agents", 2,
         "field 'agents' has 3 entries; the limit is 2 (apex-mock --max-agents)"),
        ({"type": "configure_agents", "agents": ["a", "b" * 9]}, "agents", 8,
         "an entry of field 'agents' has 9 characters; the limit is 8 (apex-mock --max-id-length)"),
        ({"type": "ack", "delivery_ids": ["d" * 9]}, "delivery_ids", 8, None),
    ]
    for frame, field_, limit, message in cases:
        replies, job = core.handle(frame)
        assert job is None
        (err,) = replies
        assert (err["type"], err["code"], err["field"], err["limit"]) == ("error", "too_large", field_, limit), err
        if message is not None:
            assert err["message"] == message
        if field_ in ("message_id", "request_id"):
            assert field_ not in err  # the oversized value is not echoed back
    assert core.counters.oversized_refused == len(cases)
    assert core.agent_state()["message_count"] == 0 and core.seen == {}  # nothing kept, nothing truncated


def test_configured_capacities_are_bounded_by_the_server_limits():
    core = limited(max_queue_capacity=50, max_offline_capacity=20)
    (err,), _ = core.handle({"type": "configure_session", "queue_capacity": 51, "request_id": 1})
    assert err == {"type": "error", "code": "too_large", "request_id": 1, "field": "queue_capacity", "limit": 50,
                   "message": "field 'queue_capacity' is 51; the limit is 50 (apex-mock --max-queue-capacity)"}
    (err,), _ = core.handle({"type": "configure_session", "offline_capacity": 10**12})
    assert err["code"] == "too_large" and err["field"] == "offline_capacity"
    (ok,), _ = core.handle({"type": "configure_session", "queue_capacity": 50, "offline_capacity": 20})
    assert ok["type"] == "session_configured" and ok["queue_capacity"] == 50
    (err,), _ = core.handle({"type": "configure_session", "k" * 5000: 1})
    assert err["code"] == "bad_field" and len(err["message"]) < 400  # the key is clipped in the message
    from apex_mock.core import Limits

    assert "'queue_capacity' is 600; the limit is 50" in settings_problems(Settings(queue_capacity=600),
                                                                         Limits(max_queue_capacity=50))


def test_history_keeps_the_newest_and_says_how_many_were_trimmed():
    core = limited(max_history=3)
    for i in range(5):
        admit(core, msg(f"m{i}", i))
    drain(core)
    st = core.agent_state()
    assert st["processed_message_ids"] == ["m2", "m3", "m4"]
    assert st["conversation_context"] == {"history": ["c-m2", "c-m3", "c-m4"], "message_count": 5}
    assert st["message_count"] == 5 and st["processed_message_ids_trimmed"] == 2
    assert st["corrupted"] is False and core.counters.history_trimmed == 2
    # dedup is not the history: a trimmed id is still a duplicate within the window
    assert admit(core, msg("m0", 9))[0][0]["type"] == "duplicate_rejected"


def test_history_is_bounded_by_characters_too():
    core = limited(max_history_chars=30)  # ids + contents: "m0" + "c-m0" = 6 characters a message
    for i in range(8):
        admit(core, msg(f"m{i}", i))
    drain(core)
    st = core.agent_state()
    assert st["processed_message_ids"] == [f"m{i}" for i in range(3, 8)]
    assert st["processed_message_ids_trimmed"] == 3 and st["corrupted"] is False
    core = limited(max_history_chars=1)  # one message alone is over: the newest is always kept
    admit(core, msg("only", 1))
    drain(core)
    assert core.agent_state()["processed_message_ids"] == ["only"]


def test_stale_state_view_stays_consistent_when_trimmed():
    core = limited([F.STALE_STATE], max_history=2)
    for i in range(4):
        admit(core, msg(f"m{i}", i))
    drain(core)
    st = core.agent_state()  # as before the last message: m0..m2 processed, m0 trimmed by now
    assert st["message_count"] == 3 and st["processed_message_ids"] == ["m2"]
    assert st["processed_message_ids_trimmed"] == 2


def test_dedup_window_is_bounded_by_count():
    core = limited(max_dedup_ids=2)
    for i in range(3):
        admit(core, msg(f"m{i}", i))
    assert list(core.seen) == ["m1", "m2"]
    assert core.queue_state()["dedup_evicted_total"] == 1 and core.counters.dedup_evicted == 1
    assert admit(core, msg("m2", 5))[0][0]["type"] == "duplicate_rejected"
    assert admit(core, msg("m0", 6))[1] is not None  # forgotten early: admitted again, and counted


def test_shared_state_keys_per_agent_are_bounded_and_reported():
    core = limited(max_shared_state_keys=2)
    core.handle({"type": "configure_agents", "agents": ["a", "b"]})
    for i in range(4):
        admit(core, msg(f"m{i}", i, target_agents=["a"] if i else ["a", "b"]))
    drain(core)
    states = core.all_agent_states()
    assert states["agents"]["a"]["shared_state"] == {"m2": "m2@2", "m3": "m3@3"}
    assert states["agents"]["a"]["messages_processed"] == 4  # counts are not trimmed
    assert states["shared_state_trimmed"] == {"a": 2, "b": 0}
    assert states["corrupted"] is False and core.counters.shared_state_trimmed == 2
