"""Pure semantics of apex_mock.offline.OfflineQueue (no sockets, fake clocks)."""

from __future__ import annotations

import itertools
import random

import pytest
from fakes import FakeClock

from apex_mock import faults as F
from apex_mock.core import Settings
from apex_mock.offline import (
    DELIVERED,
    DROPPED,
    QUEUED,
    REJECTED,
    UNACKED,
    WAITING,
    OfflineQueue,
)

CONN_A = object()  # stand-ins for connections (owners are opaque)
CONN_B = object()


class FakeWall:
    """Unix ns that moves 1 ms per call: queued_at is observable and distinct."""

    def __init__(self):
        self.n = itertools.count()

    def __call__(self) -> int:
        return 1_700_000_000_000_000_000 + next(self.n) * 1_000_000


def make(faults=(), clock=None, settings=None, **overrides):
    settings = settings or Settings(**overrides)
    ids = itertools.count(1)
    q = OfflineQueue(
        settings,
        faults,
        clock=clock or FakeClock(),
        wall_ns=FakeWall(),
        new_delivery_id=lambda: f"dlv-{next(ids)}",
    )
    return q


def push(q, mid, priority="normal", *, owner=None, ttl_s=None):
    body = {"type": "pushed_message", "message_id": mid, "content": f"c-{mid}", "priority": priority}
    return q.offer(mid, priority, "push", body, ttl_s=ttl_s, owner=owner)


def push_all(q, spec: str, **kw):
    """'C:critical N1:normal ...' -> outcomes by message id."""
    out = {}
    for item in spec.split():
        mid, priority = item.split(":")
        out[mid] = push(q, mid, priority, **kw)
    return out


def mids(frames_or_entries) -> list[str]:
    return [x["message_id"] if isinstance(x, dict) else x.message_id for x in frames_or_entries]


def check_accounting(q: OfflineQueue) -> None:
    """The two invariants of the module docstring."""
    assert q.queued_total == q.delivered_total + q.evicted_total + q.expired_total + q.held
    assert q.offered_total == q.queued_total + q.discarded_total + q.rejected_total
    assert q.dropped_total == q.evicted_total + q.discarded_total
    assert q.held == q.waiting_count + q.unacked_count


PRIORITY_SPEC = "N1:normal H1:high N2:normal C:critical L:low H2:high N3:normal"


# --------------------------------------------------------------------------- order and frames


def test_delivery_order_is_priority_then_fifo():
    q = make()
    outcomes = push_all(q, PRIORITY_SPEC)
    assert {o.status for o in outcomes.values()} == {QUEUED}
    assert mids(q.peek()) == ["C", "H1", "H2", "N1", "N2", "N3", "L"]
    frames = q.take_for_delivery(CONN_A)
    assert mids(frames) == ["C", "H1", "H2", "N1", "N2", "N3", "L"]
    assert q.waiting_count == 0 and q.unacked_count == 7
    check_accounting(q)


def test_delivery_frame_is_the_entry_frame_plus_delivery_fields():
    q = make()
    outcome = push(q, "m1", "high")
    entry = outcome.entry
    assert outcome == (QUEUED, entry, None, None, None)
    assert entry.delivery_id == "dlv-1" and entry.kind == "push" and entry.state == WAITING
    assert entry.expires_at == 1000.0 + 300.0 and entry.seq == 1 and entry.deliveries == 0
    (frame,) = q.take_for_delivery(CONN_A)
    assert frame == {
        "type": "pushed_message",
        "message_id": "m1",
        "content": "c-m1",
        "priority": "high",
        "delivery_id": "dlv-1",
        "queued_at": entry.queued_at,
        "redelivered": False,
    }
    assert isinstance(entry.queued_at, int) and entry.queued_at > 1_600_000_000 * 10**9
    assert "delivery_id" not in entry.frame  # stored without the delivery fields
    assert entry.state == UNACKED and entry.owner is CONN_A and entry.deliveries == 1


