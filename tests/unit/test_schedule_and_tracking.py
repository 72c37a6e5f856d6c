"""Unit tests of the load engine's pure parts: schedules, interval sets, per-connection trackers."""

from __future__ import annotations

import pytest
from MessagingLibrary.engine import tracking
from MessagingLibrary.engine.schedule import Phase, Schedule
from MessagingLibrary.engine.tracking import ConnectionTracker, IntervalSet

# -- schedules ---------------------------------------------------------------------------------


def test_constant_phase_spaces_messages_evenly():
    phase = Phase("steady", 1000, 2.0)
    assert phase.count == 2000
    assert phase.offset_s(0) == 0
    assert phase.offset_s(1) == pytest.approx(0.001)
    assert phase.offset_s(1999) == pytest.approx(1.999)


def test_ramp_sends_the_integral_of_its_rate_and_speeds_up():
    ramp = Phase("ramp", 3000, 2.0, start_rate=1000)
    assert ramp.count == 4000  # (1000 + 3000) / 2 * 2 s
    gaps = [ramp.offset_s(i + 1) - ramp.offset_s(i) for i in (0, 3998)]
    assert gaps[0] == pytest.approx(1 / 1000, rel=0.01)
    assert gaps[1] == pytest.approx(1 / 3000, rel=0.01)
    assert ramp.offset_s(ramp.count) == pytest.approx(2.0, rel=1e-6)


def test_schedule_chains_phases_and_finds_each_message_phase():
    schedule = Schedule([Phase("a", 100, 1.0), Phase("b", 1000, 0.5)])
    assert schedule.total == 600
    assert schedule.duration_s == 1.5
    assert schedule.phase_of(99) == 0
    assert schedule.phase_of(100) == 1
    assert schedule.intended_offset_ns(100) == 1_000_000_000
    assert schedule.intended_offset_ns(101) == 1_001_000_000
    assert schedule.intended_offset_ns(599) < 1_500_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1000/s for 2 s", Phase("p", 1000, 2.0)),
        ("1000..5000/s for 30 s", Phase("p", 5000, 30.0, 1000)),
        ("250 msg/s for 500 ms", Phase("p", 250, 0.5)),
    ],
)
def test_phase_parse(text, expected):
    assert Phase.parse("p", text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("fast for 2 s", "cannot read 'fast for 2 s'"),
        ("1000/s for ever", "'ever' is not a duration"),
        ("1000/s", "cannot read"),
    ],
)
def test_phase_parse_refuses_unreadable_text_naming_it(text, fragment):
    with pytest.raises(ValueError, match="Load phase 'warm-up'") as error:
        Phase.parse("warm-up", text)
    assert fragment in str(error.value)


def test_phase_and_schedule_refuse_bad_values():
    with pytest.raises(ValueError, match="duration must be > 0"):
        Phase("p", 100, 0)
    with pytest.raises(ValueError, match="rate must be"):
        Phase("p", -1, 1)
    with pytest.raises(ValueError, match="repeated: p"):
        Schedule([Phase("p", 1, 1), Phase("p", 1, 1)])
    with pytest.raises(ValueError, match="at least one phase"):
        Schedule([])


# -- interval sets -----------------------------------------------------------------------------


def test_interval_set_in_order_stays_one_interval():
    s = IntervalSet()
    for x in range(10_000):
        assert s.add(x) is True
    assert s.intervals == 1
    assert len(s) == 10_000
    assert list(s.missing(10_000)) == []


def test_interval_set_gaps_duplicates_and_joins():
    s = IntervalSet()
    for x in (0, 1, 2, 5, 6, 9):
        s.add(x)
    assert s.add(5) is False
    assert list(s.missing(11)) == [(3, 5), (7, 9), (10, 11)]
    s.add(3)
    s.add(4)  # joins [0,5) and [5,7)
    s.add(8)
    s.add(7)
    assert s.intervals == 1
    assert s.count_missing(10) == 0
    assert 9 in s and 10 not in s


def test_interval_set_memory_is_bounded_however_many_gaps(monkeypatch):
    monkeypatch.setattr(tracking, "MAX_INTERVALS", 8)
    s = IntervalSet()
    for x in range(0, 200, 2):  # every other one lost: a gap per message
        s.add(x)
    assert s.intervals == 8
    assert s.horizon > 0
    assert s.add(0) is None  # below the horizon: no longer judged
    assert len(s) == 100


# -- trackers ----------------------------------------------------------------------------------


def answer_all(tracker: ConnectionTracker, order, name="c0"):
    for seq in order:
        tracker.on_answer(seq, 1_000_000, name)


def test_tracker_in_order_has_no_violations():
    tracker = ConnectionTracker(0, scheduled=5, sent=5)
    answer_all(tracker, range(5))
    assert (tracker.reordered, tracker.duplicated, tracker.unsettled, tracker.gaps) == (0, 0, 0, 0)
    assert tracker.mean_latency_s == pytest.approx(0.001)


def test_tracker_names_reordering_duplicates_and_gaps():
    tracker = ConnectionTracker(3, scheduled=10, sent=10)
    answer_all(tracker, [0, 2, 1, 2, 5], name="c3")
    assert tracker.reordered == 1
    assert tracker.duplicated == 1
    assert "sequence 1 arrived after 2 on connection c3" in tracker.examples
    assert "sequence 2 answered twice on connection c3" in tracker.examples
    assert tracker.unsettled == 6  # 3, 4, 6, 7, 8, 9
    assert tracker.gaps == 2
    assert list(tracker.unsettled_sequences()) == [3, 4, 6, 7, 8, 9]


def test_tracker_outcomes_other_than_answers_settle_but_do_not_deliver():
    tracker = ConnectionTracker(0, scheduled=4, sent=4)
    tracker.on_answer(0, 10, "c0")
    tracker.on_other_outcome(1, "queue_full")
    tracker.on_other_outcome(2, "duplicate_rejected")
    tracker.on_other_outcome(3, "error")
    assert tracker.unsettled == 0
    assert tracker.delivered_count == 2  # the answer and the confirmation
    assert (tracker.refused, tracker.confirmed, tracker.errors) == (1, 1, 1)


def test_tracker_answer_after_confirmation_is_not_a_duplicate():
    tracker = ConnectionTracker(0, scheduled=1, sent=1)
    tracker.on_other_outcome(0, "duplicate_rejected")  # the retry's confirmation came first
    tracker.on_answer(0, 10, "c0")  # then the original's answer
    assert tracker.duplicated == 0
    assert tracker.delivered_count == 1
