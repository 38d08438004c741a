"""Faust's choice of the next offset to commit, with and without streams/faust_patches.py's head check: the patched
one never commits past an offset no stream acked, unless retention deleted it (a known gap)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from streams import faust_patches

TP = ("sluice.responses", 0)


def _consumer(committed: int | None, acked: list[int], gap: tuple[int, int] | None = None) -> Any:
    fake = SimpleNamespace(
        _acked=defaultdict(list, {TP: list(acked)}),
        _acked_index=defaultdict(set, {TP: set(acked)}),
        _committed_offset=defaultdict(lambda: None, {TP: committed}),
        _gap=defaultdict(IntervalTree),
    )
    if gap:
        fake._gap[TP].addi(*gap)
    return fake


faust_patches.apply()
PATCHED = Consumer._new_offset
ORIGINAL = PATCHED.__wrapped__  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("committed", "acked"),
    [(2, [3, 4]), (0, [1, 2])],  # one event missing at the head; the head at offset 0
)
def test_faust_alone_commits_past_a_missing_head_and_the_patch_holds_it(committed: int, acked: list[int]) -> None:
    assert ORIGINAL(_consumer(committed, acked), TP) == acked[-1] + 1
    assert PATCHED(_consumer(committed, acked), TP) is None


def test_an_acked_head_commits_up_to_the_first_hole() -> None:
    assert PATCHED(_consumer(2, [2, 3, 5]), TP) == 4


def test_a_head_deleted_by_retention_is_committed_past() -> None:
    assert PATCHED(_consumer(2, [4], gap=(2, 4)), TP) == 5


def test_nothing_acked_commits_nothing() -> None:
    assert PATCHED(_consumer(2, []), TP) is None
