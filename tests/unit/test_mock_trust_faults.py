"""The mock's trust faults: each breaks one claim a client can check, and nothing else.

``cross_talk``, ``wrong_sequence``, ``false_redelivered`` and ``wrong_queued_count`` (faults.py,
docs/protocol.md §10): pure tests of UserCore / OfflineQueue with fake clocks, and the same over
real WebSockets with an in-process MockServer on port 0. No assertion on a measured time: where a
test must know that nothing more is coming, it makes a round trip on the same connection (one
sender per connection writes in order, and a copy is queued before the reply it precedes).
"""

from __future__ import annotations

import orjson
import pytest
from apex_mock import faults as F
from apex_mock.core import Settings, UserCore, reply
from apex_mock.offline import OfflineQueue
from fakes import FakeClock
from test_mock_server import Client, gone, poll, push, run, started


def core_of(faults=(), user_id: str = "user-test") -> UserCore:
    ids = iter(range(1, 10_000))
    return UserCore(user_id, Settings(), faults, clock=FakeClock(), wall_ns=lambda: 42,
                    delivery_ids=lambda: f"dlv-{next(ids)}")


def answer(core: UserCore, mid: str, seq=None, **extra) -> dict:
    """Admit one user_message and process it at once; its ai_response."""
    frame = {"type": "user_message", "message_id": mid, "content": f"c-{mid}", **extra}
    if seq is not None:
        frame["sequence_id"] = seq
    replies, job = core.handle(frame)
    assert replies == [] and job is not None
    started_job = core.next_job()
    assert started_job is job
    return core.complete(job)


def queue(*faults) -> OfflineQueue:
    ids = iter(range(1, 1000))
    return OfflineQueue(Settings(), F.parse_faults(faults), clock=FakeClock(), wall_ns=lambda: 7,
                        new_delivery_id=lambda: f"dlv-{next(ids)}")


def offer(q: OfflineQueue, mid: str, owner=None):
    return q.offer(mid, "normal", "push", {"type": "pushed_message", "message_id": mid}, owner=owner)


# --------------------------------------------------------------------------- registry


def test_the_four_trust_faults_are_registered_with_their_guarantees_and_defaults():
    guarantees = {name: F.FAULTS[name].guarantee for name in
                  ("cross_talk", "wrong_sequence", "false_redelivered", "wrong_queued_count")}
    assert guarantees == {
        "cross_talk": "privacy / no cross-talk",
        "wrong_sequence": "echo integrity",
        "false_redelivered": "truthful redelivery flag",
        "wrong_queued_count": "truthful queued count",
    }
    assert F.parse_faults(["cross_talk"]).param(F.CROSS_TALK) == 3
    assert F.parse_faults(["wrong_sequence"]).param(F.WRONG_SEQUENCE) == 5
    assert F.parse_faults(["cross_talk=2,wrong_sequence=7"]).labels() == ["cross_talk=2", "wrong_sequence=7"]
    for bad in ("false_redelivered=1", "wrong_queued_count=2"):
        with pytest.raises(F.FaultValueError, match="takes no value"):
            F.parse_faults([bad])
    with pytest.raises(F.FaultValueError, match="positive integer"):
        F.parse_faults(["cross_talk=1.5"])


def test_every_encoded_ai_response_and_only_it_starts_with_the_prefix_cross_talk_looks_for():
    encoded = orjson.dumps(reply("ai_response", {"request_id": 1}, message_id="m", sequence_id=0))
    assert encoded.startswith(F.AI_RESPONSE_PREFIX)
    for other in ("throughput_response", "duplicate_rejected", "queue_full", "agent_state"):
        assert not orjson.dumps(reply(other, None, message_id="m")).startswith(F.AI_RESPONSE_PREFIX)


# --------------------------------------------------------------------------- wrong_sequence (pure)


def test_wrong_sequence_echoes_plus_one_on_every_nth_integer_sequence_only():
    core = core_of(F.parse_faults(["wrong_sequence=3"]))
    echoed, sent = [], []
    for i in range(9):
        if i % 2:  # interleaved messages without a sequence_id do not count and are not changed
            assert answer(core, f"free-{i}")["sequence_id"] is None
        response = answer(core, f"m{i}", seq=10 * i)
        sent.append(10 * i)
        echoed.append(response["sequence_id"])
    assert echoed == [0, 10, 21, 30, 40, 51, 60, 70, 81]  # the 3rd, 6th, 9th with an integer
    # only the echo lies: the state and the contributions keep what was sent
    state = core.agent_state()
    assert state["last_sequence_id"] == 80 and state["message_count"] == 13
    assert state["corrupted"] is False


