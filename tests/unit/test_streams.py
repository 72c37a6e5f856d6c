"""The agent run book (engine/streams.py): each figure on a synthetic run whose answer is known,
every integrity class with its witness, and memory that does not grow with the load run."""

from __future__ import annotations

import tracemalloc

import pytest
from MessagingLibrary.engine.streams import (
    ANSWER_CHUNK,
    COMPLETE,
    CROSS_TALK,
    DUPLICATED_FINAL,
    ORPHAN,
    OUT_OF_ORDER,
    STALLED,
    STARTED,
    THINKING,
    TOOL_COMPLETED,
    TOOL_EXECUTING,
    TRUNCATED,
    StreamBook,
)

MS = 1_000_000
T0 = 10_000 * MS  # the intended send time of the synthetic message (any clock origin)


def play(book: StreamBook, key=(0, 0), events=(), final_at=None, intended=T0, name="m-0", final="ai_response"):
    """Feed ``events`` = [(ms after intended, event, tool, text)], then a final at ``final_at`` ms."""
    for at, event, tool, text in events:
        book.event(key, "c0", name, intended, event, intended + at * MS, tool=tool, text=text)
    if final_at is not None:
        book.final(key, "c0", name, intended, final, intended + final_at * MS)


GOLDEN = [
    (100, STARTED, None, None),
    (150, THINKING, None, None),
    (200, TOOL_EXECUTING, "search", None),
    (260, TOOL_COMPLETED, "search", None),
    (300, ANSWER_CHUNK, None, "abcd"),
    (400, ANSWER_CHUNK, None, "efghij"),
]


def test_each_figure_of_a_known_run():
    book = StreamBook(stall_threshold_s=1.0)
    play(book, events=GOLDEN, final_at=500)
    book.finish()
    figures = book.figures()
    assert figures["classes"][COMPLETE] == 1 and book.anomalies == 0
    assert figures["time_to_first_event"]["p50_s"] == pytest.approx(0.100, rel=1e-3)
    assert figures["time_to_first_progress"]["p50_s"] == pytest.approx(0.150, rel=1e-3)
    assert figures["time_to_final"]["p50_s"] == pytest.approx(0.500, rel=1e-3)
    # gaps: 50, 50, 60, 40, 100 (chunk to chunk), 100 (last chunk to the final)
    gaps = figures["inter_event_gap"]
    assert gaps["count"] == 6
    assert gaps["min_s"] == pytest.approx(0.040, rel=1e-3)
    assert gaps["max_s"] == pytest.approx(0.100, rel=1e-3)
    assert gaps["mean_s"] == pytest.approx(0.400 / 6, rel=1e-2)
    assert figures["events_per_run"]["p50_events"] == 7  # six events and the final
    # after the first chunk: 6 characters from +300 ms to +400 ms
    assert figures["chars_per_second"]["p50_chars"] == 60


def test_a_final_without_events_is_the_first_event_and_has_no_progress_or_gap():
    book = StreamBook(1.0)
    play(book, final_at=30)
    figures = book.figures()
    assert figures["time_to_first_event"]["p50_s"] == pytest.approx(0.030, rel=1e-3)
    assert figures["time_to_first_progress"]["count"] == 0
    assert figures["inter_event_gap"]["count"] == 0
    assert figures["events_per_run"]["p50_events"] == 1
    assert figures["chars_per_second"]["count"] == 0


def test_gaps_are_pooled_over_runs_not_averaged_per_run():
    book = StreamBook(1.0)
    play(book, (0, 0), [(10, STARTED, None, None)], final_at=20, name="a")  # one gap of 10 ms
    play(book, (0, 1), [(10, STARTED, None, None), (20, THINKING, None, None), (30, THINKING, None, None)],
         final_at=330, name="b")  # gaps 10, 10, 300
    gaps = book.figures()["inter_event_gap"]
    assert gaps["count"] == 4
    assert gaps["mean_s"] == pytest.approx(0.330 / 4, rel=1e-2)


