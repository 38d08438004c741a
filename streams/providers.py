"""Cloud providers and the fallback chain, from the ``providers:`` and ``fallback:`` sections of the tiers file.

```yaml
providers:
  openai:    {kind: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  anthropic: {kind: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
fallback:                       # tried in order; "local" = the local model as the last resort
  - {provider: openai, model: gpt-4o}
  - {provider: anthropic, model: claude-3-5-sonnet-20241022}
  - local
```
Without a ``fallback`` section the chain is the frontier tier's provider/model, then local. Keys are read from
the environment variables named here, never from the file, and never logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.policy.provider_breaker import BreakerRegistry
from streams.tiers import TierConfig
from workers.cloud.anthropic import AnthropicProvider
from workers.cloud.fallback import FallbackChain, LocalCall, LocalLink, ProviderLink
from workers.cloud.openai_compat import OpenAICompatProvider
from workers.cloud.provider import CloudProvider, api_key_from_env
from workers.cloud.retry import RetryPolicy
from workers.errors import ConfigError

DEFAULT_PROVIDERS: dict[str, dict[str, str]] = {
    "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
    "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com", "api_key_env": "ANTHROPIC_API_KEY"},
}


@dataclass(frozen=True)
class ChainSpec:
    providers: Mapping[str, Mapping[str, Any]]
    links: tuple[tuple[str, str], ...]  # (provider, model); ("local", "") for the local model
    timeout_s: float = 30.0
    max_attempts: int = 3


def read_chain_spec(path: str | Path | None, tiers: TierConfig) -> ChainSpec:
    doc: dict[str, Any] = {}
    if path:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    providers = {**DEFAULT_PROVIDERS, **(doc.get("providers") or {})}
    links: list[tuple[str, str]] = []
    for item in doc.get("fallback") or []:
        if item == "local":
            links.append(("local", ""))
        elif isinstance(item, Mapping) and "provider" in item and "model" in item:
            links.append((str(item["provider"]), str(item["model"])))
        else:
            raise ConfigError(f"fallback entries are 'local' or {{provider, model}}, got {item!r}")
    if not links:
        frontier = tiers.frontier
        links = [(frontier.provider, frontier.model), ("local", "")]
    for provider, _ in links:
        if provider != "local" and provider not in providers:
            raise ConfigError(f"fallback names provider {provider!r}, which has no entry under providers:")
    retry = doc.get("retry") or {}
    return ChainSpec(
        providers=providers,
        links=tuple(links),
        timeout_s=float(retry.get("timeout_s", 30.0)),
        max_attempts=int(retry.get("max_attempts", 3)),
    )


def make_provider(name: str, spec: Mapping[str, Any]) -> CloudProvider:
    kind = spec.get("kind", name)
    key = api_key_from_env(str(spec["api_key_env"])) if spec.get("api_key_env") else None
    base_url = str(spec.get("base_url") or DEFAULT_PROVIDERS.get(kind, {}).get("base_url", ""))
    if kind == "openai":
        return OpenAICompatProvider(api_key=key, base_url=base_url, name=name)
    if kind == "anthropic":
        return AnthropicProvider(api_key=key, base_url=base_url, name=name)
    raise ConfigError(f"provider {name!r}: unknown kind {kind!r} (openai | anthropic)")


class ChainFactory:
    """Builds the chain for the current spec; provider clients and breakers persist across reloads."""

    def __init__(self, local: LocalCall | None, breakers: BreakerRegistry | None = None) -> None:
        self.local = local
        self.breakers = breakers or BreakerRegistry()
        self._clients: dict[tuple[str, str], CloudProvider] = {}
        self._cached: tuple[ChainSpec, FallbackChain] | None = None

    def chain(self, spec: ChainSpec) -> FallbackChain:
        if self._cached is not None and self._cached[0] == spec:
            return self._cached[1]
        links: list[ProviderLink | LocalLink] = []
        for provider, model in spec.links:
            if provider == "local":
                if self.local is not None:
                    links.append(LocalLink(self.local))
                continue
            pspec = spec.providers[provider]
            ident = (provider, repr(sorted(pspec.items())))
            if ident not in self._clients:
                self._clients[ident] = make_provider(provider, pspec)
            links.append(ProviderLink(self._clients[ident], model, timeout_s=spec.timeout_s))
        chain = FallbackChain(links, breakers=self.breakers, retry=RetryPolicy(max_attempts=spec.max_attempts))
        self._cached = (spec, chain)
        return chain

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def link_names(links: Sequence[ProviderLink | LocalLink]) -> list[str]:
    return [f"{link.provider.name}:{link.model}" if isinstance(link, ProviderLink) else "local" for link in links]
