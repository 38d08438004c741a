"""``SluiceClient.stream``'s reassembly, fed by hand (the Kafka path runs in tests/integration/test_streaming.py):
order by ``seq``, repeats dropped, the part of the final text not yet seen yielded last, and a cancel published
when the consumer leaves early."""

from __future__ import annotations

import asyncio
from typing import Any

from schemas.records import Request, Response
from schemas.streaming import Chunk
from streams.settings import Settings
from streams.streaming_client import ReplyStream

REQUEST = Request(id="r1", tenant="t", session="s", prompt="hi")


class Owner:
    """The parts of SluiceClient a ReplyStream uses."""

    def __init__(self) -> None:
        self.settings = Settings(reply_timeout_s=5.0)
        self._streams: dict[str, ReplyStream] = {}
        self._waiters: dict[str, asyncio.Future[Response]] = {}
        self.sent: list[Request] = []
        self.cancelled: list[str] = []

    async def send(self, request: Request) -> asyncio.Future[Response]:
        self.sent.append(request)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[request.id] = future
        return future

    async def cancel(self, request_id: str) -> None:
        self.cancelled.append(request_id)


def final(text: str) -> Response:
    return Response(id="r1", tenant="t", session="s", status="ok", text=text, tier="local")


async def test_chunks_come_out_in_order_once_and_the_rest_of_the_text_last() -> None:
    owner = Owner()
    reply = ReplyStream(owner, REQUEST)  # type: ignore[arg-type]
    await reply.open()
    assert owner.sent[0].stream is True  # set for the caller
    reply.add(Chunk("r1", 1, "lo"))  # ahead of a gap: held
    reply.add(Chunk("r1", 0, "Hel"))
    reply.add(Chunk("r1", 0, "Hel"))  # a redelivered repeat
    got = [(await reply.__anext__()).text, (await reply.__anext__()).text]
    owner._waiters["r1"].set_result(final("Hello, world"))  # the response overtook the last chunk
    rest: list[Any] = [c async for c in reply]
    reply.add(Chunk("r1", 2, ", world"))  # late: ignored
    assert got == ["Hel", "lo"] and [c.text for c in rest] == [", world"] and rest[0].seq == 2
    assert reply.text == "Hello, world" and reply.response is not None and reply.response.status == "ok"
    assert owner._streams == {} and owner.cancelled == []


async def test_leaving_early_publishes_a_cancel() -> None:
    owner = Owner()
    async with ReplyStream(owner, REQUEST) as reply:  # type: ignore[arg-type]
        reply.add(Chunk("r1", 0, "Once upon"))
        async for _ in reply:
            break
    assert owner.cancelled == ["r1"] and owner._streams == {} and "r1" not in owner._waiters
    assert [c async for c in reply] == []  # closed: iteration ends