def test_wrong_sequence_defaults_to_every_fifth_per_user_and_keeps_contributions_true():
    alice, bob = (core_of(F.parse_faults(["wrong_sequence"]), f"user-{c * 16}") for c in "ab")
    alice.configure_agents({"type": "configure_agents", "agents": ["data"]})
    got_a = [answer(alice, f"a{i}", seq=i, target_agents=["data"]) for i in range(10)]
    got_b = [answer(bob, f"b{i}", seq=i)["sequence_id"] for i in range(4)]
    assert [r["sequence_id"] for r in got_a] == [0, 1, 2, 3, 5, 5, 6, 7, 8, 10]
    assert got_b == [0, 1, 2, 3]  # counted per user: bob has had only four
    assert [r["contributing_agents"][0]["processed_sequence"] for r in got_a] == list(range(10))
    assert alice.all_agent_states()["agents"]["data"]["last_processed_sequence"] == 9


def test_wrong_sequence_leaves_other_replies_and_throughput_alone():
    core = core_of(F.parse_faults(["wrong_sequence=1"]))
    first = answer(core, "m", seq=4)
    assert first["sequence_id"] == 5
    repeat, _ = core.handle({"type": "user_message", "message_id": "m", "sequence_id": 4})
    assert repeat[0]["type"] == "duplicate_rejected"
    assert repeat[0]["sequence_id"] == 4 and repeat[0]["original_sequence_id"] == 4
    _, job = core.handle({"type": "throughput_test", "message_id": "t", "sequence_id": 8})
    assert core.complete(core.next_job())["sequence_id"] == 8 and job is not None


def test_without_the_fault_the_echo_is_what_was_sent():
    core = core_of()
    assert [answer(core, f"m{i}", seq=i)["sequence_id"] for i in range(12)] == list(range(12))


# --------------------------------------------------------------------------- offline faults (pure)


def test_false_redelivered_flags_every_first_delivery_and_keeps_the_count_truthful():
    q = queue(F.FALSE_REDELIVERED)
    offer(q, "away-1")
    offer(q, "away-2")
    first = q.connect(owner="c1")
    assert first.queued == 2
    assert [(f["message_id"], f["redelivered"]) for f in first.frames] == [("away-1", True), ("away-2", True)]
    assert q.redelivered_total == 0  # nothing was delivered before
    online = offer(q, "online", owner="c1")  # delivered at once to an open connection
    assert online.frame is not None and online.frame["redelivered"] is True
    q.release("c1")
    again = q.connect(owner="c2")
    assert [f["redelivered"] for f in again.frames] == [True, True, True]
    assert q.redelivered_total == 3  # these are real redeliveries
    assert q.totals() == {**queue().totals(), "offered_total": 3, "queued_total": 3, "redelivered_total": 3}


def test_without_false_redelivered_a_first_delivery_is_not_flagged():
    q = queue()
    offer(q, "away-1")
    assert [f["redelivered"] for f in q.connect(owner="c1").frames] == [False]


def test_wrong_queued_count_announces_one_more_only_when_something_waits():
    q = queue(F.WRONG_QUEUED_COUNT)
    assert q.connect(owner="c1") == (0, [])  # nothing waiting: 0 stays 0
    q.release("c1")
    offer(q, "a")
    offer(q, "b")
    offered = q.connect(owner="c2")
    assert offered.queued == 3
    assert [f["message_id"] for f in offered.frames] == ["a", "b"]  # the deliveries are unchanged
    assert [f["redelivered"] for f in offered.frames] == [False, False]
    assert q.waiting_count == 0 and q.unacked_count == 2


def test_wrong_queued_count_with_lose_offline_still_announces_one_more():
    q = queue(F.WRONG_QUEUED_COUNT, F.LOSE_OFFLINE)
    offer(q, "a")
    assert q.connect(owner="c1") == (2, [])


# --------------------------------------------------------------------------- over the wire


