"""``sluice replay --since T1 --until T2 [--tenant X] --config candidate.yaml [--json] [--execute]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime

import orjson

from streams.settings import Settings


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """An instant: epoch milliseconds, an ISO 8601 time (UTC unless it says otherwise), ``now``, or a duration
    ago (``90m``, ``7d``)."""
    from streams.cache_admin import parse_duration_s

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    text = text.strip()
    if text == "now":
        return now_ms
    if text.isdigit():
        return int(text)
    try:
        return now_ms - int(parse_duration_s(text) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad time {text!r}: use epoch ms, ISO 8601, 'now' or a duration ago like 7d") from None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def run(args: argparse.Namespace) -> int:
    from streams.policy.replay import replay
    from streams.policy.token_count import count_chat_tokens
    from streams.replay import log as replay_log
    from streams.replay.candidate import load_candidate
    from streams.replay.report import build, render_text

    settings = Settings.from_env()
    try:
        since, until = parse_time_ms(args.since), parse_time_ms(args.until)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    candidate = load_candidate(args.config, settings)
    logs = asyncio.run(replay_log.load(settings, since, until, args.tenant))
    if args.execute:
        from streams.replay.shadow import execute

        timeout = args.timeout or max(60.0, settings.reply_timeout_s)
        replayed, shadow, answered = asyncio.run(
            execute(settings, logs, args.config, timeout_s=timeout, keep=args.keep_shadow, shadow_id=args.shadow_id)
        )
        print(f"shadow {shadow.topic_prefix}: {answered} of {len(logs)} requests answered", file=sys.stderr)
    else:
        replayed = replay(logs, candidate, count_chat_tokens)
        shadow = None
    report = build(replayed, since=since, until=until, tenant=args.tenant)
    report["mode"] = "execute" if args.execute else "dry_run"
    if shadow is not None:
        report["shadow_prefix"] = shadow.topic_prefix
        report["shadow_kept"] = bool(args.keep_shadow)
    print(render_text(report))
    if args.json:
        print(orjson.dumps(report).decode())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay", help="re-decide a time range of the request log under a candidate config (no model calls)"
    )
    p.add_argument("--since", required=True, help="start: epoch ms, ISO 8601, or a duration ago (e.g. 7d)")
    p.add_argument("--until", default="now", help="end (same forms; default now)")
    p.add_argument("--tenant", help="only this tenant's requests")
    p.add_argument("--config", required=True, help="candidate YAML (cache, router, tiers, budgets, breaker)")
    p.add_argument("--json", action="store_true", help="end with one JSON object")
    p.add_argument("--execute", action="store_true", help="re-run the range for real in a shadow namespace")
    p.add_argument("--keep-shadow", action="store_true", help="keep the shadow's topics and data (with --execute)")
    p.add_argument("--shadow-id", help="name the shadow namespace <prefix>-shadow-<id> (default: random)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the shadow's answers")
    p.set_defaults(func=run)
