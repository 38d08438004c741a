"""Micro-batching across the stream: concurrent ``embed`` calls are gathered (up to ``max_batch`` texts or
``max_wait_ms``) and embedded in one executor call, so the ONNX model runs at batch throughput while the event
loop stays free."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from workers.ports import Embedder


class BatchingEmbedder:
    def __init__(self, embedder: Embedder, *, max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-embed")
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._flusher: asyncio.TimerHandle | None = None
        self.batches = 0
        self.texts = 0

    @property
    def dim(self) -> int:
        return self.embedder.dim

    async def embed_one(self, text: str) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self.max_wait, self._flush)
        return await future

    async def embed_many(self, texts: list[str]) -> np.ndarray:
        vectors = await asyncio.gather(*(self.embed_one(t) for t in texts))
        return np.stack(vectors) if vectors else np.zeros((0, self.dim), dtype=np.float32)

    def _flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[str, asyncio.Future[np.ndarray]]]) -> None:
        loop = asyncio.get_running_loop()
        self.batches += 1
        self.texts += len(batch)
        try:
            vectors = await loop.run_in_executor(self._executor, self.embedder.embed, [t for t, _ in batch])
        except Exception as exc:  # every waiter hears about the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            if not future.done():
                future.set_result(vector)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
