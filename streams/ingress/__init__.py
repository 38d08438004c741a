"""``sluice serve``: the OpenAI-compatible HTTP ingress, Prometheus ``/metrics`` and the dashboard in one process.

Wire it into the CLI with ``streams.ingress.register(subparsers)``; configuration beyond ``Settings`` (address,
key file, timeouts) comes from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``sluice`` subcommands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="OpenAI-compatible HTTP API (/v1/chat/completions), /metrics and the dashboard"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--keys", required=True, help="YAML/JSON file mapping API keys to tenants (re-read on change)")
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds to await a reply (default SLUICE_REPLY_TIMEOUT_S)"
    )
    p.add_argument("--interval", type=float, default=2.0, help="seconds between lag reads / dashboard samples")
    p.add_argument(
        "--usage-from",
        choices=("end", "beginning"),
        default="end",
        help="count sluice.usage from now on (end) or replay what the topic retains (beginning)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from streams.ingress.keys import KeyMap
    from streams.ingress.server import create_app
    from streams.settings import Settings
    from streams.tiers import TierConfigError
    from streams.topics import create_topics

    settings = Settings.from_env()
    logging.getLogger("streams").setLevel(settings.log_level.upper())
    try:
        keys = KeyMap(args.keys)
        app = create_app(settings, keys, timeout_s=args.timeout, interval_s=args.interval, usage_from=args.usage_from)
    except (ValueError, TierConfigError) as exc:
        print(f"sluice serve: {exc}", file=sys.stderr)
        return 2
    asyncio.run(create_topics(settings))  # idempotent; the ingress publishes, so its topics must exist
    print(f"serving on http://{args.host}:{args.port} (Kafka {settings.bootstrap})", file=sys.stderr)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0
