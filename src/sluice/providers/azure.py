"""Azure OpenAI: the key in ``api-key``; probes name the api-version."""

from __future__ import annotations

from sluice.providers.base import Provider

__all__ = ["AZURE_API_VERSION", "AZURE_OPENAI"]

AZURE_API_VERSION = "2024-10-21"

AZURE_OPENAI = Provider(
    "azure-openai", key_header="api-key", probe_params={"api-version": AZURE_API_VERSION}
)
