"""A pool of local model instances driven from asyncio without blocking the event loop.

Each instance serves one call at a time on a dedicated executor thread; ``size`` instances give ``size``
concurrent generations. Loading also happens in the executor (it takes seconds for native models).
"""

from __future__ import annotations

import asyncio
import time
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
        self._idle: asyncio.Queue[LocalModel] | None = None
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
            idle: asyncio.Queue[LocalModel] = asyncio.Queue()
            for _ in range(self.size):
                model = await loop.run_in_executor(self._executor, self._factory)
                self._models.append(model)
                idle.put_nowait(model)
            self.name = self._models[0].name
            self.started_at = time.monotonic()
            self._idle = idle

    @property
    def in_use(self) -> int:
        return 0 if self._idle is None else self.size - self._idle.qsize()

    async def generate(self, messages: Sequence[Message], max_tokens: int, retries: int = 1) -> Completion:
        """Generate with a free instance; a crashed instance (retriable) is retried ``retries`` times."""
        await self.start()
        assert self._idle is not None
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            model = await self._idle.get()
            started = time.monotonic()
            try:
                return await loop.run_in_executor(self._executor, model.generate, messages, max_tokens)
            except ModelCrashed:
                attempt += 1
                if attempt > retries:
                    raise
            finally:
                self.busy_seconds += time.monotonic() - started
                self._idle.put_nowait(model)

    async def close(self) -> None:
        for model in self._models:
            model.close()
        self._models.clear()
        self._idle = None
        self._executor.shutdown(wait=False, cancel_futures=True)
