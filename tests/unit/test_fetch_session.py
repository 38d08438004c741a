"""Fetch-session bookkeeping (streams/policy/fetch_session.py): which partitions each fetch names, and when a
session starts again. The broker side of it runs in tests/integration/test_fetch_sessions.py."""

from __future__ import annotations

from streams.policy.fetch_session import FINAL_EPOCH, INITIAL_EPOCH, MAX_EPOCH, FetchSession

A, B, C = ("t", 0), ("t", 1), ("u", 0)


def established(wanted: dict) -> FetchSession:
    session = FetchSession()
    session.plan(wanted)
    assert session.on_response(0, 77)
    return session


def test_the_first_fetch_is_full_and_asks_for_a_session() -> None:
    session = FetchSession()
    plan = session.plan({A: (5, 1024), B: (9, 1024)})
    assert (plan.session_id, plan.epoch, plan.full) == (0, INITIAL_EPOCH, True)
    assert plan.send == {A: (5, 1024), B: (9, 1024)} and plan.forget == []
    assert session.on_response(0, 77)
    assert (session.session_id, session.epoch) == (77, 1)


def test_later_fetches_name_only_moved_added_and_forgotten_partitions() -> None:
    session = established({A: (5, 1024), B: (9, 1024)})
    plan = session.plan({A: (5, 1024), B: (9, 1024)})
    assert (plan.session_id, plan.epoch, plan.full, plan.send, plan.forget) == (77, 1, False, {}, [])
    assert session.on_response(0, 77)
    plan = session.plan({A: (8, 1024), C: (0, 1024)})  # A moved on, B paused or moved away, C added
    assert plan.epoch == 2 and plan.send == {A: (8, 1024), C: (0, 1024)} and plan.forget == [B]
    assert session.on_response(0, 77)
    plan = session.plan({A: (8, 1024), C: (0, 1024), B: (9, 1024)})  # B back: named again
    assert plan.epoch == 3 and plan.send == {B: (9, 1024)} and plan.forget == []


def test_a_session_error_drops_the_answer_and_the_next_fetch_is_full() -> None:
    session = established({A: (5, 1024)})
    session.plan({A: (6, 1024)})
    assert not session.on_response(70, 0)  # FETCH_SESSION_ID_NOT_FOUND
    plan = session.plan({A: (6, 1024)})
    assert plan.full and plan.session_id == 0 and plan.send == {A: (6, 1024)}


def test_a_failed_or_abandoned_request_starts_a_new_session() -> None:
    session = established({A: (5, 1024)})
    session.plan({A: (6, 1024)})
    session.reset()
    plan = session.plan({A: (6, 1024)})
    assert plan.full and plan.epoch == INITIAL_EPOCH


def test_a_broker_that_makes_no_session_gets_full_fetches() -> None:
    session = FetchSession()
    session.plan({A: (5, 1024)})
    assert session.on_response(0, 0)  # answered, but no session (cache full or sessions off)
    assert session.plan({A: (5, 1024)}).full
    assert session.on_response(0, 0)
    assert session.plan({A: (5, 1024)}).full


def test_an_answer_for_another_session_is_used_but_the_session_restarts() -> None:
    session = established({A: (5, 1024)})
    session.plan({A: (5, 1024)})
    assert session.on_response(0, 99)
    assert session.plan({A: (5, 1024)}).full


def test_versions_without_sessions_get_session_less_full_fetches_from_then_on() -> None:
    session = FetchSession()
    session.plan({A: (5, 1024)})
    assert session.on_response(0, None)
    plan = session.plan({A: (5, 1024)})
    assert plan.full and plan.epoch == FINAL_EPOCH and plan.send == {A: (5, 1024)}


def test_the_epoch_wraps_to_one() -> None:
    session = established({A: (5, 1024)})
    session.epoch = MAX_EPOCH
    session.plan({A: (5, 1024)})
    assert session.on_response(0, 77)
    assert session.epoch == 1


def test_an_answer_without_a_pending_plan_starts_again() -> None:
    session = established({A: (5, 1024)})
    assert not session.on_response(0, 77)
    assert session.plan({A: (5, 1024)}).full
