"""A pool of local model instances driven from asyncio without blocking the event loop.

Each instance serves one call at a time on a dedicated executor thread; ``size`` instances give ``size``
concurrent generations. Loading also happens in the executor (it takes seconds for native models).
A freed instance goes to a waiting interactive call before any batch call, so a batch backlog delays an
interactive request by at most one generation in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from schemas.records import Message
from workers.errors import ModelCrashed
from workers.local import gil_interval
from workers.ports import Completion, LocalModel, StreamingLocalModel


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
                with gil_interval.generating():
                    return await loop.run_in_executor(self._executor, model.generate, messages, max_tokens)
            except ModelCrashed:
                attempt += 1
                if attempt > retries:
                    raise
            finally:
                self.busy_seconds += time.monotonic() - started
                self._release(model)

    async def stream(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        on_text: Callable[[str], Awaitable[None]],
        *,
        cancel: threading.Event | None = None,
        retries: int = 1,
        priority: str = "interactive",
    ) -> Completion:
        """Generate while awaiting ``on_text`` with the new text, as the model produces it.

        The model runs on its executor thread and hands each piece to the event loop
        (``call_soon_threadsafe`` into an ``asyncio.Queue``); pieces that pile up while ``on_text`` runs go
        out together. Setting ``cancel`` stops the model between tokens. A crash is retried only while
        nothing was handed out yet. The instance is released only after its thread finished.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        cancel = cancel or threading.Event()
        attempt, sent = 0, False
        while True:
            model = await self._acquire(priority)
            queue: asyncio.Queue[str | None] = asyncio.Queue()

            def push(text: str, queue: asyncio.Queue[str | None] = queue) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, text)

            def run(model: LocalModel = model, queue: asyncio.Queue[str | None] = queue) -> Completion:
                try:
                    if isinstance(model, StreamingLocalModel):
                        return model.stream(messages, max_tokens, push, cancel.is_set)
                    completion = model.generate(messages, max_tokens)  # a backend that cannot stream
                    if completion.text:
                        push(completion.text)
                    return completion
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, None)

            started = time.monotonic()
            future = loop.run_in_executor(self._executor, run)
            future.add_done_callback(gil_interval.hold_until_done())
            try:
                done = False
                while not done:
                    parts = [await queue.get()]
                    while not queue.empty():
                        parts.append(queue.get_nowait())
                    done = parts[-1] is None
                    text = "".join(p for p in parts if p)
                    if text:
                        sent = True
                        await on_text(text)
                return await future
            except ModelCrashed:
                attempt += 1
                if sent or attempt > retries:
                    raise
            except BaseException:
                cancel.set()  # the consumer failed or was cancelled: stop the model before releasing it
                raise
            finally:
                if not future.done():
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(future)
                self.busy_seconds += time.monotonic() - started
                self._release(model)

    async def close(self) -> None:
        for model in self._models:
            model.close()
        self._models.clear()
        self._idle = None
        self._executor.shutdown(wait=False, cancel_futures=True)