def witness(book: StreamBook, anomaly: str) -> str:
    [text, *_] = book.witnesses[anomaly]
    return text


def test_truncated_names_the_last_event_and_why_the_wait_ended():
    book = StreamBook(1.0)
    play(book, events=GOLDEN[:2])
    book.finish({"c0": "before the connection closed"})
    assert book.counts[TRUNCATED] == 1 and book.counts[COMPLETE] == 0
    assert witness(book, TRUNCATED).startswith(
        "run 'm-0' on connection c0: no final outcome before the connection closed; "
        "its last event was agent_thinking at +0.150 s (2 event(s))"
    )


def test_messages_with_no_event_at_all_are_truncated_too():
    book = StreamBook(1.0)
    book.finish({"c1": "within the drain timeout (5 s)"}, unseen=[("c1", "m-9")], unseen_count=3)
    assert book.counts[TRUNCATED] == 3
    assert witness(book, TRUNCATED) == "run 'm-9' on connection c1: no event and no final outcome within the drain timeout (5 s)"


def test_stalled_names_the_two_events_around_the_gap():
    book = StreamBook(stall_threshold_s=1.0)
    play(book, events=[(50, STARTED, None, None), (2550, THINKING, None, None)], final_at=2600)
    assert book.counts[STALLED] == 1 and book.counts[COMPLETE] == 0
    assert witness(book, STALLED) == (
        "run 'm-0' on connection c0: 2.500 s passed between agent_started at +0.050 s and agent_thinking at "
        "+2.550 s, over the stall threshold of 1 s"
    )


def test_a_gap_at_the_threshold_is_not_a_stall_and_time_to_first_event_never_is():
    book = StreamBook(stall_threshold_s=1.0)
    play(book, events=[(3000, STARTED, None, None), (4000, THINKING, None, None)], final_at=4500)
    assert book.counts[COMPLETE] == 1 and book.counts[STALLED] == 0


def test_an_event_before_agent_started_is_out_of_order():
    book = StreamBook(1.0)
    play(book, events=[(50, THINKING, None, None), (60, STARTED, None, None)], final_at=90)
    assert book.counts[OUT_OF_ORDER] == 1
    # the witness is the run as it stood when the rule broke: the smallest one
    assert witness(book, OUT_OF_ORDER) == (
        "run 'm-0' on connection c0: agent_thinking at +0.050 s came before any agent_started. Events: "
        "agent_thinking +0.050 s"
    )


def test_a_tool_completed_without_its_tool_executing_is_out_of_order():
    book = StreamBook(1.0)
    play(book, events=[(10, STARTED, None, None), (1204, TOOL_COMPLETED, "search", None)], final_at=1300)
    assert witness(book, OUT_OF_ORDER).startswith(
        "run 'm-0' on connection c0: tool_completed 'search' at +1.204 s has no tool_executing before it"
    )


def test_a_tool_still_executing_at_the_final_is_out_of_order():
    book = StreamBook(1.0)
    play(book, events=[(10, STARTED, None, None), (20, TOOL_EXECUTING, "search", None)], final_at=30)
    assert "tool_executing 'search' never completed before the final outcome" in witness(book, OUT_OF_ORDER)


def test_an_event_after_the_final_moves_a_complete_run_to_out_of_order():
    book = StreamBook(1.0)
    play(book, events=GOLDEN, final_at=500)
    assert book.counts[COMPLETE] == 1
    book.event((0, 0), "c0", "m-0", T0, THINKING, T0 + 530 * MS)
    assert book.counts[COMPLETE] == 0 and book.counts[OUT_OF_ORDER] == 1
    assert witness(book, OUT_OF_ORDER) == (
        "run 'm-0' on connection c0: agent_thinking at +0.530 s came after its final outcome "
        "(its final outcome came at +0.500 s)"
    )


