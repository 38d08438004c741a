"""A full collection's survivors are frozen (later full collections skip them), and a sweep puts them back once
so cycles among them can still be freed."""

from __future__ import annotations

import gc

from streams import gc_policy


def test_survivors_are_frozen_and_a_sweep_puts_them_back() -> None:
    gc.unfreeze()
    rows = [{"id": i, "spent": [i]} for i in range(1000)]  # long-lived, GC-tracked (lists inside)
    try:
        gc_policy.freeze_survivors(sweep_s=0)
        gc.collect()
        assert gc.get_freeze_count() >= len(rows)  # the rows were frozen after the full collection
        walked = len(gc.get_objects(2))
        assert walked < len(rows)  # the next full collection will not walk them

        gc_policy.freeze_survivors(sweep_s=1e-9)  # a sweep is due at the next full collection
        gc.collect()
        assert gc.get_freeze_count() == 0  # put back: the following one walks everything once
        gc_policy.freeze_survivors(sweep_s=3600)
        gc.collect()
        assert gc.get_freeze_count() >= len(rows)  # and then they are frozen again
    finally:
        gc_policy.stop_freezing()
        gc.unfreeze()
    del rows
