"""A pool of local model instances driven from asyncio without blocking the event loop.

Each instance serves one call at a time on a dedicated executor thread; ``size`` instances give ``size``
concurrent generations. Loading also happens in the executor (it takes seconds for native models).
A freed instance goes to a waiting interactive call before any batch call, so a batch backlog delays an
interactive request by at most one generation in progress.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from schemas.records import Message
from workers.errors import ModelCrashed
from workers.ports import Completion, LocalModel


class ModelPool:
    def __init__(self, factory: Callable[[], LocalModel], size: int = 1) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._factory = factory
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sluice-model")
        self._idle: list[LocalModel] | None = None
        self._waiting: dict[str, deque[asyncio.Future[LocalModel]]] = {"interactive": deque(), "batch": deque()}
        self._models: list[LocalModel] = []
        self._start_lock: asyncio.Lock | None = None
        self.busy_seconds = 0.0  # summed generation time: utilization = busy / (wall * size)
        self.started_at = time.monotonic()
        self.name = ""

    async def start(self) -> None:
        """Load every instance (idempotent; concurrent callers wait for one load)."""
        if self._idle is not None:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._idle is not None:
                return
            loop = asyncio.get_running_loop()
            idle: list[LocalModel] = []
            for _ in range(self.size):
                model = await loop.run_in_executor(self._executor, self._factory)
                self._models.append(model)
                idle.append(model)
            self.name = self._models[0].name
            self.started_at = time.monotonic()
            self._idle = idle

    @property
    def in_use(self) -> int:
        return 0 if self._idle is None else self.size - len(self._idle)

    async def _acquire(self, priority: str) -> LocalModel:
        assert self._idle is not None
        queue = self._waiting["batch" if priority == "batch" else "interactive"]
        ahead = self._waiting["interactive"] if priority == "batch" else ()
        if self._idle and not queue and not ahead:
            return self._idle.pop()
        future: asyncio.Future[LocalModel] = asyncio.get_running_loop().create_future()
        queue.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(future.result())  # handed over just as we were cancelled: pass it on
            elif future in queue:
                queue.remove(future)
            raise

    def _release(self, model: LocalModel) -> None:
        assert self._idle is not None
        for priority in ("interactive", "batch"):
            queue = self._waiting[priority]
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(model)
                    return
        self._idle.append(model)

    async def generate(
        self, messages: Sequence[Message], max_tokens: int, retries: int = 1, *, priority: str = "interactive"
    ) -> Completion:
        """Generate with a free instance (interactive callers first); a crashed instance (retriable) is retried
        ``retries`` times."""
        await self.start()
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            model = await self._acquire(priority)
            started = time.monotonic()
            try:
                return await loop.run_in_executor(self._executor, model.generate, messages, max_tokens)
            except ModelCrashed:
                attempt += 1
                if attempt > retries:
                    raise
            finally:
                self.busy_seconds += time.monotonic() - started
                self._release(model)

    async def close(self) -> None:
        for model in self._models:
            model.close()
        self._models.clear()
        self._idle = None
        self._executor.shutdown(wait=False, cancel_futures=True)
