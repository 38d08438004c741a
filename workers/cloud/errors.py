"""Errors from cloud providers. ``retriable`` is decided here, once, so retry, breaker and fallback agree."""

from __future__ import annotations

from workers.errors import SluiceError

# 408 request timeout, 409 conflict (OpenAI's "try again"), 425 too early, 429 rate limited.
RETRIABLE_4XX = frozenset({408, 409, 425, 429})
# The provider rejected *our credentials*: the provider is unusable until a person fixes config, so the
# breaker counts these (unlike 400/404/422, which are about one request, not the provider's health).
AUTH_STATUSES = frozenset({401, 403})


def status_is_retriable(status: int | None) -> bool:
    """HTTP statuses where the same request may succeed later: throttling, timeouts and server faults."""
    if status is None:
        return False
    return status in RETRIABLE_4XX or status >= 500


class ProviderError(SluiceError):
    """A cloud call failed. Messages never contain API keys (providers scrub them before raising).

    ``kind`` says what failed without a status: ``http`` (see ``status``), ``timeout``, ``connect``,
    ``network`` or ``bad_response``. ``attempts`` is set by retry.py to how many calls were made in all.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        kind: str = "http",
        retry_after_s: float | None = None,
        retriable: bool | None = None,
    ) -> None:
        if retriable is None:
            # No status means the call never got a usable answer (timeout, connect, garbled reply): transient.
            retriable = status_is_retriable(status) if status is not None else True
        super().__init__(message, retriable=retriable)
        self.provider = provider
        self.status = status
        self.kind = kind
        self.retry_after_s = retry_after_s
        self.attempts = 1

    @property
    def code(self) -> str:
        """Short label for logs and fallback chains: the status, or the kind when there is none."""
        return str(self.status) if self.status is not None else self.kind

    @property
    def counts_against_provider(self) -> bool:
        """Whether this failure says something about the provider's health (for the circuit breaker)."""
        return self.retriable or self.status in AUTH_STATUSES


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret in ``text`` (e.g. a provider echoing our key in its error body) with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
