"""The client-side offline-queue model and checks: pass on a correct history, fail naming messages."""

import pytest

from MessagingLibrary.engine import offline
from MessagingLibrary.engine.history import History

USER = "user-1"
S = 1_000_000_000  # one second in ns


class World:
    """A History written the way the library writes it: pushes, results, connects, deliveries."""

    def __init__(self) -> None:
        self.history = History()
        self.n = 0
        self.clock = 0

    def tick(self, ns: int = 1_000_000) -> int:
        self.clock += ns
        return self.clock

    def push(self, label: str, priority: str = "normal", status: str = "queued", *, evicted: str | None = None,
             pusher: str = "admin", ttl: float | None = None, size: int | None = None, reason: str | None = None) -> str:
        self.n += 1
        message_id = f"push-{self.n}-{label}"
        frame = {"type": "push", "to_user": USER, "message_id": message_id, "content": label,
                 "priority": priority, "request_id": f"r{self.n}"}
        if ttl is not None:
            frame["ttl_s"] = ttl
        self.history.record_sent(pusher, frame, ts_ns=self.tick())
        result = {"type": "push_result", "message_id": message_id, "status": status, "request_id": f"r{self.n}"}
        if evicted:
            result["evicted_message_id"] = self.id_of(evicted)
        if size is not None:
            result["offline_size"] = size
        if reason:
            result["reason"] = reason
        self.history.record_received(pusher, result, ts_ns=self.tick())
        return message_id

    def id_of(self, label: str) -> str:
        for event in self.history.snapshot():
            if event.type == "push" and event.frame["content"] == label:
                return event.frame["message_id"]
        raise KeyError(label)

    def connect(self, what: str = "reconnected", at: int | None = None) -> None:
        started = self.tick() if at is None else at
        self.clock = max(self.clock, started)
        self.history.record_connection("alice", what, handshake_ns=1000, started_ns=started)

    def deliver(self, label: str, *, redelivered: bool = False, delivery_id: str | None = None) -> None:
        push = next(e.frame for e in self.history.snapshot() if e.type == "push" and e.frame["content"] == label)
        frame = {"type": "pushed_message", "message_id": push["message_id"], "content": label,
                 "priority": push["priority"], "delivery_id": delivery_id or f"d-{push['message_id']}",
                 "queued_at": 1, "redelivered": redelivered}
        self.history.record_received("alice", frame, ts_ns=self.tick())

    def pushes(self):
        return offline.pushes_to(self.history.snapshot(), USER)

    def deliveries(self):
        return offline.deliveries_on(self.history.snapshot(), "alice")


def test_labels_take_an_optional_priority():
    assert offline.parse_label("H1:high") == ("H1", "high")
    assert offline.parse_label("N1") == ("N1", "normal")
    assert offline.parse_label("x", "low") == ("x", "low")
    with pytest.raises(ValueError, match="Unknown priority 'urgent'"):
        offline.parse_label("U:urgent")
    with pytest.raises(ValueError, match="Empty message label"):
        offline.parse_label(":high")
    assert offline.split_labels(["N1 N2", "H1:high"]) == ["N1", "N2", "H1:high"]
    assert offline.parse_label("Note: meet at 10:30") == ("Note: meet at 10:30", "normal")
    assert offline.parse_label("Report ready:CRITICAL") == ("Report ready", "critical")
    with pytest.raises(ValueError, match="Unknown priority 'hihg'"):
        offline.parse_label("H1:hihg")


def test_pushes_are_joined_with_their_results():
    world = World()
    world.push("N1", size=1)
    world.push("N2", status="rejected", reason="full")
    pushes = world.pushes()
    assert [(p.label, p.status, p.offline_size) for p in pushes] == [("N1", "queued", 1), ("N2", "rejected", None)]
    assert pushes[1].reason == "full"


PUSHED = [("N1", "normal"), ("H1", "high"), ("N2", "normal"), ("C", "critical"), ("L", "low"), ("H2", "high"),
          ("N3", "normal")]


def priority_world(delivered: list[str]) -> World:
    world = World()
    world.connect("opened")
    for label, priority in PUSHED:
        world.push(label, priority)
    world.connect()
    for label in delivered:
        world.deliver(label)
    return world


def test_priority_order_passes_for_the_catalogue_example():
    world = priority_world(["C", "H1", "H2", "N1", "N2", "N3", "L"])
    result = offline.priority_order(world.deliveries(), world.pushes())
    assert result.ok and result.checked == 7


def test_fifo_delivery_is_named_as_a_priority_violation():
    world = priority_world(["N1", "H1", "N2", "C", "L", "H2", "N3"])
    result = offline.priority_order(world.deliveries(), world.pushes())
    assert not result.ok
    assert "H1 (high) was delivered after N1 (normal): higher priority must come first" in result.summary()


def test_fifo_within_a_priority_is_checked_per_pusher():
    world = priority_world(["C", "H2", "H1", "N1", "N2", "N3", "L"])
    result = offline.priority_order(world.deliveries(), world.pushes())
    assert "H1 (high) was delivered after H2 (high) although pushed earlier by admin" in result.summary()


