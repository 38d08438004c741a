"""Metering on the genuine broker: one usage record per request, exact totals after a meter restart,
and a looping agent stopped by the session breaker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streams.client import SluiceClient, make_request
from streams.settings import Settings
from streams.topics import create_topics
from tests.conftest import settings_env
from tests.integration.kafka_util import read_topic
from tests.integration.procs import start_worker

pytestmark = pytest.mark.integration


def _tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def test_usage_is_counted_once_even_across_a_meter_restart(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    workers = start_worker(settings, tmp_path, "admit", "cache", "local", name="workers")
    meter = start_worker(settings, tmp_path, "meter", name="meter-1")
    try:
        async with SluiceClient(settings) as client:
            requests = [
                make_request(
                    f"Name a colour number {i}",
                    tenant=f"t{i % 2}",
                    session=f"s{i}",
                    max_tokens=4,
                    metadata={"feature": "colours" if i % 3 else "other"},
                )
                for i in range(12)
            ]
            first = await asyncio.wait_for(asyncio.gather(*[await client.send(r) for r in requests[:6]]), 180)
            await asyncio.sleep(1.0)
            meter.kill()  # mid-stream, no graceful commit: it will see some responses again
            # The replacement starts once the broker has dropped the dead member (session timeout): with the dead
            # member still in the group, faust-streaming 0.15.3 can skip prefetched events across the two
            # back-to-back rebalances (see the session note; faust-streaming issues #216/#221).
            await asyncio.sleep(settings.broker_session_timeout + 2)
            # meter-2 logs at info: it once stalled in CI with every event after a startup drop dropped too (fixed by
            # the lost-event guard's idle rule, streams/policy/lost_events.py); its log says where it stopped.
            meter = start_worker(settings, tmp_path, "meter", name="meter-2", env={"SLUICE_LOG_LEVEL": "info"})
            rest = await asyncio.wait_for(asyncio.gather(*[await client.send(r) for r in requests[6:]]), 180)
            repeat = await client.submit(
                make_request("Name a colour number 0", tenant="t0", session="x", max_tokens=4), 60
            )
        responses = [*first, *rest, repeat]
        # A kill between publishing a usage record and recording its id may publish it twice (same record);
        # what must hold is that every request has one, and that the report counts each once.
        usage = await read_topic(
            settings, settings.topic("usage"), until=len(responses), timeout_s=60, distinct_ids=True
        )
        if len({u["id"] for u in usage}) < len(responses) and meter.proc.poll() is None:
            meter.proc.send_signal(signal.SIGUSR1)  # mode's worker logs every thread's and task's stack
            await asyncio.sleep(3)
    finally:
        meter.stop()
        workers.stop()
    ids = {u["id"] for u in usage}
    unmetered = [i for i, r in enumerate(responses) if r.id not in ids]
    meter_2 = _tail(tmp_path / "meter-2.log", 400)
    assert not unmetered, f"responses {unmetered} (of 0-12) unmetered; meter-2:\n{meter_2}"
    assert ids == {r.id for r in responses}
    env = settings_env(settings)
    report = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams.cli", "report", "--json", "--chart", str(tmp_path / "report.html")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout.strip().splitlines()[-1])
    assert summary["requests"] == len(responses)
    assert summary["cost_usd"] == pytest.approx(sum(r.cost_usd for r in responses), abs=1e-9)
    assert summary["by_tenant"].keys() == {"t0", "t1"}
    assert set(summary["by_feature"]) == {"colours", "other", "(none)"}
    assert repeat.tier == "cache" and summary["cache_hit_rate"] == pytest.approx(1 / len(responses))
    assert summary["baseline_cost_usd"] > summary["cost_usd"] and summary["savings_ratio"] > 0
    assert "<svg" in (tmp_path / "report.html").read_text()


async def test_a_looping_agent_trips_its_session_breaker_then_recovers(settings: Settings, tmp_path: Path) -> None:
    await create_topics(settings)
    env = {"SLUICE_BREAKER_COOLDOWN_S": "3"}
    worker = start_worker(settings, tmp_path, "admit", "cache", "local", "meter", name="loop", env=env)
    try:
        async with SluiceClient(settings) as client:
            loop = [make_request("Try again.", tenant="acme", session="agent-7", max_tokens=4) for _ in range(50)]
            futures = [await client.send(r) for r in loop]  # 50 in well under 10 s
            answers = await asyncio.wait_for(asyncio.gather(*futures), 180)
            other = await client.submit(make_request("Hello", tenant="acme", session="agent-8", max_tokens=4), 120)
            await asyncio.sleep(3.5)  # the cooldown passes: one probe is let through
            probe = await client.submit(make_request("Status?", tenant="acme", session="agent-7", max_tokens=4), 120)
            # The probe's usage reaches the admit owner (via the meter) and closes the breaker; until then other
            # requests of the session are refused while the probe is out.
            for attempt in range(20):
                await asyncio.sleep(1.0)
                after = await client.submit(
                    make_request(f"Go on ({attempt}).", tenant="acme", session="agent-7", max_tokens=4), 120
                )
                if after.status == "ok":
                    break
    finally:
        worker.stop()
    reasons = [a.reason for a in answers]
    assert all(a.status == "ok" for a in answers[:7])
    assert reasons[7:] == ["breaker"] * 43  # the default trips on the 8th identical prompt in a row
    assert other.status == "ok"  # other sessions are untouched
    assert probe.status == "ok" and after.status == "ok", (probe.reason, after.reason)
    control = await read_topic(settings, settings.topic("control"), until=3, timeout_s=20)
    states = [(e["state"], e.get("reason")) for e in control if e.get("session") == "agent-7"]
    assert states[0] == ("open", "repeat")
    assert [s for s, _ in states] == ["open", "half_open", "closed"]


async def test_fifty_concurrent_requests_at_a_nearly_spent_budget(settings: Settings, tmp_path: Path) -> None:
    """A session budget under concurrency, end to end: the local tier charges a (made-up) compute price, so
    spending is real; overshoot of the hard limit stays within one request's reserved cost."""
    from tests.integration.tiers_files import write_tiers

    await create_topics(settings)
    tiers = write_tiers(tmp_path / "tiers-priced.yaml", knob=0.0, local_price=400.0)
    hard = 0.12
    env = {
        "SLUICE_TIERS_FILE": str(tiers),
        "SLUICE_SESSION_BUDGET_HARD_USD": str(hard),
        "SLUICE_BREAKER_ENABLED": "false",
        "SLUICE_BUDGET_ROW_IDS": "2",  # settled ids spill to the session-settled table (a real Faust table)
    }
    worker = start_worker(settings, tmp_path, "admit", "cache", "local", "meter", name="budget", env=env)
    try:
        async with SluiceClient(settings) as client:
            warmup = await client.submit(make_request("Say one word.", tenant="acme", session="b", max_tokens=8), 180)
            burst = [make_request(f"Say the word {i}.", tenant="acme", session="b", max_tokens=8) for i in range(50)]
            answers = await asyncio.wait_for(asyncio.gather(*[await client.send(r) for r in burst]), 240)
    finally:
        worker.stop()
    assert warmup.status == "ok" and warmup.cost_usd > 0, worker.tail()
    ok = [a for a in answers if a.status == "ok"]
    rejected = [a for a in answers if a.status == "rejected"]
    assert ok and rejected and len(ok) + len(rejected) == 50
    assert {a.reason for a in rejected} == {"budget"}
    spent = warmup.cost_usd + sum(a.cost_usd for a in ok)
    from streams.policy.cost import estimate_reservation
    from streams.tiers import load_tiers

    price = load_tiers(tiers).priciest
    one_reservation = max(estimate_reservation(r.prompt or "", 8, price, overhead_tokens=64) for r in burst)
    assert spent <= hard + one_reservation, (spent, hard, one_reservation)
