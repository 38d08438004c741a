"""Cloud tier: forwarders to hosted model APIs, with retries, circuit breakers and a fallback chain."""

from __future__ import annotations

from workers.cloud.anthropic import AnthropicProvider
from workers.cloud.errors import ProviderError
from workers.cloud.fallback import AllProvidersFailed, Attempt, ChainResult, FallbackChain, LocalLink, ProviderLink
from workers.cloud.openai_compat import OpenAICompatProvider
from workers.cloud.provider import CloudProvider, api_key_from_env
from workers.cloud.retry import RetryPolicy, RetryResult, parse_retry_after, retry_call

__all__ = [
    "AllProvidersFailed",
    "AnthropicProvider",
    "Attempt",
    "ChainResult",
    "CloudProvider",
    "FallbackChain",
    "LocalLink",
    "OpenAICompatProvider",
    "ProviderError",
    "ProviderLink",
    "RetryPolicy",
    "RetryResult",
    "api_key_from_env",
    "parse_retry_after",
    "retry_call",
]
