"""Each provider's wire format, behind one small seam: how a request to it is authenticated and
addressed. One module per provider; nothing here does I/O.

Today every provider is spoken to in OpenAI's format (the proxy forwards OpenAI-style bodies);
what differs is authentication and, for Azure, the api-version the probes send. Translating
Anthropic's Messages API and Azure's deployment paths fills in this seam next.
"""

from __future__ import annotations

from sluice.providers.anthropic import ANTHROPIC
from sluice.providers.azure import AZURE_OPENAI
from sluice.providers.base import Provider
from sluice.providers.openai import OPENAI, OPENAI_COMPATIBLE

__all__ = ["PROVIDERS", "Provider", "provider"]

PROVIDERS: dict[str, Provider] = {
    p.name: p for p in (OPENAI, OPENAI_COMPATIBLE, ANTHROPIC, AZURE_OPENAI)
}


def provider(name: str) -> Provider:
    """The provider an Upstream's ``spec.provider`` names (the CRD admits no other)."""
    return PROVIDERS[name]