def test_online_offer_is_delivered_at_once_and_unacked():
    q = make()
    outcome = push(q, "m", owner=CONN_A)
    assert outcome.status == DELIVERED and outcome.reason is None
    assert outcome.frame["delivery_id"] == outcome.entry.delivery_id
    assert outcome.frame["redelivered"] is False
    assert q.waiting_count == 0 and q.unacked_count == 1 and q.held == 1
    assert q.take_for_delivery(CONN_B) == []  # nothing waiting


def test_connect_announces_the_waiting_count_and_delivers():
    q = make()
    push_all(q, "a:low b:critical")
    queued, frames = q.connect(CONN_A)
    assert queued == 2 and mids(frames) == ["b", "a"]
    assert q.connect(CONN_B) == (0, [])


# --------------------------------------------------------------------------- overflow policies


def test_drop_oldest_acceptance_example_one():
    q = make(offline_capacity=3, overflow_policy="drop_oldest")
    out = push_all(q, "C:critical N1:normal N2:normal H:high")
    assert out["H"].status == QUEUED and out["H"].evicted.message_id == "N1"
    assert mids(q.peek()) == ["C", "H", "N2"]
    assert mids(q.take_for_delivery(CONN_A)) == ["C", "H", "N2"]
    assert q.dropped_total == 1 and q.evicted_total == 1 and q.held == 3
    check_accounting(q)


def test_drop_oldest_acceptance_example_two():
    q = make(offline_capacity=3)
    out = push_all(q, "C1:critical N1:normal N2:normal H1:high L1:low N3:normal")
    assert out["H1"].evicted.message_id == "N1"
    assert out["L1"].status == DROPPED and out["L1"].entry is None and out["L1"].evicted is None
    assert out["L1"].reason == (
        "offline queue full (3 of 3, policy drop_oldest): every waiting entry has a higher "
        "priority than the incoming low message; the incoming message is discarded"
    )
    assert out["N3"].status == QUEUED and out["N3"].evicted.message_id == "N2"
    assert mids(q.take_for_delivery(CONN_A)) == ["C1", "H1", "N3"]
    assert q.dropped_total == 3 and q.evicted_total == 2 and q.discarded_total == 1
    check_accounting(q)


def test_drop_oldest_evicts_a_lower_waiting_entry_before_an_equal_one():
    q = make(offline_capacity=3)
    out = push_all(q, "N1:normal L1:low N2:normal N3:normal")
    assert out["N3"].evicted.message_id == "L1"  # lowest present, even though N1 is older
    out = push_all(q, "N4:normal")
    assert out["N4"].evicted.message_id == "N1"  # then the oldest of the lowest
    assert mids(q.peek()) == ["N2", "N3", "N4"]


def test_drop_oldest_never_evicts_unacked_entries():
    q = make(offline_capacity=2)
    push(q, "a", owner=CONN_A)
    push(q, "b", owner=CONN_A)
    out = push(q, "c", "critical")
    assert out.status == DROPPED and out.evicted is None
    assert "nothing is waiting to evict (all 2 held entries are delivered but unacked)" in out.reason
    assert q.held == 2 and q.discarded_total == 1


def test_drop_newest_discards_the_incoming_message():
    q = make(offline_capacity=2, overflow_policy="drop_newest")
    out = push_all(q, "a:low b:low c:critical")
    assert out["c"].status == DROPPED and out["c"].entry is None
    assert out["c"].reason == (
        "offline queue full (2 of 2, policy drop_newest): the incoming message is discarded"
    )
    assert mids(q.peek()) == ["a", "b"]
    assert (q.dropped_total, q.rejected_total) == (1, 0)
    check_accounting(q)


def test_reject_refuses_the_incoming_message_with_a_reason():
    q = make(offline_capacity=3, overflow_policy="reject")
    out = push_all(q, "a:normal b:normal c:normal d:critical")
    assert out["d"] == (REJECTED, None, None, "offline queue full (3 of 3, policy reject)", None)
    assert (q.rejected_total, q.dropped_total) == (1, 0)
    assert mids(q.peek()) == ["a", "b", "c"]
    check_accounting(q)


def test_capacity_counts_unacked_entries():
    q = make(offline_capacity=2, overflow_policy="reject")
    assert push(q, "a", owner=CONN_A).status == DELIVERED
    assert push(q, "b").status == QUEUED
    assert push(q, "c").status == REJECTED  # 1 unacked + 1 waiting = full
    q.ack([q.peek()[0].delivery_id])
    assert push(q, "c").status == QUEUED


