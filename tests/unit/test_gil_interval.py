"""The short GIL switch interval holds exactly while some local generation runs (nested and overlapping ones
included), so a worker answering only cached requests keeps Python's default."""

from __future__ import annotations

import asyncio
import sys

from workers.local import gil_interval


async def test_the_short_interval_holds_only_while_a_generation_runs() -> None:
    before = sys.getswitchinterval()
    gil_interval.configure(0.0002)
    try:
        sys.setswitchinterval(gil_interval.IDLE_S)
        with gil_interval.generating():
            assert sys.getswitchinterval() < 0.001
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(gil_interval.hold_until_done())  # a streamed generation overlapping it
        assert sys.getswitchinterval() < 0.001  # the streamed one still runs
        future.set_result(None)
        await asyncio.sleep(0)  # done-callbacks run on the loop
        assert abs(sys.getswitchinterval() - gil_interval.IDLE_S) < 1e-9
    finally:
        gil_interval.configure(gil_interval.IDLE_S)
        sys.setswitchinterval(before)
