"""Runs the router's LM probe (workers/embedding/lm_probe.py) off the event loop, with bounded waiting.

Why: the probe is ~0.2 s of CPU per word problem. One worker thread runs it (llama.cpp would serialise the calls
anyway) and the model loads on first use, inside that thread. The probe only sharpens a score, so when more than
``max_pending`` requests are already waiting, a request is scored without it instead of queueing: routing latency
stays bounded under a burst of word problems. If the model cannot load, the probe turns itself off (logged once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)
Probe = Callable[[Sequence[str]], np.ndarray]  # texts -> probe states (blocking)


class ProbeRunner:
    def __init__(self, make: Callable[[], Probe], max_pending: int = 8) -> None:
        self._make: Callable[[], Probe] | None = make
        self._probe: Probe | None = None
        self._pending = 0
        self.max_pending = max_pending
        self.counts: Counter[str] = Counter()  # probed, skipped:busy, skipped:off
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sluice-route-probe")

    @property
    def enabled(self) -> bool:
        return self._make is not None or self._probe is not None

    async def state(self, text: str) -> np.ndarray | None:
        """The probe state of ``text``, or None (off, or too many waiting)."""
        if not self.enabled:
            self.counts["skipped:off"] += 1
            return None
        if self._pending >= self.max_pending:
            self.counts["skipped:busy"] += 1
            return None
        self._pending += 1
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, text)
        except Exception as exc:  # an aid, not a dependency: the head scores an average prompt's state instead
            log.warning("router probe unavailable (%s); scoring without it", exc)
            self._make, self._probe = None, None
            self.counts["skipped:off"] += 1
            return None
        finally:
            self._pending -= 1
        self.counts["probed"] += 1
        return out

    def _run(self, text: str) -> np.ndarray:
        if self._probe is None:
            if self._make is None:
                raise RuntimeError("probe turned off")
            self._probe = self._make()
        return np.asarray(self._probe([text]))[0]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
