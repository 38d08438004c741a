"""Python's GIL switch interval: short while a local model generates, Python's default otherwise.

A model thread re-takes the GIL after every llama.cpp call (several per token); at Python's default 5 ms interval
it can wait that long each time, and a generation in the worker ran at 0.4x the bare model's speed
(bench/local_bench.py). A short interval fixes that, but costs the event loop a forced GIL hand-off to Faust's
consumer thread every fraction of a millisecond: with 0.2 ms always on, a one-group worker answering exact hits
spent 12% more CPU per answer (bench/hot_path_profile.py, 900/s, alternating runs). So the short interval holds
only while some generation is running. Called from the event loop's thread only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

IDLE_S = 0.005  # Python's default
_busy_s = IDLE_S
_running = 0


def configure(busy_s: float) -> None:
    """The interval while a generation runs (``Settings.gil_switch_interval_s``)."""
    global _busy_s
    _busy_s = busy_s
    if _running:
        sys.setswitchinterval(busy_s)


def _enter() -> None:
    global _running
    _running += 1
    if _running == 1 and _busy_s != IDLE_S:
        sys.setswitchinterval(_busy_s)


def _exit(*_: object) -> None:
    global _running
    _running -= 1
    if _running == 0 and _busy_s != IDLE_S:
        sys.setswitchinterval(IDLE_S)


@contextmanager
def generating() -> Iterator[None]:
    """Hold the short interval for the duration of one generation."""
    _enter()
    try:
        yield
    finally:
        _exit()


def hold_until_done() -> Callable[[object], None]:
    """Hold the short interval from now until the future this is added to as a done-callback completes."""
    _enter()
    return _exit
