"""The streaming path of the tier stages: a ``stream: true`` job sends chunks while the model generates.

The plain tier stages return their messages and the agent sends them; a streamed job must send while it
works, so these wrappers get a ``send`` callable (as the complete stage does), hand the tier stage a chunk
writer and the request's cancel flag, and send the final result after the chunks were acknowledged (so a
chunk is always on the broker before its response can exist). Jobs without ``stream`` take the unchanged
path. Chunks are never metered: usage and cost travel on the result, exactly as for a non-streamed job.
"""

from __future__ import annotations

from typing import Any

from schemas.parse import InvalidMessage, parse_job
from streams.cancels import CancelRegistry
from streams.stages.chunks import ChunkWriter, Send
from streams.stages.cloud_tier import CloudTierStage
from streams.stages.local_tier import LocalTierStage
from streams.stages.outgoing import Outgoing, Source


def _streamed(raw: bytes) -> bool:
    try:
        return parse_job(raw).request.stream
    except InvalidMessage:
        return False  # the tier stage dead-letters it


class _StreamingTier:
    """The shared streaming wrapper; subclasses say how their tier stage takes the chunk writer and cancel flag."""

    def __init__(self, stage: LocalTierStage | CloudTierStage, cancels: CancelRegistry) -> None:
        self.stage = stage
        self.cancels = cancels

    async def handle(self, raw: bytes, source: Source, send: Send, plain: Send | None = None) -> None:
        """``send`` waits for acknowledgements (chunks, then the result); ``plain`` sends a non-streamed job's
        messages as before (the agent's buffered emit)."""
        if not _streamed(raw):
            await (plain or send)(await self.stage.handle(raw, source))
            return
        request = parse_job(raw).request
        writer = ChunkWriter(request, self.stage.settings.topic("chunks"), send)
        flag = self.cancels.watch(request.id)
        try:
            outs = await self._generate(raw, source, writer, flag)
        finally:
            self.cancels.done(request.id)
        self.stage.counts["streamed"] += 1
        await send(outs)

    async def _generate(self, raw: bytes, source: Source, writer: ChunkWriter, flag: Any) -> list[Outgoing]:
        raise NotImplementedError


class StreamingLocalStage(_StreamingTier):
    def __init__(self, stage: LocalTierStage, cancels: CancelRegistry) -> None:
        super().__init__(stage, cancels)
        self.local = stage

    async def _generate(self, raw: bytes, source: Source, writer: ChunkWriter, flag: Any) -> list[Outgoing]:
        return await self.local.handle(raw, source, on_text=writer, cancel=flag)


class StreamingCloudStage(_StreamingTier):
    def __init__(self, stage: CloudTierStage, cancels: CancelRegistry) -> None:
        super().__init__(stage, cancels)
        self.cloud = stage

    async def _generate(self, raw: bytes, source: Source, writer: ChunkWriter, flag: Any) -> list[Outgoing]:
        return await self.cloud.handle(raw, source, on_text=writer, cancelled=flag.is_set)