async def _say(client: Client, prefix: str, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        await client.send(type="user_message", message_id=f"{prefix}{i}", sequence_id=i, content=f"{prefix} {i}")


async def _settle(client: Client, rid: str) -> None:
    """Everything the server queued for ``client`` before this round trip has arrived."""
    assert (await client.request(rid, type="get_queue_state"))["type"] == "queue_state"


def test_cross_talk_copies_every_third_ai_response_server_wide_to_another_user():
    async def scenario():
        server = await started(F.CROSS_TALK, processing_ms=0)
        try:
            alice = await Client.open(server, "alice")
            bob = await Client.open(server, "bob")
            await _say(alice, "a", 4)
            got = await alice.wait_type("ai_response", 4)
            await _say(bob, "b", 2)  # the server-wide 5th and 6th ai_response: bob's 2nd is copied
            await bob.wait_type("ai_response", 3)  # bob: a2 (copy), b0, b1
            await _settle(alice, "sa")
            await _settle(bob, "sb")
            assert [r["message_id"] for r in got] == ["a0", "a1", "a2", "a3"]  # the owner gets its own, once
            assert [r["message_id"] for r in alice.of_type("ai_response")] == ["a0", "a1", "a2", "a3", "b1"]
            assert [r["message_id"] for r in bob.of_type("ai_response")] == ["a2", "b0", "b1"]
            # identical copies
            assert [raw for raw in bob.raw if '"a2"' in raw] == [raw for raw in alice.raw if '"a2"' in raw]
            # nothing else: no state of the receiver changed
            state = await bob.request("st", type="get_agent_state")
            assert state["message_count"] == 2 and state["processed_message_ids"] == ["b0", "b1"]
            await alice.close()
            await bob.close()
        finally:
            await server.stop()

    run(scenario())


def test_cross_talk_needs_another_connected_user_and_copies_only_ai_responses():
    async def scenario():
        server = await started("cross_talk=2", processing_ms=0)
        try:
            alice = await Client.open(server, "alice")
            phone = await Client.open(server, "alice")  # the same user: never a stranger
            await _say(alice, "a", 2)  # the 2nd is due a copy, but no other user is connected
            await alice.wait_type("ai_response", 2)
            for i in range(4):  # throughput_responses are not counted and never copied
                await alice.send(type="throughput_test", message_id=f"t{i}", sequence_id=i)
            await alice.wait_type("throughput_response", 4)
            bob = await Client.open(server, "bob")
            carol = await Client.open(server, "carol")
            await _say(alice, "a", 2, first=2)  # a3 is the 4th: copied to the newest stranger, carol
            await alice.wait_type("ai_response", 4)
            await carol.wait_type("ai_response", 1)
            for client, rid in ((alice, "1"), (phone, "2"), (bob, "3"), (carol, "4")):
                await _settle(client, rid)
            assert [r["message_id"] for r in carol.of_type("ai_response")] == ["a3"]
            assert bob.of_type("ai_response") == [] and phone.of_type("ai_response") == []
            assert [r["message_id"] for r in alice.of_type("ai_response")] == ["a0", "a1", "a2", "a3"]
            assert bob.of_type("throughput_response") == carol.of_type("throughput_response") == []
            for client in (alice, phone, bob, carol):
                await client.close()
        finally:
            await server.stop()

    run(scenario())


def test_cross_talk_copies_a_reply_for_an_away_user_which_still_waits_for_its_owner():
    async def scenario():
        server = await started("cross_talk=1", processing_ms=500)
        try:
            alice = await Client.open(server, "alice")
            admin = await Client.open(server, "admin-x")
            await alice.send(type="user_message", message_id="reply-1", sequence_id=0, content="hi")
            await gone(server, alice)
            copy = (await admin.wait_type("ai_response"))[0]
            assert copy["message_id"] == "reply-1"
            back = await Client.open(server, "alice")
            assert back.frames[0]["queued"] == 1
            delivered = (await back.wait_type("ai_response"))[0]
            assert delivered["message_id"] == "reply-1" and delivered["redelivered"] is False
            assert {k: v for k, v in delivered.items() if k not in ("delivery_id", "queued_at", "redelivered")} == copy
            await back.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())


def test_wrong_sequence_over_the_wire_echoes_the_fifth_plus_one():
    async def scenario():
        server = await started(F.WRONG_SEQUENCE, processing_ms=0)
        try:
            c = await Client.open(server, "alice")
            await _say(c, "m", 10)
            got = await c.wait_type("ai_response", 10)
            assert [(r["message_id"], r["sequence_id"]) for r in got] == [
                ("m0", 0), ("m1", 1), ("m2", 2), ("m3", 3), ("m4", 5),
                ("m5", 5), ("m6", 6), ("m7", 7), ("m8", 8), ("m9", 10),
            ]  # fmt: skip
            state = await c.request("s", type="get_agent_state")
            assert state["last_sequence_id"] == 9 and state["message_count"] == 10
            await c.close()
        finally:
            await server.stop()

    run(scenario())


def test_false_redelivered_and_wrong_queued_count_over_the_wire():
    async def scenario():
        server = await started(F.FALSE_REDELIVERED, F.WRONG_QUEUED_COUNT, processing_ms=0)
        try:
            admin = await Client.open(server, "admin-x")
            alice = await Client.open(server, "alice")
            assert alice.frames[0]["queued"] == 0  # a fresh user: nothing waits, nothing added
            uid = alice.user_id
            await gone(server, alice)
            await push(admin, 1, uid, "p1")
            await push(admin, 2, uid, "p2")
            back = await Client.open(server, "alice")
            assert back.frames[0]["queued"] == 3  # two wait
            got = await back.wait_type("pushed_message", 2)
            assert [(d["message_id"], d["redelivered"]) for d in got] == [("p1", True), ("p2", True)]
            await back.send(type="ack", delivery_ids=[d["delivery_id"] for d in got])
            state = await back.request("q", type="get_queue_state")
            assert state["offline_redelivered_total"] == 0 and state["offline_delivered_total"] == 2
            assert state["offline_size"] == 0 and state["offline_unacked"] == 0
            assert back.of_type("pushed_message") == got  # no third delivery behind the count
            await back.close()
            await admin.close()
        finally:
            await server.stop()

    run(scenario())
