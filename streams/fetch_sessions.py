"""aiokafka's consumer with incremental fetch sessions (KIP-227); the bookkeeping is streams/policy/fetch_session.py.

aiokafka builds every fetch with session id 0 and epoch -1 ("no session"), so the broker answers for every
partition named, and aiokafka encodes, decodes and walks all of them in Python on every fetch. Here each
fetcher's client is wrapped: a fetch request is turned into its session form on the way out (only the partitions
added or moved since the last fetch to that broker, and those to forget) and its answer is accounted on the way
back. The fetcher itself is unchanged: it still sees the full request it built (its ``topics`` are what it reads
the fetch offsets from) and an answer that holds only partitions with news, which it already handles (an
absent partition is one without records).

Off with ``SLUICE_CONSUMER_FETCH_SESSIONS=false``. ``apply`` (called by ``create_app``, so in worker processes)
covers every aiokafka consumer the process starts from then on; ``use_sessions`` puts one started consumer on
sessions.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, cast

from streams.policy.fetch_session import FetchPlan, FetchSession, PartitionFetch

log = logging.getLogger(__name__)
_applied = False


@functools.cache
def _session_request_class() -> type:
    from aiokafka.protocol.fetch import FetchRequest

    class SessionFetchRequest(FetchRequest):
        """A fetch built from ``plan``: full fetches as aiokafka builds them, incremental ones naming only
        ``plan.send`` and ``plan.forget``. Brokers without sessions (Fetch < v7) get aiokafka's own request."""

        def __init__(self, original: Any, plan: FetchPlan) -> None:
            super().__init__(
                original._max_wait_ms,
                original._min_bytes,
                original._max_bytes,
                original._isolation_level,
                original.topics,
                rack_id=original._rack_id,
            )
            self.plan = plan

        def build(self, request_struct_class: Any) -> Any:
            version = request_struct_class.API_VERSION
            if version < 7:
                return super().build(request_struct_class)
            plan = self.plan
            epoch_field = version >= 9
            topics: dict[str, list[tuple[int, ...]]] = {}
            for key, (offset, max_bytes) in plan.send.items():
                topic, partition = cast(tuple[str, int], key)
                row = (partition, -1, offset, -1, max_bytes) if epoch_field else (partition, offset, -1, max_bytes)
                topics.setdefault(topic, []).append(row)
            forgotten: dict[str, list[int]] = {}
            for key in plan.forget:
                topic, partition = cast(tuple[str, int], key)
                forgotten.setdefault(topic, []).append(partition)
            args: list[object] = [-1, self._max_wait_ms, self._min_bytes, self._max_bytes, self._isolation_level]
            args += [plan.session_id, plan.epoch, list(topics.items()), list(forgotten.items())]
            if version >= 11:
                args.append(self._rack_id)
            return request_struct_class(*args)

    return SessionFetchRequest


class SessionClient:
    """An aiokafka client as one fetcher sees it: fetches go through a session per broker; all else is the
    client's own.

    aiokafka stamps a partition's state with the time of the last fetch answer that held it, and Faust's livelock
    check logs an error for any assigned partition whose stamp is older than ``stream_processing_timeout``. An
    idle partition is never in a session's answers, so after an incremental fetch every partition it covered is
    stamped here, at most once per ``STAMP_EVERY_S`` per broker (each stamp walks them all)."""

    STAMP_EVERY_S = 1.0

    def __init__(self, client: Any, request_class: type, fetcher: Any = None) -> None:
        self._client = client
        self._request_class = request_class
        self._fetcher = fetcher
        self._stamped: dict[int, float] = {}
        self.sessions: dict[int, FetchSession] = {}
        self.fetches = {"full": 0, "incremental": 0}  # requests sent, by kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        from aiokafka.protocol.fetch import FetchRequest

        if not isinstance(request, FetchRequest):
            return await self._client.send(node_id, request, **kwargs)
        session = self.sessions.get(node_id)
        if session is None:
            session = self.sessions[node_id] = FetchSession()
        wanted: dict[Any, PartitionFetch] = {
            (topic, partition): (offset, max_bytes)
            for topic, partitions in request.topics
            for partition, offset, max_bytes in partitions
        }
        plan = session.plan(wanted)
        self.fetches["full" if plan.full else "incremental"] += 1
        try:
            response = await self._client.send(node_id, self._request_class(request, plan), **kwargs)
        except BaseException:  # failed or cancelled: the broker may or may not have moved the session on
            session.reset()
            raise
        error_code = getattr(response, "error_code", 0)
        if not session.on_response(error_code, getattr(response, "session_id", None)):
            log.debug("fetch session with node %s restarts (error code %s)", node_id, error_code)
            response.topics = []
        elif not plan.full:
            response.topics = _only_wanted(response.topics, wanted)
            now = time.monotonic()
            if now - self._stamped.get(node_id, 0.0) >= self.STAMP_EVERY_S:
                self._stamped[node_id] = now
                self._stamp(wanted)
        return response

    def _stamp(self, partitions: dict[Any, PartitionFetch]) -> None:
        """Mark ``partitions`` as fetched now, as aiokafka does for those in an answer."""
        from aiokafka.structs import TopicPartition

        subscription = self._fetcher._subscriptions.subscription if self._fetcher is not None else None
        assignment = subscription.assignment if subscription is not None else None
        if assignment is None:
            return
        now_ms = int(time.time() * 1000)
        for topic, partition in partitions:
            state = assignment.state_value(TopicPartition(topic, partition))
            if state is not None:
                state.timestamp = now_ms


def _only_wanted(topics: list[Any], wanted: dict[Any, PartitionFetch]) -> list[Any]:
    """The fetcher reads offsets only for partitions it asked about; a session answers only for those, but an
    answer about any other partition would crash its loop, so such a partition is dropped."""
    if all((topic, row[0]) in wanted for topic, rows in topics for row in rows):
        return topics
    return [(topic, [row for row in rows if (topic, row[0]) in wanted]) for topic, rows in topics]


def use_sessions(fetcher: Any) -> SessionClient:
    """Put one aiokafka ``Fetcher`` (a started consumer's ``_fetcher``) on fetch sessions; returns its client."""
    client = fetcher._client
    if not isinstance(client, SessionClient):
        client = fetcher._client = SessionClient(client, _session_request_class(), fetcher)
    return client


def apply() -> None:
    """Put every aiokafka ``Fetcher`` made from now on on fetch sessions."""
    global _applied
    if _applied:
        return
    from aiokafka.consumer.fetcher import Fetcher

    original_init = Fetcher.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        use_sessions(self)

    Fetcher.__init__ = __init__
    _applied = True
