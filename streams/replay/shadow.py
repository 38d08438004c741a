"""``sluice replay --execute``: re-run a logged range for real in a shadow namespace, in one command.

The shadow is a complete, separate Sluice: topic prefix ``<prefix>-shadow-<id>`` (its own topics, consumer
groups, Faust tables and metering keys), data dir ``<data dir>/shadow/<id>`` (the cache's vector collection is
named by the prefix too), and the candidate's configuration written as its own tier, cache-policy and tenant
files. The range's requests are republished to the shadow's ``requests`` topic with ``reply_to`` removed, so
answers reach only the shadow's ``responses`` topic, never the original requesters; nothing is written to any
production topic, table or file. The roles run in a child ``sluice worker`` process, stopped when every request
has its answer (or the timeout passes); the shadow's topics are deleted afterwards unless ``--keep-shadow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from schemas.parse import parse_decision
from schemas.records import Request, now_ms
from streams.policy.replay import Logged, Replayed, actual_outcome
from streams.replay.candidate import read_doc
from streams.settings import PREFIX, Settings
from streams.tiers import DEFAULT_TIERS_PATH

ROLES = ("admit", "cache", "local", "cloud", "meter")


def shadow_settings(settings: Settings, shadow_id: str, config_path: str | Path) -> Settings:
    """Production settings moved to the shadow namespace, with the candidate file applied."""
    data_dir = Path(settings.data_dir) / "shadow" / shadow_id
    data_dir.mkdir(parents=True, exist_ok=True)
    doc = read_doc(config_path)
    base = Path(config_path).resolve().parent
    changes: dict[str, Any] = {"topic_prefix": f"{settings.topic_prefix}-shadow-{shadow_id}", "data_dir": str(data_dir)}
    tiers_doc: dict[str, Any] = yaml.safe_load(Path(settings.tiers_file or DEFAULT_TIERS_PATH).read_text())
    if doc.get("tiers_file"):
        path = Path(str(doc["tiers_file"]))
        tiers_doc = yaml.safe_load((path if path.is_absolute() else base / path).read_text())
    elif doc.get("tiers") is not None:
        inline = doc["tiers"]
        tiers_doc = {**tiers_doc, **inline} if isinstance(inline, dict) else {**tiers_doc, "tiers": inline}
    router = doc.get("router") or {}
    if "knob" in router:
        tiers_doc["router"] = {**(tiers_doc.get("router") or {}), "knob": router["knob"]}
    changes["tiers_file"] = _write(data_dir / "tiers.yaml", tiers_doc)
    if "local_only_tenants" in router:
        value = router["local_only_tenants"]
        changes["local_only_tenants"] = value if isinstance(value, str) else ",".join(map(str, value))
    if "spill_backlog" in router:
        changes["spill_backlog"] = int(router["spill_backlog"])
    cache = doc.get("cache")
    if cache is not None:
        policy = yaml.safe_load(Path(settings.cache_policy_file).read_text()) if settings.cache_policy_file else {}
        policy = {**(policy or {}), **{k: v for k, v in cache.items() if k != "enabled"}}
        changes["cache_policy_file"] = _write(data_dir / "cache-policy.yaml", policy)
        changes["cache_enabled"] = bool(cache.get("enabled", settings.cache_enabled))
        changes["cache_threshold"] = -1.0  # the file's threshold applies
        changes["cache_min_cosine"] = -1.0
    budgets = doc.get("budgets")
    if budgets is not None:
        for key in ("session_soft_usd", "session_hard_usd"):
            if key in budgets:
                changes[f"session_budget_{key.split('_')[1]}_usd"] = float(budgets[key])
        if budgets.get("tenants"):
            tenants = yaml.safe_load(Path(settings.tenants_file).read_text()) if settings.tenants_file else {}
            merged = dict((tenants or {}).get("tenants") or {})
            for name, raw in budgets["tenants"].items():
                merged[str(name)] = {**(merged.get(str(name)) or {}), **raw}
            changes["tenants_file"] = _write(data_dir / "tenants.yaml", {**(tenants or {}), "tenants": merged})
    breaker = doc.get("breaker")
    if breaker is not None:
        changes["breaker_enabled"] = bool(breaker.get("enabled", True))
        for key in ("max_requests", "rate_window_s", "max_cost_usd", "cost_window_s", "max_repeats", "cooldown_s"):
            if key in breaker:
                changes[f"breaker_{key}"] = type(getattr(settings, f"breaker_{key}"))(breaker[key])
    return replace(settings, **changes)


def _write(path: Path, doc: Any) -> str:
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a child ``sluice worker`` needs to run with exactly these settings."""
    names = {PREFIX + f.name.upper() for f in fields(Settings)}
    env = {k: v for k, v in os.environ.items() if k not in names and k != "KAFKA_BOOTSTRAP"}  # keeps key variables
    for f in fields(Settings):
        value = getattr(settings, f.name)
        env[PREFIX + f.name.upper()] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    env["KAFKA_BOOTSTRAP"] = settings.bootstrap
    return env


