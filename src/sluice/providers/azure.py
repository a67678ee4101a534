"""Azure OpenAI: the key in ``api-key``; deployments in the path with an api-version, unless the
base URL is the v1 API (``.../openai/v1``), which takes plain OpenAI paths.

- Classic: ``{baseURL}/deployments/{deployment}/{operation}?api-version={apiVersion}``, where the
  deployment is the model entry's ``upstreamModel`` (the body's ``model`` is ignored by Azure).
- v1 (a base URL ending in ``/openai/v1``): ``{baseURL}/{operation}``, ``model`` = the deployment.
- A 429's wait comes in milliseconds too: ``retry-after-ms`` or ``x-ms-retry-after-ms`` are
  honoured before ``retry-after``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from sluice.providers.base import Provider

__all__ = ["AZURE_API_VERSION", "AZURE_OPENAI", "AzureOpenAI"]

AZURE_API_VERSION = "2024-10-21"  # the default api-version: Azure's latest GA when written


@dataclass(frozen=True)
class AzureOpenAI(Provider):
    def path(self, operation: str, *, model: str, api_version: str | None) -> str:
        version = api_version or AZURE_API_VERSION
        return f"/deployments/{quote(model, safe='')}{operation}?api-version={quote(version)}"

    def probe_params(self, api_version: str | None) -> dict[str, str]:
        return {"api-version": api_version or AZURE_API_VERSION}

    def retry_after(self, headers: Mapping[str, str]) -> str | None:
        for name in ("retry-after-ms", "x-ms-retry-after-ms"):
            value = headers.get(name)
            if value is not None:
                try:
                    return f"{float(value) / 1000:g}"
                except ValueError:
                    continue
        return headers.get("retry-after")


@dataclass(frozen=True)
class AzureOpenAIV1(AzureOpenAI):
    """The v1 API: plain OpenAI paths, no api-version."""

    def path(self, operation: str, *, model: str, api_version: str | None) -> str:
        return operation

    def probe_params(self, api_version: str | None) -> dict[str, str]:
        return {}


AZURE_OPENAI = AzureOpenAI("azure-openai", key_header="api-key")
AZURE_OPENAI_V1 = AzureOpenAIV1("azure-openai", key_header="api-key")
