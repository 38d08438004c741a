"""OpenAI-compatible chat completions (OpenAI itself, and servers that copy its API, e.g. llama-cpp's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from schemas.records import Message
from streams.policy.token_count import count_chat_tokens
from workers.cloud.provider import HttpProvider, usage_int
from workers.ports import Completion

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatProvider(HttpProvider):
    """``POST {base_url}/chat/completions`` with a Bearer key; usage comes from the reply's ``usage``.

    ``max_tokens_field``: newer OpenAI models want ``max_completion_tokens``; most compatible servers only
    know ``max_tokens``.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        name: str = "openai",
        max_tokens_field: str = "max_tokens",
        client: httpx.AsyncClient | None = None,
        max_connections: int = 32,
    ) -> None:
        super().__init__(name=name, base_url=base_url, api_key=api_key, client=client, max_connections=max_connections)
        self.max_tokens_field = max_tokens_field

    async def complete(
        self, messages: Sequence[Message], max_tokens: int, model: str, *, timeout_s: float
    ) -> Completion:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            self.max_tokens_field: max_tokens,
            "stream": False,
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:  # local compatible servers often need none
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = await self._post_json("/chat/completions", headers, body, timeout_s)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._error("reply has no choices", kind="bad_response")
        choice = choices[0]
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        usage = data.get("usage")
        return Completion(
            text=content if isinstance(content, str) else "",
            prompt_tokens=usage_int(usage, "prompt_tokens"),
            completion_tokens=usage_int(usage, "completion_tokens"),
            model=str(data.get("model") or model),
            finish_reason=str(choice.get("finish_reason") or "stop"),
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
        """The same call with ``stream: true``: ``on_text`` gets each content delta as it arrives; usage comes
        from the final event (``stream_options.include_usage``). ``cancelled()`` true stops reading (closing
        the connection stops the provider); usage is then counted from what arrived."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            self.max_tokens_field: max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        parts: list[str] = []
        usage: Any = None
        finish, served, deltas = "stop", model, 0
        async with aclosing(self._events("/chat/completions", headers, body, timeout_s)) as events:
            async for _, data in events:
                if data.strip() == "[DONE]":
                    break
                event = self._event_json(data)
                if "error" in event:
                    raise self._error(f"stream error: {str(event['error'])[:200]}", kind="stream_error")
                served = str(event.get("model") or served)
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(text, str) and text:
                        parts.append(text)
                        deltas += 1
                        await on_text(text)
                    if isinstance(choice, dict) and choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
                if cancelled is not None and cancelled():
                    finish = "cancelled"
                    break
        if finish == "cancelled":  # no usage event will come: count the prompt, one token per delta
            return Completion("".join(parts), count_chat_tokens(messages, served), deltas, served, finish)
        return Completion(
            text="".join(parts),
            prompt_tokens=usage_int(usage, "prompt_tokens"),
            completion_tokens=usage_int(usage, "completion_tokens"),
            model=served,
            finish_reason=finish,
        )