def shadow_request(request: Request) -> Request:
    """The request as the shadow gets it: same id and content, no reply_to, created now (latency, TTLs)."""
    return replace(request, reply_to=None, created_at=now_ms())


async def execute(
    settings: Settings,
    logs: list[Logged],
    config_path: str | Path,
    *,
    timeout_s: float,
    keep: bool,
    shadow_id: str | None = None,
    log_file: Path | None = None,
) -> tuple[list[Replayed], Settings, int]:
    """Run the shadow; returns (actual vs shadow outcome per request, the shadow's settings, answers received)."""
    from streams.client import SluiceClient
    from streams.policy.replay import Outcome
    from streams.replay import log as replay_log
    from streams.topics import create_topics

    shadow_id = shadow_id or uuid.uuid4().hex[:8]
    shadow = shadow_settings(settings, shadow_id, config_path)
    await create_topics(shadow)
    started = now_ms()
    child = _spawn(shadow, log_file or Path(shadow.data_dir) / "worker.log")
    answered = 0
    try:
        requests = [log.request for log in logs if log.request is not None]
        async with SluiceClient(shadow) as client:
            futures = [await client.send(shadow_request(r)) for r in sorted(requests, key=lambda r: r.created_at)]
            done, _ = await asyncio.wait(futures, timeout=timeout_s) if futures else (set(), set())
            answered = sum(1 for f in done if not f.exception())
        records = await _final_decisions(shadow, started, answered)
    finally:
        _stop(child)
    shadow_logs = {log.id: log for log in replay_log.assemble([(started, None, _as_raw(r)) for r in requests], records)}
    replayed = []
    for log in logs:
        seen = shadow_logs.get(log.id)
        outcome = actual_outcome(seen) if seen is not None else Outcome("error", "none", reason="not_replayed")
        replayed.append(Replayed(log, actual_outcome(log), outcome, ["executed in the shadow"]))
    if not keep:
        await remove_shadow_topics(shadow)
        shutil.rmtree(shadow.data_dir, ignore_errors=True)
    return replayed, shadow, answered


async def _final_decisions(shadow: Settings, since: int, expected: int, wait_s: float = 30.0) -> list[Any]:
    """The shadow's decision records, once the meter has recorded ``expected`` answers (it follows the
    responses by a moment) or ``wait_s`` passed."""
    from streams.replay import log as replay_log

    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        records = await replay_log.read_range(shadow, shadow.topic("decisions"), since - 1, now_ms() + 60_000)
        finals = {parse_decision(r[2]).id for r in records if b'"stage":"meter"' in r[2]}
        if len(finals) >= expected or asyncio.get_running_loop().time() > deadline:
            return records
        await asyncio.sleep(0.5)


def _spawn(shadow: Settings, log_file: Path) -> subprocess.Popen[bytes]:
    """The shadow's roles in a child ``sluice worker`` (its own process group, so it is stopped as a whole)."""
    with open(log_file, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", *[a for r in ROLES for a in ("--role", r)]],
            env=settings_env(shadow),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _as_raw(request: Request) -> bytes:
    from schemas.records import dumps

    return dumps(request)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


async def remove_shadow_topics(shadow: Settings) -> None:
    from streams.topics import delete_prefixed_topics

    await delete_prefixed_topics(shadow)
