"""The bench's bare llama-cpp-python way and its bookkeeping (bench/local_bench.py): prompts, per-way tallies, and
direct calls on llama_cpp instances taking prompts from a shared queue."""

from __future__ import annotations

import argparse
import queue
import time
from typing import Any

from streams.settings import Settings

PROMPT = "Explain in a short paragraph how a write-ahead log lets a database recover after a crash."


def prompt(i: int) -> str:
    """Request i's prompt. Distinct prompts, as a model behind Sluice sees them (a repeated prompt is an exact
    cache hit): a bare llama_cpp.Llama would otherwise skip evaluating a repeated prompt (its KV prefix reuse),
    which Sluice gives up on purpose (LlamaCppModel._fresh: same answer whatever ran before)."""
    return f"Question {i + 1}. {PROMPT}"


class Tally:
    """Completion tokens and wall seconds of one way, over every round."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self.requests = 0
        self.texts: set[tuple[int, str]] = set()  # (prompt index, text)
        self.latencies: list[float] = []

    def add(self, tokens: int, seconds: float, requests: int) -> None:
        self.tokens, self.seconds, self.requests = (
            self.tokens + tokens,
            self.seconds + seconds,
            self.requests + requests,
        )

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        out: dict[str, Any] = dict(
            requests=self.requests, completion_tokens=self.tokens, seconds=round(self.seconds, 3)
        )
        out.update(tokens_per_s=round(self.tokens / self.seconds, 2) if self.seconds else None)
        out.update(distinct_outputs=len(self.texts))
        if lat:
            out.update(p50_request_s=round(lat[len(lat) // 2], 3), max_request_s=round(lat[-1], 3))
        return out


def bare_calls(
    llm: Any, settings: Settings, args: argparse.Namespace, work: queue.SimpleQueue[int], tally: Tally
) -> int:
    """The ceiling: the same call LlamaCppModel makes, straight on llama_cpp, one after another, taking prompt
    indexes from ``work`` (shared by every instance, so none idles while another has a backlog); tokens made."""
    tokens = 0
    while True:
        try:
            i = work.get_nowait()
        except queue.Empty:
            return tokens
        t = time.perf_counter()
        llm.reset()  # as LlamaCppModel._fresh: every prompt evaluated from the start
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt(i)}],
            max_tokens=args.max_tokens,
            temperature=settings.local_temperature,
            seed=0,
        )
        tally.latencies.append(time.perf_counter() - t)
        tokens += int(out["usage"]["completion_tokens"])
        tally.texts.add((i, out["choices"][0]["message"].get("content") or ""))


def work_queue(n: int) -> queue.SimpleQueue[int]:
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(n):
        work.put(i)
    return work
