"""The History checkers: each must pass on a correct history and fail, naming messages, on a broken one."""

from MessagingLibrary.engine import checks
from MessagingLibrary.engine.history import History


def sent(history: History, message_id: str, seq: int | None = None, conn: str = "main", intended: int | None = None):
    frame = {"type": "user_message", "message_id": message_id}
    if seq is not None:
        frame["sequence_id"] = seq
    return history.record_sent(conn, frame, intended_ns=intended)


def got(history: History, kind: str, message_id: str, seq: int | None = None, conn: str = "main", ts: int | None = None):
    frame = {"type": kind, "message_id": message_id}
    if seq is not None:
        frame["sequence_id"] = seq
    return history.record_received(conn, frame, ts_ns=ts)


def numbered(n: int) -> History:
    history = History()
    for i in range(n):
        sent(history, f"m{i}", i)
    return history


def test_in_order_passes_and_counts():
    history = numbered(3)
    for i in range(3):
        got(history, "ai_response", f"m{i}", i)
    result = checks.responses_in_send_order(history.snapshot())
    assert result.ok and result.checked == 3


def test_reordering_is_named():
    history = numbered(3)
    for i in (0, 2, 1):
        got(history, "ai_response", f"m{i}", i)
    result = checks.responses_in_send_order(history.snapshot())
    assert not result.ok
    assert "m1 (sequence 1) was answered after m2 (sequence 2)" in result.summary()
    assert "connection main" in result.summary()


def test_order_is_per_connection():
    history = History()
    sent(history, "a0", conn="a")
    sent(history, "b0", conn="b")
    got(history, "ai_response", "b0", conn="b")
    got(history, "ai_response", "a0", conn="a")
    assert checks.responses_in_send_order(history.snapshot()).ok


def test_duplicates_are_named_with_counts():
    history = numbered(2)
    got(history, "ai_response", "m0")
    got(history, "ai_response", "m0")
    got(history, "ai_response", "m1")
    result = checks.no_duplicate_responses(history.snapshot())
    assert not result.ok and "m0 got 2 ai_response" in result.summary()


def test_unanswered_messages_are_named():
    history = numbered(3)
    got(history, "ai_response", "m0")
    got(history, "ai_response", "m2")
    result = checks.every_message_answered(history.snapshot())
    assert not result.ok and "m1 (sequence 1)" in result.summary()
    assert checks.delivery(history.snapshot()).ratio == 2 / 3


def test_exactly_one_outcome_accepts_each_kind_of_reply():
    history = numbered(3)
    sent(history, "m0", 0)  # a retry of m0
    got(history, "ai_response", "m0")
    got(history, "duplicate_rejected", "m0")
    got(history, "queue_full", "m1")
    got(history, "error", "m2")
    assert checks.exactly_one_outcome(history.snapshot()).ok


def test_exactly_one_outcome_catches_loss_and_double_answers():
    history = numbered(3)
    got(history, "ai_response", "m0")
    got(history, "ai_response", "m0")
    got(history, "queue_full", "m2")
    got(history, "ai_response", "m2")
    result = checks.exactly_one_outcome(history.snapshot())
    text = result.summary()
    assert len(result.problems) == 3
    assert "m0 (sequence 0) was answered 2 times" in text
    assert "m1 (sequence 1): 1 attempt(s) but no reply" in text
    assert "m2 (sequence 2): 1 attempt(s) but 2 replies" in text


def test_response_time_counts_from_the_intended_send_time():
    history = History()
    history.record_sent("main", {"type": "user_message", "message_id": "a"}, ts_ns=5_000_000, intended_ns=1_000_000)
    got(history, "ai_response", "a", ts=11_000_000)
    got(history, "ai_response", "a", ts=99_000_000)  # a duplicate does not count twice
    assert checks.response_times_ns(history.snapshot()) == [10_000_000]


def test_summary_lists_at_most_ten_and_counts_the_rest():
    history = numbered(15)
    text = checks.every_message_answered(history.snapshot()).summary()
    assert "15 of 15 failed" in text and "and 5 more" in text


def test_history_jsonl_round_trip(tmp_path):
    import orjson

    history = numbered(2)
    got(history, "ai_response", "m0")
    path = tmp_path / "h.jsonl"
    assert history.write_jsonl(path) == 3
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["dir"] for r in rows] == ["sent", "sent", "received"]
    assert rows[2]["frame"]["message_id"] == "m0"
