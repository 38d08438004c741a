"""Fixtures shared by the unit tests of the cloud forwarders: a provider simulator on loopback, and a provider
of each protocol pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fixtures.cloud import ANTHROPIC_KEY, OPENAI_KEY
from tests.fixtures.provider_sim import ProviderSim
from workers.cloud import AnthropicProvider, OpenAICompatProvider


@pytest.fixture
async def sim() -> AsyncIterator[ProviderSim]:
    async with ProviderSim() as s:
        yield s


@pytest.fixture
async def openai(sim: ProviderSim) -> AsyncIterator[OpenAICompatProvider]:
    provider = OpenAICompatProvider(api_key=OPENAI_KEY, base_url=sim.openai_base_url)
    yield provider
    await provider.aclose()


@pytest.fixture
async def anthropic(sim: ProviderSim) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(api_key=ANTHROPIC_KEY, base_url=sim.anthropic_base_url)
    yield provider
    await provider.aclose()
