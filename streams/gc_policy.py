"""Garbage-collector pauses of a long-running worker: freeze what start-up built, then each full collection's
survivors.

CPython's full collection walks every tracked object that is not frozen, and it runs whenever the objects that
survived younger collections grow by a quarter. A worker's long-lived objects grow with its tables (a session's
budget row, the meter's running totals per session): in bench/pipeline_bench.py at 500-600 exact hits/s with a
session per request, full collections came every 3-5 s, found nothing to free, and held the event loop 100-190
ms, more each time (p99 300-460 ms in phases whose p50 was 20 ms).

So everything a full collection just proved reachable is frozen: later full collections walk only what survived
since, a few milliseconds. Refcounting still frees a frozen object as soon as nothing refers to it (a table
row replaced or deleted); only reference cycles that form among frozen objects after they were frozen wait. In
the same runs full collections freed nothing (cycles die young, in the younger generations), and every
``sweep_s`` the frozen objects are put back once, so the next full collection walks them all and frees any such
cycles (one longer pause per sweep).
"""

from __future__ import annotations

import gc
import time
from typing import Any

_state: dict[str, float] = {}


def freeze_startup_objects() -> None:
    """Move everything imported and built so far (Faust, aiokafka, numpy, onnxruntime, qdrant modules: a few
    hundred thousand objects) out of the collector's reach."""
    gc.collect()
    gc.freeze()


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    if phase != "stop" or info.get("generation") != 2:
        return
    sweep_s = _state["sweep_s"]
    now = time.monotonic()
    if sweep_s > 0 and now - _state["swept"] >= sweep_s:
        _state["swept"] = now
        gc.unfreeze()  # the next full collection walks everything once
        return
    gc.freeze()


def freeze_survivors(sweep_s: float) -> None:
    """After start-up: freeze each full collection's survivors, and put them back every ``sweep_s`` (0: never)."""
    _state.update(sweep_s=sweep_s, swept=time.monotonic())
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def stop_freezing() -> None:
    if _after_collection in gc.callbacks:
        gc.callbacks.remove(_after_collection)
