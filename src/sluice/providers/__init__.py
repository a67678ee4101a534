"""Each provider's wire format, behind one small seam: how a request to it is authenticated and
addressed. One module per provider; nothing here does I/O.

Today every provider is spoken to in OpenAI's format (the proxy forwards OpenAI-style bodies);
what differs is authentication, paths (Azure's deployments and api-version) and how a 429 says
how long to wait. Translating Anthropic's Messages API fills in this seam next.
"""

from __future__ import annotations

from sluice.providers.anthropic import ANTHROPIC
from sluice.providers.azure import AZURE_OPENAI, AZURE_OPENAI_V1
from sluice.providers.base import Provider
from sluice.providers.openai import OPENAI, OPENAI_COMPATIBLE
from sluice.providers.translation import TranslationError, UpstreamFormatError

__all__ = ["PROVIDERS", "Provider", "TranslationError", "UpstreamFormatError", "provider"]

PROVIDERS: dict[str, Provider] = {
    p.name: p for p in (OPENAI, OPENAI_COMPATIBLE, ANTHROPIC, AZURE_OPENAI)
}


def provider(name: str, base_url: str = "") -> Provider:
    """The provider an Upstream's ``spec.provider`` names (the CRD admits no other); Azure's v1
    API when its base URL ends in ``/openai/v1``."""
    if name == AZURE_OPENAI.name and base_url.rstrip("/").endswith("/openai/v1"):
        return AZURE_OPENAI_V1
    return PROVIDERS[name]