def test_a_second_final_is_a_duplicated_final():
    book = StreamBook(1.0)
    play(book, events=GOLDEN, final_at=500)
    book.final((0, 0), "c0", "m-0", T0, "ai_response", T0 + 501 * MS)
    assert book.counts[COMPLETE] == 0 and book.counts[DUPLICATED_FINAL] == 1
    assert witness(book, DUPLICATED_FINAL) == (
        "run 'm-0' on connection c0: a second final outcome (ai_response) at +0.501 s; the first came at +0.500 s"
    )
    # figures are those of the first final only
    assert book.figures()["time_to_final"]["count"] == 1


def test_a_second_agent_started_is_out_of_order():
    book = StreamBook(1.0)
    play(book, events=[(10, STARTED, None, None), (20, STARTED, None, None)], final_at=30)
    assert "a second agent_started at +0.020 s" in witness(book, OUT_OF_ORDER)


def test_foreign_events_count_as_orphan_and_cross_talk():
    book = StreamBook(1.0)
    book.foreign(ORPHAN, "c2", THINKING, None, "names run_id 'x', a run this load run never started")
    book.foreign(CROSS_TALK, "c1", STARTED, 40 * MS, "of run 'm-0', which connection c0's user started")
    assert book.counts[ORPHAN] == 1 and book.counts[CROSS_TALK] == 1
    assert witness(book, CROSS_TALK) == (
        "connection c1: agent_started at +0.040 s of the run of run 'm-0', which connection c0's user started"
    )


def test_a_run_with_its_run_id_is_named_by_both():
    book = StreamBook(1.0)
    book.event((0, 0), "c0", "m-0", T0, THINKING, T0 + 5 * MS, run_id="r-17")
    assert witness(book, OUT_OF_ORDER).startswith("run 'r-17' (message 'm-0') on connection c0: agent_thinking")


def test_a_refused_message_is_no_run():
    book = StreamBook(1.0)
    book.refused((0, 3))
    book.finish()
    assert book.runs == 0 and book.anomalies == 0 and book.is_done((0, 3))


def test_the_stall_threshold_must_be_positive():
    with pytest.raises(ValueError, match="stall threshold must be a positive time"):
        StreamBook(0)


def _many(book: StreamBook, runs: int) -> None:
    """``runs`` golden runs over 4 connections, five of them in flight at any moment."""
    for n in range(runs):
        key = (n % 4, n // 4)
        intended = n * 10 * MS
        for at, event, tool, text in GOLDEN:
            book.event(key, f"c{key[0]}", f"m-{n}", intended, event, intended + at * MS, tool=tool, text=text)
        if n >= 5:  # the final of a run five messages back
            k = n - 5
            done = (k % 4, k // 4)
            book.final(done, f"c{done[0]}", f"m-{k}", k * 10 * MS, "ai_response", k * 10 * MS + 500 * MS)


@pytest.mark.parametrize("runs", [20_000])
def test_a_run_twice_as_long_keeps_no_more_for_its_runs(runs):
    """Retained objects are equal, and traced memory grows by no more than a few KiB, from N to 2N runs."""
    short, long = StreamBook(1.0), StreamBook(1.0)
    tracemalloc.start()
    try:
        _many(short, runs)
        short_bytes = tracemalloc.get_traced_memory()[0]
        del short
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        _many(long, 2 * runs)
        long_bytes = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert long.retained() <= StreamBook(1.0).retained() + len(long.active) + 4 + 1024 + 4096
    assert len(long.active) == 5
    assert long_bytes <= short_bytes + 64 * 1024, (short_bytes, long_bytes)


def test_retained_objects_do_not_grow_with_the_number_of_runs():
    counts = []
    for runs in (5_000, 10_000):
        book = StreamBook(1.0)
        _many(book, runs)
        counts.append(book.retained())
    assert counts[0] == counts[1]
