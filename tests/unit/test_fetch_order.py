"""FetchOrder: an input partition's records reach the streams in offset order across seeks (no broker needed)."""

from __future__ import annotations

import itertools

from streams.policy.fetch_order import FetchOrder, Verdict

TP = ("sluice.requests", 2)


def test_in_order_records_pass_and_move_the_offset_due() -> None:
    order = FetchOrder()
    order.sought(TP, 1089)
    assert [order.verdict(TP, o, 0.0) for o in (1089, 1090, 1091)] == [Verdict.DELIVER] * 3
    assert order.due(TP) == 1092
    assert order.resyncs == 0


def test_a_partition_never_sought_takes_its_first_record_as_the_start() -> None:
    order = FetchOrder()
    assert order.verdict(TP, 40, 0.0) is Verdict.DELIVER
    assert order.due(TP) == 41


def test_a_batch_from_before_the_seek_is_dropped_and_the_partition_sought_back_once() -> None:
    """The rebalance race: sought to the committed 1089, then a batch fetched earlier at 1092.. arrives."""
    order = FetchOrder(settle_s=2.0)
    order.sought(TP, 1089)
    verdicts = [order.verdict(TP, o, 0.1) for o in (1092, 1093, 1094)]
    assert verdicts == [Verdict.SEEK, Verdict.DROP, Verdict.DROP]
    assert order.due(TP) == 1089 and order.resyncs == 1
    # after the seek the log is read again from 1089, in order: every offset reaches a stream, once
    delivered = [o for o in range(1089, 1096) if order.verdict(TP, o, 0.3) is Verdict.DELIVER]
    assert delivered == list(range(1089, 1096))
    assert order.due(TP) == 1096


def test_repeats_below_the_offset_due_pass_unchanged() -> None:
    """Offsets already delivered (a seek back by the lost-event guard) are Faust's to drop; they move nothing."""
    order = FetchOrder()
    order.sought(TP, 10)
    for o in (10, 11, 12):
        order.verdict(TP, o, 0.0)
    assert order.verdict(TP, 11, 0.0) is Verdict.DELIVER
    assert order.due(TP) == 13


def test_offsets_retention_deleted_end_in_reading_on_from_the_lowest_that_came() -> None:
    """Due 100 was deleted: the seek lands at the log start, 250. After ``settle_s`` reading goes on from there."""
    order = FetchOrder(settle_s=2.0)
    order.sought(TP, 100)
    assert order.verdict(TP, 300, 0.0) is Verdict.SEEK  # a stale batch first
    assert order.verdict(TP, 250, 0.5) is Verdict.DROP  # the log start, after the seek reset the fetch
    assert order.verdict(TP, 251, 0.6) is Verdict.DROP
    assert order.verdict(TP, 252, 2.5) is Verdict.SEEK  # settled: 100 is not coming back
    assert order.due(TP) == 250
    assert [order.verdict(TP, o, 2.6) for o in (250, 251, 252, 253)] == [Verdict.DELIVER] * 4
    assert order.resyncs == 2


def test_each_resync_moves_the_offset_due_forward_so_it_ends() -> None:
    order = FetchOrder(settle_s=1.0)
    order.sought(TP, 0)
    now, dues = 0.0, [0]
    for _ in range(20):  # the offset due never comes back: every round drops, then moves on
        order.verdict(TP, dues[-1] + 5, now)
        now += 0.1
        order.verdict(TP, dues[-1] + 3, now)
        now += 1.5
        order.verdict(TP, dues[-1] + 4, now)
        dues.append(order.due(TP) or 0)
    assert all(b > a for a, b in itertools.pairwise(dues))


def test_a_new_seek_replaces_a_resync_in_progress() -> None:
    order = FetchOrder(settle_s=2.0)
    order.sought(TP, 5)
    assert order.verdict(TP, 9, 0.0) is Verdict.SEEK
    order.sought(TP, 3)  # a rebalance seeks to the committed offset
    assert order.verdict(TP, 9, 0.1) is Verdict.SEEK  # a fresh resync for the new offset due
    assert order.due(TP) == 3
    order.forget(TP)
    assert order.due(TP) is None