def test_settings_are_read_at_each_offer_and_lowering_capacity_evicts_nothing():
    settings = Settings(offline_capacity=5)
    q = make(settings=settings)
    push_all(q, "a:normal b:normal c:normal")
    settings.offline_capacity = 1
    settings.overflow_policy = "reject"
    assert q.held == 3  # nothing evicted by the change
    out = push(q, "d")
    assert out.status == REJECTED and out.reason == "offline queue full (3 of 1, policy reject)"
    settings.offline_ttl_s = 7
    settings.offline_capacity = 10
    assert push(q, "e").entry.expires_at == 1000.0 + 7


def test_settings_may_be_a_getter():
    current = {"s": Settings(offline_capacity=1, overflow_policy="drop_newest")}
    q = OfflineQueue(lambda: current["s"], clock=FakeClock())
    push(q, "a")
    assert push(q, "b").status == DROPPED
    current["s"] = Settings(offline_capacity=5)
    assert push(q, "b").status == QUEUED


# --------------------------------------------------------------------------- expiry


def test_expiry_is_continuous_and_frees_capacity():
    clock = FakeClock()
    q = make(clock=clock, offline_capacity=2, overflow_policy="reject", offline_ttl_s=10)
    push(q, "old")
    clock.advance(5)
    push(q, "young")
    assert push(q, "x").status == REJECTED
    clock.advance(4.999)
    assert q.sweep() == 0 and q.held == 2
    clock.advance(0.001)  # exactly expires_at: expired
    out = push(q, "new")  # the offer sweeps first, so the expired entry no longer counts
    assert out.status == QUEUED
    assert q.expired_total == 1 and q.held == 2
    assert mids(q.take_for_delivery(CONN_A)) == ["young", "new"]
    check_accounting(q)


def test_queries_sweep_expired_entries():
    clock = FakeClock()
    q = make(clock=clock, offline_ttl_s=1)
    push_all(q, "a:high b:low")
    clock.advance(1)
    assert q.peek() == [] and q.held == 0 and q.expired_total == 2


def test_per_push_ttl_overrides_the_user_ttl():
    clock = FakeClock()
    q = make(clock=clock, offline_ttl_s=300)
    short = push(q, "short", ttl_s=0.5).entry
    long_ = push(q, "long").entry
    assert short.expires_at == 1000.5 and long_.expires_at == 1300.0
    clock.advance(0.5)
    assert q.sweep() == 1 and mids(q.peek()) == ["long"]


def test_next_expiry_tracks_waiting_entries_only():
    clock = FakeClock()
    q = make(clock=clock, offline_ttl_s=10)
    assert q.next_expiry() is None
    push(q, "a", ttl_s=5)
    push(q, "b")
    assert q.next_expiry() == 1005.0
    q.take_for_delivery(CONN_A)
    assert q.next_expiry() is None  # unacked entries do not expire
    q.release(CONN_A)
    assert q.next_expiry() == 1005.0
    q.ack([q.peek()[0].delivery_id])
    assert q.next_expiry() == 1010.0
    clock.advance(10)
    assert q.sweep() == 1 and q.next_expiry() is None


def test_unacked_entries_do_not_expire_until_returned():
    clock = FakeClock()
    q = make(clock=clock, offline_ttl_s=1)
    push(q, "a")
    q.take_for_delivery(CONN_A)
    clock.advance(60)
    assert q.sweep() == 0 and q.held == 1 and q.unacked_count == 1
    assert q.release(CONN_A) == []  # returned past its TTL: expires at the sweep
    assert q.held == 0 and q.expired_total == 1
    check_accounting(q)


def test_expiry_heap_stays_bounded():
    clock = FakeClock()
    q = make(clock=clock, offline_capacity=10)
    for i in range(2000):
        push(q, f"m{i}")
        if i % 3 == 0:
            q.ack([e.delivery_id for e in q.peek()[:1]])
        if i % 7 == 0:
            q.take_for_delivery(CONN_A)
            q.release(CONN_A)
        clock.advance(0.01)
        assert len(q._heap) <= 2 * q.waiting_count + 64 + 1
    check_accounting(q)


