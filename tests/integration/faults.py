"""Shared machinery of the fault tests: a cheap 10k-request load, the pipeline it runs through, and the checks
that every request got exactly one final response and exactly one usage record that matches it.

The load is cheap on purpose (the point is the at-least-once / exactly-once-effects machinery across a fault,
not model speed): many sessions send a small set of distinct prompts, so after the first few each is an exact
cache hit or coalesced, and the misses go to the cloud tier, a loopback provider simulator (real HTTP).
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.records import Request, Response
from streams.client import SluiceClient, make_request
from streams.report import build_report, read_usage
from streams.settings import Settings
from tests.fixtures.provider_sim import ProviderSim
from tests.integration.procs import SluiceProcess, start_worker
from tests.integration.stuck import where_stuck
from tests.integration.tiers_files import write_tiers
from tests.integration.topic_reader import read_to_end


def free_port_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """A base port with ``count`` consecutive free loopback ports (for brokers of a test's own).

    Below Linux's ephemeral range (32768 up): a broker port there can be taken, while the broker is down, as the
    source port of a client reconnecting to it, and the restarted broker then fails to bind (seen: the broker
    restart test's workers retrying a dead port for its whole timeout)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports found")


def cheap_requests(
    count: int, *, sessions: int = 200, prompts: int = 200, tenant: str = "acme", label: str = "Fault drill"
) -> list[Request]:
    """``count`` requests over ``sessions`` sessions asking ``prompts`` distinct questions (most are cache hits)."""
    return [
        make_request(
            f"{label} question {i % prompts}: what is the capital of country number {i % prompts}?",
            tenant=tenant,
            session=f"s{i % sessions}",
            max_tokens=16,
            metadata={"feature": f"f{i % 3}"},
        )
        for i in range(count)
    ]


def worker_env(tmp_path: Path, sim: ProviderSim) -> dict[str, str]:
    """Misses go to the cloud tier (the simulator); the breaker is off so 10k requests are all answered."""
    tiers = write_tiers(tmp_path / "tiers-fault.yaml", knob=1.01, openai_base_url=sim.openai_base_url)
    return {
        "SLUICE_TIERS_FILE": str(tiers),
        "SLUICE_TEST_OPENAI_KEY": "sk-fault-test",
        "SLUICE_BREAKER_ENABLED": "false",
        "SLUICE_COSTS_INTERVAL_S": "5",
    }


@dataclass
class Pipeline:
    """Worker processes by name, each running some roles; a killed one can be started again."""

    settings: Settings
    tmp_path: Path
    env: dict[str, str]
    layout: dict[str, tuple[str, ...]]
    procs: dict[str, SluiceProcess] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)

    def start(self, name: str) -> SluiceProcess:
        self.starts[name] += 1
        proc = start_worker(
            self.settings, self.tmp_path, *self.layout[name], name=f"{name}-{self.starts[name]}", env=self.env
        )
        self.procs[name] = proc
        return proc

    def start_all(self) -> None:
        for name in self.layout:
            self.start(name)

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            try:
                proc.stop()
            except Exception:  # teardown must reach every process
                pass

    def tails(self) -> str:
        return "\n".join(f"--- {n}\n{p.tail(15)}" for n, p in self.procs.items())


class Clock:
    """Phase timings, printed with the verdict (no timing is asserted: the machine is shared and noisy)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.marks: list[str] = []

    def mark(self, label: str) -> None:
        self.marks.append(f"{label} {time.monotonic() - self.t0:.1f}s")

    def __str__(self) -> str:
        return ", ".join(self.marks)


@dataclass
class Load:
    """Requests published through one client, and the one response each got."""

    client: SluiceClient
    requests: list[Request]
    futures: dict[str, asyncio.Future[Response]] = field(default_factory=dict)
    send_retries: int = 0

    async def publish(self, rate_per_s: float | None = None, chunk: int = 200) -> None:
        """Publish every request (in chunks, optionally paced). A send the broker did not acknowledge (it was
        down) is retried with the same id: downstream stages are idempotent per id, so that is safe."""
        started = time.monotonic()
        for i in range(0, len(self.requests), chunk):
            batch = self.requests[i : i + chunk]
            await asyncio.gather(*(self._send(r) for r in batch))
            if rate_per_s:
                ahead = (i + len(batch)) / rate_per_s - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)

    async def _send(self, request: Request) -> None:
        for attempt in range(30):
            try:
                self.futures[request.id] = await self.client.send(request)
                return
            except Exception:
                if attempt == 29:
                    raise
                self.send_retries += 1
                await asyncio.sleep(1.0)

    def answered(self) -> int:
        return sum(f.done() for f in self.futures.values())

    async def wait_answered(self, at_least: int, timeout_s: float, what: Callable[[], str] = str) -> None:
        deadline = time.monotonic() + timeout_s
        while self.answered() < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.answered()} of {at_least} answered in time\n{what()}")
            await asyncio.sleep(0.1)

    async def responses(self, timeout_s: float, what: Callable[[], str] = str) -> dict[str, Response]:
        try:
            await self.wait_answered(len(self.requests), timeout_s, what)
        except AssertionError as exc:  # say which stage holds the unanswered ones
            missing = {r.id for r in self.requests} - {rid for rid, f in self.futures.items() if f.done()}
            raise AssertionError(f"{exc}\n{await where_stuck(self.client.settings, missing)}") from None
        return {rid: f.result() for rid, f in self.futures.items()}


async def warm_up(settings: Settings, pipeline: Pipeline, count: int = 20) -> None:
    """Answer ``count`` distinct prompts (through a client of their own): every role is up and assigned."""
    async with SluiceClient(settings) as client:
        warm = Load(client, cheap_requests(count, prompts=count, label="Warm-up"))
        await warm.publish()
        await warm.wait_answered(count, 240, pipeline.tails)


async def metered(settings: Settings, ids: set[str], timeout_s: float) -> list[dict[str, Any]]:
    """The usage log (read like ``sluice report``), once it holds a record for every id in ``ids``."""
    deadline = time.monotonic() + timeout_s
    while True:
        usage = await read_usage(settings, None)
        missing = ids - {u["id"] for u in usage}
        if not missing or time.monotonic() > deadline:
            return usage
        await asyncio.sleep(1.0)


@dataclass
class Verdict:
    """What the checks found (printed by the tests, for the numbers)."""

    requests: int
    responses_on_topic: int
    duplicates_suppressed: int
    usage_records: int
    send_retries: int

    def __str__(self) -> str:
        return (
            f"{self.requests} requests: {self.responses_on_topic} responses on the topic, "
            f"{self.duplicates_suppressed} duplicate(s) suppressed by the client, {self.usage_records} usage "
            f"records, {self.send_retries} send retries"
        )


async def check_exactly_once(settings: Settings, load: Load, delivered: dict[str, Response]) -> Verdict:
    """Every request: exactly one final response delivered to the client, and exactly one usage record, equal to
    that response (tier, status, tokens, cost); totals equal the sums over the delivered responses, exactly."""
    ids = {r.id for r in load.requests}
    client = load.client
    assert set(delivered) == ids, f"{len(ids - set(delivered))} requests lost"
    assert client.delivered == len(ids), (client.delivered, len(ids))
    assert all(r.status == "ok" for r in delivered.values()), Counter((r.status, r.reason) for r in delivered.values())

    # The client saw every copy on the topic: one delivered, the rest suppressed by id.
    deadline = time.monotonic() + 30
    while True:
        on_topic = [d for d in await read_to_end(settings, settings.topic("responses")) if d.get("id") in ids]
        if len(on_topic) == len(ids) + client.duplicates_suppressed or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert {d["id"] for d in on_topic} == ids
    assert len(on_topic) == len(ids) + client.duplicates_suppressed, (len(on_topic), client.duplicates_suppressed)

    usage = [u for u in await metered(settings, ids, timeout_s=120) if u.get("id") in ids]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for u in usage:
        by_id.setdefault(u["id"], []).append(u)
    assert set(by_id) == ids, f"{len(ids - set(by_id))} requests not metered"
    differing = [rid for rid, records in by_id.items() if any(r != records[0] for r in records)]
    assert not differing, f"{len(differing)} ids with conflicting usage records, e.g. {by_id[differing[0]]}"
    mismatched = [
        rid
        for rid, (u, *_) in by_id.items()
        if (u["tier"], u["status"], u["prompt_tokens"], u["completion_tokens"], u["cost_usd"])
        != (
            delivered[rid].tier,
            delivered[rid].status,
            delivered[rid].usage.prompt_tokens,
            delivered[rid].usage.completion_tokens,
            delivered[rid].cost_usd,
        )
    ]
    assert not mismatched, f"{len(mismatched)} usage records differ from the delivered response"

    report = build_report(usage)
    total = report.overall
    assert total.requests == len(ids)
    assert total.prompt_tokens == sum(r.usage.prompt_tokens for r in delivered.values())
    assert total.completion_tokens == sum(r.usage.completion_tokens for r in delivered.values())
    firsts = [records[0] for records in by_id.values()]
    assert math.fsum(u["cost_usd"] for u in firsts) == math.fsum(r.cost_usd for r in delivered.values())
    assert math.isclose(total.cost_usd, math.fsum(r.cost_usd for r in delivered.values()), rel_tol=1e-12)
    assert total.cost_usd > 0  # the cloud misses were paid: the check compares real money, not zeros
    return Verdict(len(ids), len(on_topic), client.duplicates_suppressed, len(usage), load.send_retries)
