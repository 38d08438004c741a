"""The lost-event verdict and its two-check confirmation (streams/policy/lost_events.py)."""

from __future__ import annotations

from streams.policy.lost_events import LostEventTracker, PartitionView, lost_head


def test_a_head_nobody_holds_is_lost_once_a_later_event_was_taken() -> None:
    assert lost_head(PartitionView(committed=100, acked=[101, 102], taken=[])) == 100
    assert lost_head(PartitionView(committed=100, acked=[], taken=[150])) == 100


def test_a_head_that_is_acked_in_flight_or_not_yet_reached_is_not_lost() -> None:
    assert lost_head(PartitionView(committed=100, acked=[100, 101], taken=[])) is None  # commit pending
    assert lost_head(PartitionView(committed=100, acked=[101, 102], taken=[100])) is None  # still processing
    assert lost_head(PartitionView(committed=100, acked=[], taken=[])) is None  # idle or queued
    assert lost_head(PartitionView(committed=100, acked=[90], taken=[99])) is None  # nothing after the head
    assert lost_head(PartitionView(committed=None, acked=[5, 6], taken=[])) is None  # unknown head


def test_a_head_the_log_holds_is_lost_when_the_process_is_idle() -> None:
    # Every event after a drop was dropped too: nothing later is taken, but the log goes on past the head.
    assert lost_head(PartitionView(committed=100, acked=[], taken=[], end=106, idle=True)) == 100
    assert lost_head(PartitionView(committed=100, acked=[], taken=[], end=106, idle=False)) is None  # may be queued
    assert lost_head(PartitionView(committed=100, acked=[], taken=[], end=100, idle=True)) is None  # caught up
    assert lost_head(PartitionView(committed=100, acked=[], taken=[], end=None, idle=True)) is None  # not fetched


def test_an_offset_the_log_skips_is_not_lost() -> None:
    view = PartitionView(committed=100, acked=[103], taken=[], absent=lambda o: 100 <= o < 103)
    assert lost_head(view) is None


def test_the_tracker_acts_on_the_second_sighting_then_cools_down() -> None:
    tracker = LostEventTracker(cooldown_s=60)
    assert not tracker.observe("p0", 100, generation=3, now=0)
    assert tracker.observe("p0", 100, generation=3, now=10)  # seen twice: seek
    assert not tracker.observe("p0", 100, generation=3, now=20)  # the re-read event may be queued
    assert not tracker.observe("p0", 100, generation=3, now=30)
    assert not tracker.observe("p0", 100, generation=3, now=75)  # cool-down over: a first sighting again
    assert tracker.observe("p0", 100, generation=3, now=85)


def test_the_tracker_needs_the_same_head_and_generation_twice() -> None:
    tracker = LostEventTracker(cooldown_s=60)
    assert not tracker.observe("p0", 100, generation=3, now=0)
    assert not tracker.observe("p0", 120, generation=3, now=10)  # the head moved: a new suspicion
    assert not tracker.observe("p0", 120, generation=4, now=20)  # a rebalance in between
    assert not tracker.observe("p0", None, generation=4, now=30)  # cleared
    assert not tracker.observe("p0", 120, generation=4, now=40)
    assert tracker.observe("p0", 120, generation=4, now=50)
    assert not tracker.observe("p1", 7, generation=4, now=50)  # partitions are independent


def test_reset_forgets_suspicions() -> None:
    tracker = LostEventTracker(cooldown_s=60)
    tracker.observe("p0", 100, generation=3, now=0)
    tracker.reset()
    assert not tracker.observe("p0", 100, generation=3, now=10)