# --------------------------------------------------------------------------- ack and redelivery


def test_ack_removes_unacked_and_waiting_entries_and_ignores_unknown_ids():
    q = make()
    a = push(q, "a", owner=CONN_A).entry
    b = push(q, "b").entry
    assert q.ack([a.delivery_id, b.delivery_id, "dlv-999", a.delivery_id]) == 2
    assert q.held == 0 and q.delivered_total == 2 and q.ack_unknown_total == 2
    assert q.get(a.delivery_id) is None and a.state == "gone"
    check_accounting(q)


def test_release_returns_unacked_entries_first_within_their_priority_and_redelivered():
    q = make()
    push_all(q, "A:normal B:normal X:high")
    first = q.take_for_delivery(CONN_A)
    assert [f["redelivered"] for f in first] == [False, False, False]
    q.ack([first[0]["delivery_id"]])  # X acked
    push_all(q, "C:normal Y:high")  # while CONN_A still holds A and B
    returned = q.release(CONN_A)
    assert mids(returned) == ["A", "B"]
    frames = q.take_for_delivery(CONN_B)
    assert mids(frames) == ["Y", "A", "B", "C"]
    assert [f["redelivered"] for f in frames] == [False, True, True, False]
    assert [f["delivery_id"] for f in frames[1:3]] == [f["delivery_id"] for f in first[1:]]
    assert q.redelivered_total == 2
    check_accounting(q)


def test_release_only_touches_the_closed_connections_entries():
    q = make()
    push(q, "a", owner=CONN_A)
    push(q, "b", owner=CONN_B)
    assert mids(q.release(CONN_A)) == ["a"]
    assert q.waiting_count == 1 and q.unacked_count == 1
    assert q.release(CONN_A) == []


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "reject"])
def test_accounting_invariant_over_a_random_walk(policy):
    rng = random.Random(f"offline-{policy}")  # deterministic
    clock = FakeClock()
    q = make(clock=clock, offline_capacity=5, overflow_policy=policy, offline_ttl_s=3)
    owners = [object(), object()]
    online: list[object] = []
    for step in range(3000):
        op = rng.random()
        priority = rng.choice(["critical", "high", "normal", "low"])
        if op < 0.45:
            owner = online[-1] if online and rng.random() < 0.3 else None
            push(q, f"m{step}", priority, owner=owner, ttl_s=rng.choice([None, 0.5, 5]))
        elif op < 0.55:
            owner = rng.choice(owners)
            if owner not in online:
                online.append(owner)
            q.connect(owner)
        elif op < 0.65 and online:
            q.release(online.pop(rng.randrange(len(online))))
        elif op < 0.8:
            held = list(q._entries)
            q.ack(rng.sample(held, min(len(held), rng.randint(0, 3))) + ["dlv-unknown"])
        else:
            clock.advance(rng.random())
            q.sweep()
        check_accounting(q)
    assert q.expired_total and q.delivered_total and q.queued_total
    assert q.dropped_total + q.rejected_total > 0


def test_offer_rejects_programming_errors():
    q = make()
    with pytest.raises(ValueError, match="priority"):
        q.offer("m", "urgent", "push", {})
    with pytest.raises(ValueError, match="kind"):
        q.offer("m", "low", "gift", {})
    for bad_ttl in (0, -1, True, float("nan"), "5"):
        with pytest.raises(ValueError, match="ttl_s"):
            q.offer("m", "low", "push", {}, ttl_s=bad_ttl)
    assert q.offered_total == 0


def test_default_delivery_ids_are_unique_across_queues():
    a = OfflineQueue(Settings(), clock=FakeClock())
    b = OfflineQueue(Settings(), clock=FakeClock())
    ids = {push(q, f"m{i}").entry.delivery_id for q in (a, b) for i in range(5)}
    assert len(ids) == 10


# --------------------------------------------------------------------------- faults


