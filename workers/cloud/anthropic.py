"""Anthropic's Messages API. System turns go to the top-level ``system`` field (the API has no system role)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from schemas.records import Message
from workers.cloud.provider import HttpProvider, usage_int
from workers.ports import Completion

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# Anthropic's stop reasons, in the OpenAI vocabulary that Completion uses everywhere else.
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def to_anthropic(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, str]]]:
    """Split out the system prompt and merge same-role neighbours (the API wants user/assistant turns).

    Tool turns become user turns: Sluice carries their text only, not tool-call structure.
    """
    system = [m.content for m in messages if m.role == "system"]
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": role, "content": m.content})
    return ("\n\n".join(system) if system else None), turns


class AnthropicProvider(HttpProvider):
    """``POST {base_url}/v1/messages`` with ``x-api-key``; usage from ``usage.input_tokens/output_tokens``."""

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        name: str = "anthropic",
        client: httpx.AsyncClient | None = None,
        max_connections: int = 32,
    ) -> None:
        super().__init__(name=name, base_url=base_url, api_key=api_key, client=client, max_connections=max_connections)

    async def complete(
        self, messages: Sequence[Message], max_tokens: int, model: str, *, timeout_s: float
    ) -> Completion:
        system, turns = to_anthropic(messages)
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
        if system is not None:
            body["system"] = system
        headers = {
            "Content-Type": "application/json",
            "x-api-key": self._api_key,
            "anthropic-version": ANTHROPIC_VERSION,
        }
        data = await self._post_json("/v1/messages", headers, body, timeout_s)
        content = data.get("content")
        if not isinstance(content, list):
            raise self._error("reply has no content list", kind="bad_response")
        text = "".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)
        )
        usage = data.get("usage")
        stop = str(data.get("stop_reason") or "end_turn")
        return Completion(
            text=text,
            prompt_tokens=usage_int(usage, "input_tokens"),
            completion_tokens=usage_int(usage, "output_tokens"),
            model=str(data.get("model") or model),
            finish_reason=STOP_REASONS.get(stop, stop),
        )

    async def stream(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        model: str,
        *,
        timeout_s: float,
        on_text: Callable[[str], Awaitable[None]],
        cancelled: Callable[[], bool] | None = None,
    ) -> Completion:
        """The same call with ``stream: true``: ``message_start`` carries the input tokens,
        ``content_block_delta`` the text, ``message_delta`` the stop reason and output tokens. ``cancelled()``
        true stops reading; output tokens are then one per delta received."""
        system, turns = to_anthropic(messages)
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns, "stream": True}
        if system is not None:
            body["system"] = system
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "x-api-key": self._api_key,
            "anthropic-version": ANTHROPIC_VERSION,
        }
        parts: list[str] = []
        served, stop, deltas = model, "end_turn", 0
        input_tokens = output_tokens = 0
        async with aclosing(self._events("/v1/messages", headers, body, timeout_s)) as events:
            async for name, data in events:
                event = self._event_json(data)
                kind = str(event.get("type") or name)
                if kind == "error":
                    raise self._error(f"stream error: {str(event.get('error'))[:200]}", kind="stream_error")
                if kind == "message_start":
                    message: dict[str, Any] = event["message"] if isinstance(event.get("message"), dict) else {}
                    served = str(message.get("model") or served)
                    input_tokens = usage_int(message.get("usage"), "input_tokens")
                    output_tokens = usage_int(message.get("usage"), "output_tokens")
                elif kind == "content_block_delta":
                    delta = event.get("delta")
                    text = delta.get("text") if isinstance(delta, dict) else None
                    if isinstance(text, str) and text:
                        parts.append(text)
                        deltas += 1
                        await on_text(text)
                elif kind == "message_delta":
                    delta = event.get("delta")
                    if isinstance(delta, dict) and delta.get("stop_reason"):
                        stop = str(delta["stop_reason"])
                    output_tokens = usage_int(event.get("usage"), "output_tokens") or output_tokens
                elif kind == "message_stop":
                    break
                if cancelled is not None and cancelled():
                    stop = "cancelled"
                    break
        if stop == "cancelled":
            output_tokens = max(output_tokens, deltas)
        return Completion(
            text="".join(parts),
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            model=served,
            finish_reason=STOP_REASONS.get(stop, stop),
        )
