"""``sluice backfill``: push a JSONL file of requests through Sluice as batch traffic and collect the answers.

Batch priority keeps a backfill from delaying interactive users; a token bucket and an in-flight bound keep it
from flooding the broker. Ids default to a hash of each line, and answers are appended to ``--out`` as they
arrive, so an interrupted run resumes where it stopped: ids already answered there are not published again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import orjson

from schemas.parse import InvalidMessage, Limits, parse_request
from schemas.records import Request, Response, dumps, now_ms
from streams.settings import Settings

FINAL = ("ok", "rejected", "error")


@dataclass
class Loaded:
    requests: list[Request] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)
    duplicates: int = 0


def line_id(obj: dict[str, Any]) -> str:
    """A stable id from the line's content (keys sorted), so a rerun publishes the same ids."""
    return "bf-" + hashlib.blake2b(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()


def load_requests(path: Path, args: argparse.Namespace, settings: Settings) -> Loaded:
    """Parse every line with the broker's own validator; bad lines are recorded, never raised."""
    limits = Limits(settings.max_message_bytes, settings.max_prompt_chars, settings.default_max_tokens)
    out, seen = Loaded(), set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                data = dict(obj)
                data.setdefault("id", line_id(obj))
                if args.tenant and "tenant" not in data:
                    data["tenant"] = args.tenant
                # Without a session, each line is its own: one session per line never trips a loop breaker.
                data.setdefault("session", args.session or str(data["id"]))
                if args.max_tokens and "max_tokens" not in data:
                    data["max_tokens"] = args.max_tokens
                data["priority"] = "batch"
                request = parse_request(orjson.dumps(data), limits)
            except InvalidMessage as exc:
                out.malformed.append((number, f"{exc.reason}: {exc.detail[:120]}"))
                continue
            except ValueError as exc:  # orjson.JSONDecodeError is one
                out.malformed.append((number, f"malformed_json: {str(exc)[:120]}"))
                continue
            if request.id in seen:
                out.duplicates += 1
                continue
            seen.add(request.id)
            out.requests.append(request)
    return out


def answered_ids(path: Path) -> set[str]:
    """Ids that already have a final response in ``path`` (a torn last line from a crash is ignored)."""
    done: set[str] = set()
    if not path.exists():
        return done
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("status") in FINAL and isinstance(record.get("id"), str):
                done.add(record["id"])
    return done


class TokenBucket:
    """``rate`` tokens per second, bursts of up to ``max(1, rate)``; rate <= 0 means unlimited."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, max(1.0, rate)
        self.tokens, self.stamp = self.capacity, time.monotonic()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass
class Progress:
    total: int
    skipped: int = 0
    malformed: int = 0
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINAL, 0))
    unanswered: int = 0
    duplicates: int = 0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def add(self, response: Response) -> None:
        self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
        self.cost_usd += response.cost_usd
        self.prompt_tokens += response.usage.prompt_tokens
        self.completion_tokens += response.usage.completion_tokens
        self.cache_hits += response.tier == "cache"

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.answered / elapsed
        left = self.total - self.answered - self.unanswered
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        failed = self.malformed + self.unanswered + self.statuses["rejected"] + self.statuses["error"]
        return (
            f"sent {self.sent}/{self.total}  answered {self.answered}  failed {failed}  "
            f"{rate:.2f} req/s  ETA {eta}  cost ${self.cost_usd:.6f}"
        )

    def summary(self) -> str:
        s, answered = self.statuses, self.answered
        per_1k = self.cost_usd * 1000 / answered if answered else 0.0
        return "\n".join(
            [
                f"requests {self.total + self.skipped + self.malformed}: sent {self.sent}, "
                f"skipped {self.skipped} (already answered), malformed {self.malformed}"
                + (f", {self.duplicates} duplicate lines ignored" if self.duplicates else ""),
                f"answers {answered}: ok {s['ok']}, rejected {s['rejected']}, error {s['error']}; "
                f"no answer {self.unanswered}",
                f"cost ${self.cost_usd:.6f}   per 1k requests ${per_1k:.6f}   cache hits {self.cache_hits}",
                f"tokens {self.prompt_tokens + self.completion_tokens} "
                f"(prompt {self.prompt_tokens}, completion {self.completion_tokens})   "
                f"wall {time.monotonic() - self.started:.1f}s",
            ]
        )


class Ticker:
    """Redraws one status line ≤ 4×/s on a TTY; elsewhere prints a plain line every few seconds when it changed."""

    def __init__(self, progress: Progress, stream: IO[str]) -> None:
        self.progress, self.stream = progress, stream
        self.tty = stream.isatty()
        self.interval = 0.25 if self.tty else 5.0
        self._last = ""

    def draw(self, final: bool = False) -> None:
        text = self.progress.line()
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif text != self._last or final:
            self.stream.write(text + "\n")
        self._last = text
        self.stream.flush()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.draw()


async def backfill(
    settings: Settings, requests: list[Request], out: IO[bytes], progress: Progress, args: argparse.Namespace
) -> None:
    """Publish at the bucket's rate with at most ``max_in_flight`` outstanding; write each answer as it lands."""
    from streams.client import SluiceClient

    bucket, slots = TokenBucket(args.rate), asyncio.Semaphore(max(1, args.max_in_flight))
    timeout = args.timeout or settings.reply_timeout_s

    async def one(client: SluiceClient, request: Request) -> None:
        try:
            response = await client.submit(replace(request, created_at=now_ms()), timeout)
        except TimeoutError:
            progress.unanswered += 1
            return
        except Exception as exc:  # a publish failure: this request got no answer, the others go on
            print(f"\n{request.id}: could not publish: {exc}", file=sys.stderr)
            progress.unanswered += 1
            return
        finally:
            slots.release()
        out.write(dumps(response) + b"\n")
        out.flush()
        progress.add(response)

    async with SluiceClient(settings) as client:
        tasks = []
        for request in requests:
            await slots.acquire()
            await bucket.take()
            progress.sent += 1
            tasks.append(asyncio.create_task(one(client, request)))
        await asyncio.gather(*tasks)


def _ends_without_newline(path: Path) -> bool:
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) != b"\n"


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    path, out_path = Path(args.file), Path(args.out)
    try:
        loaded = load_requests(path, args, settings)
    except OSError as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    for number, why in loaded.malformed:
        print(f"{path}:{number}: skipped, {why}", file=sys.stderr)
    done = answered_ids(out_path)
    todo = [r for r in loaded.requests if r.id not in done]
    progress = Progress(
        total=len(todo),
        skipped=len(loaded.requests) - len(todo),
        malformed=len(loaded.malformed),
        duplicates=loaded.duplicates,
    )
    if progress.skipped:
        print(f"skipping {progress.skipped} requests already answered in {out_path}", file=sys.stderr)
    if loaded.duplicates:
        print(f"ignoring {loaded.duplicates} duplicate lines (same id)", file=sys.stderr)
    ticker = Ticker(progress, sys.stderr)

    async def go(handle: IO[bytes]) -> None:
        draw = asyncio.create_task(ticker.run())
        try:
            if todo:
                await backfill(settings, todo, handle, progress, args)
        finally:
            draw.cancel()
            ticker.draw(final=True)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    torn = _ends_without_newline(out_path)
    with out_path.open("ab") as handle:
        if torn:
            handle.write(b"\n")  # a torn last line from an interrupted run stays on its own line
        try:
            asyncio.run(go(handle))
        except KeyboardInterrupt:
            print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
            print(progress.summary())
            return 130
    print(progress.summary())
    return 1 if progress.unanswered else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backfill", help="send a JSONL file of requests as batch traffic; resumable")
    p.add_argument("file", help="JSONL: {id?, prompt | messages, tenant?, session?, max_tokens?, metadata?} per line")
    p.add_argument("--out", required=True, help="append each final response here (JSONL); answered ids are skipped")
    p.add_argument("--tenant", help="tenant for lines that name none")
    p.add_argument("--session", help="session for lines that name none (default: one session per line)")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second (0: unlimited; default 10)")
    p.add_argument("--max-in-flight", type=int, default=32, help="unanswered requests at most (default 32)")
    p.add_argument("--max-tokens", type=int, default=None, help="max_tokens for lines that name none")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait per reply (SLUICE_REPLY_TIMEOUT_S)")
    p.set_defaults(func=run)