def test_fault_ignore_priority_offline_delivers_fifo():
    q = make([F.IGNORE_PRIORITY_OFFLINE])
    push_all(q, PRIORITY_SPEC)
    assert mids(q.take_for_delivery(CONN_A)) == ["N1", "H1", "N2", "C", "L", "H2", "N3"]


def test_fault_ignore_ttl_never_expires():
    clock = FakeClock()
    q = make([F.IGNORE_TTL], clock=clock, offline_capacity=2, overflow_policy="reject", offline_ttl_s=1)
    push_all(q, "a:normal b:normal")
    clock.advance(100)
    assert q.next_expiry() is None and q.sweep() == 0
    assert push(q, "c").status == REJECTED  # still taking capacity
    assert mids(q.take_for_delivery(CONN_A)) == ["a", "b"] and q.expired_total == 0


def test_fault_evict_highest_breaks_acceptance_example_one():
    q = make([F.EVICT_HIGHEST], offline_capacity=3)
    out = push_all(q, "C:critical N1:normal N2:normal H:high")
    assert out["H"].status == QUEUED and out["H"].evicted.message_id == "C"
    assert mids(q.take_for_delivery(CONN_A)) == ["H", "N1", "N2"]
    out = push_all(make([F.EVICT_HIGHEST], offline_capacity=1), "H:high L:low")
    assert out["L"].status == QUEUED and out["L"].evicted.message_id == "H"  # lower accepted


def test_fault_lose_offline_announces_then_loses_without_a_trace():
    q = make([F.LOSE_OFFLINE])
    push_all(q, "a:normal b:high")
    queued, frames = q.connect(CONN_A)
    assert queued == 2 and frames == []
    assert q.held == 0 and q.totals()["delivered_total"] == 0 and q.expired_total == 0
    assert q.dropped_total == 0 and q.queued_total == 2  # accounting no longer adds up
    with pytest.raises(AssertionError):
        check_accounting(q)


def test_fault_no_redelivery_discards_unacked_on_close():
    q = make([F.NO_REDELIVERY])
    push_all(q, "a:normal b:normal")
    q.take_for_delivery(CONN_A)
    assert q.release(CONN_A) == []
    assert q.connect(CONN_B) == (0, []) and q.held == 0
    assert q.delivered_total == 2 and q.redelivered_total == 0  # counted as if acked


def test_fault_duplicate_delivery_sends_the_first_frame_twice():
    q = make([F.DUPLICATE_DELIVERY])
    push_all(q, "a:normal b:critical")
    queued, frames = q.connect(CONN_A)
    assert queued == 2 and mids(frames) == ["b", "b", "a"]
    assert frames[0] == frames[1] and frames[0]["redelivered"] is False
    assert q.held == 2 and q.redelivered_total == 0


def test_fault_policy_confusion_turns_reject_into_drop_newest():
    q = make([F.POLICY_CONFUSION], offline_capacity=1, overflow_policy="reject")
    push(q, "a")
    out = push(q, "b")
    assert out.status == DROPPED and out.entry is None
    assert (q.rejected_total, q.dropped_total) == (0, 1)
    # the other policies are untouched
    q2 = make([F.POLICY_CONFUSION], offline_capacity=1)
    push(q2, "a")
    assert push(q2, "b").evicted.message_id == "a"


def test_fault_lazy_expiry_keeps_expired_entries_taking_capacity():
    clock = FakeClock()
    q = make([F.LAZY_EXPIRY], clock=clock, offline_capacity=2, overflow_policy="reject", offline_ttl_s=1)
    push_all(q, "a:normal b:normal")
    clock.advance(5)
    assert q.next_expiry() is None and q.sweep() == 0 and q.held == 2
    assert push(q, "c").status == REJECTED  # expired entries still take capacity
    queued, frames = q.connect(CONN_A)  # only a delivery pass expires them
    assert queued == 0 and frames == [] and q.expired_total == 2 and q.held == 0


def test_fault_unbounded_offline_accepts_everything():
    q = make([F.UNBOUNDED_OFFLINE], offline_capacity=2, overflow_policy="reject")
    out = push_all(q, " ".join(f"m{i}:low" for i in range(10)))
    assert {o.status for o in out.values()} == {QUEUED}
    assert q.held == 10 and q.rejected_total == 0
