"""The cloud-provider port and the HTTP plumbing the adapters share (pooled client, error mapping, scrubbing).

Keys come from the environment via ``api_key_from_env`` (config names the variable, never the key) and are
kept in a private attribute: they never reach logs, reprs or error messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

import httpx
import orjson

from schemas.records import Message
from workers.cloud.errors import ProviderError, scrub
from workers.cloud.retry import parse_retry_after
from workers.ports import Completion

log = logging.getLogger(__name__)

ERROR_EXCERPT_CHARS = 300


class CloudProvider(Protocol):
    """A hosted model API. ``complete`` raises ``ProviderError`` (with ``retriable``) on any failure."""

    name: str

    async def complete(
        self, messages: Sequence[Message], max_tokens: int, model: str, *, timeout_s: float
    ) -> Completion: ...

    async def aclose(self) -> None: ...


def api_key_from_env(var_name: str) -> str | None:
    """The key in environment variable ``var_name`` (config holds the variable's name, not the secret)."""
    if not var_name:
        return None
    value = os.environ.get(var_name, "").strip()
    return value or None


class HttpProvider:
    """Base for JSON-over-HTTP providers: one pooled ``httpx.AsyncClient``, errors mapped to ``ProviderError``."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str | None,
        client: httpx.AsyncClient | None = None,
        max_connections: int = 32,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.__key = api_key or ""
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,  # no proxies from the environment: calls go exactly where config says
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    @property
    def _api_key(self) -> str:
        return self.__key

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _error(self, message: str, **kwargs: Any) -> ProviderError:
        return ProviderError(scrub(f"{self.name}: {message}", (self.__key,)), provider=self.name, **kwargs)

    async def _post_json(
        self, path: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """POST ``body``; return the decoded JSON object or raise a scrubbed ``ProviderError``.

        ``timeout_s`` bounds the whole exchange (httpx's own timeouts are per phase, so a server trickling
        bytes could otherwise hold us far longer). httpx exceptions are not chained: they hold the request,
        headers (and key) included.
        """
        url = f"{self.base_url}{path}"
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.post(url, json=body, headers=headers, timeout=httpx.Timeout(timeout_s))
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._error(f"timed out after {timeout_s:.1f}s ({type(exc).__name__})", kind="timeout") from None
        except httpx.ConnectError as exc:
            raise self._error(f"cannot connect: {type(exc).__name__}: {exc}", kind="connect") from None
        except httpx.TransportError as exc:
            raise self._error(f"network error: {type(exc).__name__}: {exc}", kind="network") from None
        elapsed_ms = (time.monotonic() - started) * 1000
        log.debug("%s POST %s -> %d in %.0fms", self.name, url, response.status_code, elapsed_ms)
        if response.status_code >= 400:
            raise self._error(
                f"HTTP {response.status_code}: {_excerpt(response)}",
                status=response.status_code,
                retry_after_s=_retry_after(response),
            )
        try:
            data = response.json()
        except ValueError:
            raise self._error(
                f"HTTP {response.status_code} with a body that is not JSON", kind="bad_response"
            ) from None
        if not isinstance(data, dict):
            raise self._error("reply is not a JSON object", kind="bad_response")
        return data

    async def _events(
        self, path: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float
    ) -> AsyncGenerator[tuple[str, str], None]:
        """POST ``body`` and yield the reply's server-sent events as (event, data) pairs.

        ``timeout_s`` bounds the wait for the reply's headers and then each gap between lines (a stream may
        legitimately last longer than one non-streamed call). Errors are mapped as in :meth:`_post_json`;
        closing the generator (``aclosing``) closes the connection, which stops the provider generating.
        """
        url = f"{self.base_url}{path}"
        request = self._client.build_request("POST", url, json=body, headers=headers, timeout=httpx.Timeout(timeout_s))
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._error(f"timed out after {timeout_s:.1f}s ({type(exc).__name__})", kind="timeout") from None
        except httpx.ConnectError as exc:
            raise self._error(f"cannot connect: {type(exc).__name__}: {exc}", kind="connect") from None
        except httpx.TransportError as exc:
            raise self._error(f"network error: {type(exc).__name__}: {exc}", kind="network") from None
        try:
            if response.status_code >= 400:
                await response.aread()
                raise self._error(
                    f"HTTP {response.status_code}: {_excerpt(response)}",
                    status=response.status_code,
                    retry_after_s=_retry_after(response),
                )
            lines = response.aiter_lines()
            event = ""
            data: list[str] = []
            while True:
                try:
                    async with asyncio.timeout(timeout_s):
                        line = await anext(lines)
                except StopAsyncIteration:
                    break
                except (TimeoutError, httpx.TimeoutException):
                    raise self._error(f"stream stalled for {timeout_s:.1f}s", kind="timeout") from None
                except httpx.TransportError as exc:
                    raise self._error(f"stream broke: {type(exc).__name__}: {exc}", kind="network") from None
                if not line:  # a blank line ends an event
                    if data:
                        yield event or "message", "\n".join(data)
                    event, data = "", []
                elif not line.startswith(":"):  # ":..." is a comment (keep-alive)
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
            if data:
                yield event or "message", "\n".join(data)
        finally:
            await response.aclose()

    def _event_json(self, data: str) -> dict[str, Any]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._error("a stream event is not JSON", kind="bad_response") from None
        if not isinstance(obj, dict):
            raise self._error("a stream event is not a JSON object", kind="bad_response")
        return obj


def _retry_after(response: httpx.Response) -> float | None:
    """OpenAI also sends ``retry-after-ms``; prefer it when present (finer grained)."""
    ms = response.headers.get("retry-after-ms")
    if ms is not None:
        seconds = parse_retry_after(ms)
        if seconds is not None:
            return seconds / 1000
    return parse_retry_after(response.headers.get("retry-after"))


def _excerpt(response: httpx.Response) -> str:
    """The provider's own error message when it has the usual shape, else a bounded slice of the body."""
    text = response.text
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = err["message"]
        elif isinstance(err, str):
            text = err
    text = " ".join(text.split())
    return text[:ERROR_EXCERPT_CHARS] or response.reason_phrase


def usage_int(usage: Any, key: str) -> int:
    """A token count from a provider's ``usage`` object (0 when missing or malformed)."""
    if not isinstance(usage, dict):
        return 0
    value = usage.get(key)
    return value if isinstance(value, int) and value >= 0 else 0
