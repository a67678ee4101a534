"""Test doubles for upstream LLM providers, on loopback only (never for Kubernetes: tests use a
real API server). Also runnable for demos (``sluice fake-upstream --provider ...``)."""

from __future__ import annotations

from typing import Any

from sluice.fakes.anthropic import FakeAnthropic
from sluice.fakes.azure import FakeAzureOpenAI
from sluice.fakes.upstream import FakeUpstream, SeenRequest

__all__ = [
    "PROVIDERS",
    "FakeAnthropic",
    "FakeAzureOpenAI",
    "FakeUpstream",
    "SeenRequest",
    "fake_for",
]

# An Upstream's ``provider`` and the fake that speaks it.
PROVIDERS: dict[str, type[FakeUpstream]] = {
    "openai": FakeUpstream,
    "openai-compatible": FakeUpstream,
    "anthropic": FakeAnthropic,
    "azure-openai": FakeAzureOpenAI,
}


def fake_for(provider: str, **options: Any) -> FakeUpstream:
    """The fake for an Upstream's ``provider`` (``FakeUpstream`` options as keywords)."""
    return PROVIDERS[provider](**options)
