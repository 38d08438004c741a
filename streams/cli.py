"""The ``sluice`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence

import orjson

from streams.settings import Settings


def _settings() -> Settings:
    return Settings.from_env()


def cmd_up(args: argparse.Namespace) -> int:
    from streams.cluster import start_local_kafka
    from streams.roles import ROLES, run_worker
    from streams.topics import create_topics

    settings = _settings()
    if start_local_kafka(settings):
        print(f"started Kafka at {settings.bootstrap}", file=sys.stderr)
    asyncio.run(create_topics(settings))
    roles = args.role or list(ROLES)
    print(f"running roles {', '.join(roles)} against {settings.bootstrap}", file=sys.stderr)
    run_worker(settings, roles)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.roles import run_worker

    run_worker(_settings(), args.role)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from streams.client import SluiceClient, make_request
    from streams.streaming_client import print_stream

    settings = _settings()
    metadata = {"feature": args.feature} if args.feature else {}
    request = make_request(
        args.prompt,
        tenant=args.tenant,
        session=args.session,
        max_tokens=args.max_tokens,
        priority=args.priority,
        metadata=metadata,
    )

    async def go() -> int:
        async with SluiceClient(settings) as client:
            try:
                if args.stream:  # tokens to stdout as they arrive, then the facts below
                    response = await print_stream(client, request, args.timeout, echo=not args.json)
                else:
                    response = await client.submit(request, timeout=args.timeout)
            except TimeoutError:
                print(f"no reply for {request.id} within {args.timeout or settings.reply_timeout_s}s", file=sys.stderr)
                return 2
        if args.json:
            print(orjson.dumps(response.to_dict()).decode())
        elif response.status == "ok":
            print("" if args.stream else response.text)
            print(
                f"[{response.tier} · {response.model} · {response.usage.prompt_tokens}+"
                f"{response.usage.completion_tokens} tokens · ${response.cost_usd:.6f} · {response.latency_ms:.0f} ms]",
                file=sys.stderr,
            )
        else:
            print(f"{response.status}: {response.reason}", file=sys.stderr)
        return 0 if response.status == "ok" else 1

    return asyncio.run(go())


def cmd_topics(args: argparse.Namespace) -> int:
    from streams.topics import create_topics, list_topics

    settings = _settings()
    if args.action == "create":
        created = asyncio.run(create_topics(settings))
        print("created: " + (", ".join(created) if created else "nothing (all exist)"))
    else:
        for name in sorted(asyncio.run(list_topics(settings))):
            print(name)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streams.broker import LocalBroker
    from streams.cluster import broker_command, discover_nodes

    settings = _settings()
    broker = LocalBroker(settings)
    if settings.uses_external_cluster:
        print(f"KAFKA_BOOTSTRAP={settings.bootstrap}: using that cluster, nothing to {args.action}")
        return 0
    nodes = args.nodes or settings.kafka_nodes
    if nodes > 1 or (args.action != "start" and not args.nodes and discover_nodes(settings) > 1):
        return broker_command(settings, args.action, args.nodes)
    if args.action == "start":
        started = broker.start()
        print(("started" if started else "already running") + f" at {settings.bootstrap} (log: {broker.log_file})")
    elif args.action == "stop":
        print("stopped" if broker.stop() else "not running")
    else:
        pid = broker.running_pid()
        print(f"running, pid {pid}" if pid else "not running")
        return 0 if pid else 1
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from streams.cache_admin import parse_duration_s, request_purge

    older = parse_duration_s(args.older_than) if args.older_than else None
    command, partitions = asyncio.run(request_purge(_settings(), args.tenant, older))
    scope = f"entries older than {args.older_than}" if older is not None else "all entries"
    print(f"purge {command.id}: {scope} of tenant {args.tenant!r}, sent to {partitions} lookup partitions")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from streams.cache_admin import parse_duration_s
    from streams.report import build_report, read_usage, render_chart, render_text

    settings = _settings()
    since = None
    if args.since:
        since = int((time.time() - parse_duration_s(args.since)) * 1000)
    report = build_report(asyncio.run(read_usage(settings, since)))
    print(render_text(report))
    if args.chart:
        render_chart(report, Path(args.chart))
        print(f"\nchart written to {args.chart}")
    if args.json:
        print(orjson.dumps(report.summary()).decode())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Streaming middleware that cuts LLM inference cost.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start Kafka if needed, create topics, run all roles in this process")
    up.add_argument("--role", action="append", help="run only these roles (repeatable)")
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="run one or more roles (scale out by starting more processes)")
    worker.add_argument("--role", action="append", required=True, help="admit | local (repeatable)")
    worker.set_defaults(func=cmd_worker)

    submit = sub.add_parser("submit", help="publish one prompt, wait for the reply and print it")
    submit.add_argument("prompt")
    submit.add_argument("--tenant", required=True)
    submit.add_argument("--session", required=True)
    submit.add_argument("--max-tokens", type=int, default=128)
    submit.add_argument("--priority", choices=("interactive", "batch"), default="interactive")
    submit.add_argument("--feature", help="metadata.feature, for cost attribution")
    submit.add_argument("--timeout", type=float, default=None, help="seconds to wait (default SLUICE_REPLY_TIMEOUT_S)")
    submit.add_argument("--json", action="store_true", help="print the whole response record as JSON")
    submit.add_argument("--stream", action="store_true", help="print the tokens as they are generated")
    submit.set_defaults(func=cmd_submit)

    topics = sub.add_parser("topics", help="create or list Sluice's topics")
    topics.add_argument("action", choices=("create", "list"))
    topics.set_defaults(func=cmd_topics)

    cache = sub.add_parser("cache", help="manage the semantic cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    purge = cache_sub.add_parser("purge", help="drop a tenant's cached answers (every cache process)")
    purge.add_argument("--tenant", required=True)
    purge.add_argument("--older-than", help="only entries older than this (e.g. 12h, 7d)")
    purge.set_defaults(func=cmd_cache)

    report = sub.add_parser("report", help="cost per tenant, session, tier and feature from sluice.usage")
    report.add_argument("--since", help="only the last period, e.g. 1h, 7d (default: all retained usage)")
    report.add_argument("--json", action="store_true", help="end with one JSON object")
    report.add_argument("--chart", default="sluice-report.html", help="HTML chart path ('' to skip)")
    report.set_defaults(func=cmd_report)

    from streams import backfill, ingress, top

    ingress.register(sub)
    backfill.register(sub)
    from streams.replay import command as replay_command

    replay_command.register(sub)
    top.register(sub)

    evaluate = sub.add_parser("eval", help="offline evaluation on labelled data")
    eval_sub = evaluate.add_subparsers(dest="eval_command", required=True)
    _register_evals(eval_sub)

    broker = sub.add_parser(
        "broker", help="the local KRaft broker, or a local cluster with --nodes N (ignored with KAFKA_BOOTSTRAP)"
    )
    broker.add_argument("action", choices=("start", "stop", "status"))
    broker.add_argument(
        "--nodes", type=int, default=None, help="a local KRaft cluster of N broker+controller nodes (see README)"
    )
    broker.set_defaults(func=cmd_broker)
    return parser


def _register_evals(eval_sub: argparse._SubParsersAction) -> None:
    from streams.evaluation import cache_eval, router_eval

    cache_eval.register(eval_sub)
    router_eval.register(eval_sub)


def _install_log_redaction() -> None:
    """Keys and prompt text never reach the logs (SLUICE_LOG_REDACT); broken settings still get the default (on)."""
    from streams.logging_setup import install

    try:
        settings = _settings()
    except ValueError:
        settings = Settings()
    install(settings)


MODEL_COMMANDS = frozenset({"up", "worker"})  # the commands whose roles load local models


def _load_native_first(argv: Sequence[str]) -> None:
    """Before the parser imports numpy: a CUDA build of llama.cpp must load first (workers/local/native_order.py)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in MODEL_COMMANDS:
        return
    from workers.local.native_order import load_llama_first

    with contextlib.suppress(ValueError):  # broken settings are reported by the command that reads them
        load_llama_first(_settings())


def main(argv: Sequence[str] | None = None) -> int:
    _load_native_first(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    _install_log_redaction()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `sluice report | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