def test_concurrent_pushers_have_no_order_between_them():
    world = World()
    world.connect("opened")
    world.push("A1", pusher="p1")
    world.push("B1", pusher="p2")
    world.push("A2", pusher="p1")
    world.connect()
    for label in ("B1", "A1", "A2"):
        world.deliver(label)
    assert offline.priority_order(world.deliveries(), world.pushes()).ok
    world.connect()
    for label in ("A2", "A1"):
        world.deliver(label, redelivered=True)
    assert "A1 (normal) was delivered after A2 (normal)" in offline.priority_order(world.deliveries(), world.pushes()).summary()


def test_duplicates_within_a_pass_and_without_the_flag_are_named():
    world = priority_world(["C", "C", "H1"])
    result = offline.no_duplicate_deliveries(world.deliveries())
    assert result.summary() == (
        "No duplicate deliveries: 1 of 2 failed: C (critical) (delivery d-push-4-C) arrived 2 times in one "
        "delivery pass, 2 of them without redelivered: true"
    )


def test_a_repeat_in_a_later_pass_without_the_flag_is_named():
    world = priority_world(["C"])
    world.connect()
    world.deliver("C")
    assert "C (critical) (delivery d-push-4-C) arrived again without redelivered: true" in (
        offline.no_duplicate_deliveries(world.deliveries()).summary()
    )


def test_a_flagged_redelivery_after_reconnect_is_not_a_duplicate():
    world = priority_world(["C"])
    world.connect()
    world.deliver("C", redelivered=True)
    assert offline.no_duplicate_deliveries(world.deliveries()).ok


def test_one_message_under_two_delivery_ids_is_a_duplicate():
    world = priority_world([])
    world.deliver("C", delivery_id="d1")
    world.deliver("C", delivery_id="d2")
    assert "delivered under 2 delivery ids" in offline.no_duplicate_deliveries(world.deliveries()).summary()


def test_evicting_the_lowest_priority_passes_and_the_highest_fails():
    world = World()
    for label, priority in (("C", "critical"), ("N1", "normal"), ("N2", "normal")):
        world.push(label, priority)
    world.push("H", "high", evicted="N1")
    result = offline.evictions_respect_priority(world.pushes())
    assert result.ok and result.checked == 1

    bad = World()
    for label, priority in (("C", "critical"), ("N1", "normal"), ("N2", "normal")):
        bad.push(label, priority)
    bad.push("H", "high", evicted="C")
    summary = offline.evictions_respect_priority(bad.pushes()).summary()
    assert "pushing H (high) evicted C (critical) while N1 (normal), N2 (normal), H (high) (lower priority)" in summary


def test_evicting_for_a_lower_priority_incoming_message_fails():
    world = World()
    world.push("N1")
    world.push("L1", "low", evicted="N1")
    assert "evicted N1 (normal) while L1 (low) (lower priority) was queued or incoming" in (
        offline.evictions_respect_priority(world.pushes()).summary()
    )


def account(world: World, **kwargs):
    defaults = {"connects": offline.connects_on(world.history.snapshot(), "alice"), "default_ttl_s": 300.0,
                "server_expired": 0}
    defaults.update(kwargs)
    return offline.account(world.pushes(), world.deliveries(), **defaults)


def test_accounting_sorts_every_push():
    world = World()
    world.connect("opened")
    world.push("N1")
    world.push("N2", evicted="N1")
    world.push("N3", status="dropped")
    world.push("N4", status="rejected")
    world.connect()
    world.deliver("N2")
    books = account(world)
    assert books.counts() == {"pushed": 4, "delivered": 1, "dropped": 2, "rejected": 1, "expired": 0, "unaccounted": 0}
    assert books.result().ok


def test_a_queued_message_never_delivered_before_its_ttl_is_lost():
    world = World()
    world.push("N1")
    world.push("N2")
    world.connect()
    world.deliver("N2")
    books = account(world)
    assert [p.label for p in books.unaccounted] == ["N1"]
    assert "N1 (normal) was queued but never delivered before its TTL ran out: lost" in books.result().summary()


def test_expired_messages_are_accounted_when_the_server_agrees():
    world = World()
    world.push("I1", ttl=2.0)
    world.push("F1", ttl=2.0)
    world.connect(at=world.clock + 3 * S)
    world.deliver("F1")
    books = account(world, server_expired=1)
    assert [p.label for p in books.expired] == ["I1"]
    # F1 was received long after its TTL: that is a violation (expired messages must not be delivered)
    assert "F1 (normal) was delivered" in books.result().summary() and "after its TTL of 2 s ran out" in books.result().summary()
    assert "the server counts 0 expired, but 1" in account(world, server_expired=0).result().summary()


def test_a_message_reported_dropped_but_delivered_is_named():
    world = World()
    world.push("N1", status="dropped")
    world.connect()
    world.deliver("N1")
    assert "N1 (normal) was reported dropped but was delivered" in account(world).result().summary()


def test_a_push_without_result_is_unaccounted():
    world = World()
    world.history.record_sent("admin", {"type": "push", "to_user": USER, "message_id": "m", "content": "X",
                                        "request_id": "r9"})
    books = account(world)
    assert "X (normal) got no push_result (no reply)" in books.result().summary()
