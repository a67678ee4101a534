"""Each provider's addressing and authentication, as the routing table compiles it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sluice.proxy.table import build_table
from sluice.resources import parse


def target(provider: str, base_url: str, **spec: Any) -> Any:
    document = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Upstream",
        "metadata": {"name": "u"},
        "spec": {"provider": provider, "baseURL": base_url, "models": [{"name": "m"}], **spec},
    }
    table = build_table([parse(document)], {("default", "k"): {"apiKey": "sk-1"}})
    return table.targets["default", "u"]


@pytest.mark.parametrize(
    ("provider", "base_url", "spec", "path", "auth"),
    [
        ("openai", "https://api.openai.com/v1", {}, "/chat/completions",
         [("Authorization", "Bearer sk-1")]),
        ("openai-compatible", "http://vllm:8000/v1", {}, "/chat/completions",
         [("Authorization", "Bearer sk-1")]),
        ("anthropic", "https://api.anthropic.com/v1", {}, "/chat/completions",
         [("x-api-key", "sk-1"), ("anthropic-version", "2023-06-01")]),
        ("azure-openai", "https://x.openai.azure.com/openai", {"apiVersion": "2025-01-01-preview"},
         "/deployments/prod%2Fgpt/chat/completions?api-version=2025-01-01-preview",
         [("api-key", "sk-1")]),
        ("azure-openai", "https://x.openai.azure.com/openai", {},
         "/deployments/prod%2Fgpt/chat/completions?api-version=2024-10-21", [("api-key", "sk-1")]),
        ("azure-openai", "https://x.openai.azure.com/openai/v1", {}, "/chat/completions",
         [("api-key", "sk-1")]),
    ],
)  # fmt: skip
def test_each_provider_compiles_its_path_and_auth(
    provider: str, base_url: str, spec: dict[str, Any], path: str, auth: list[tuple[str, str]]
) -> None:
    compiled = target(provider, base_url, credentials={"secretRef": {"name": "k"}}, **spec)

    assert compiled.provider.path("/chat/completions", model="prod/gpt",
                                  api_version=compiled.spec.api_version) == path  # fmt: skip
    assert list(compiled.headers[2:]) == auth


def test_azure_waits_as_long_as_its_millisecond_headers_say() -> None:
    azure = target("azure-openai", "https://x.openai.azure.com/openai").provider
    openai = target("openai", "https://api.openai.com/v1").provider

    assert azure.retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == "1.5"
    assert azure.retry_after({"x-ms-retry-after-ms": "250"}) == "0.25"
    assert azure.retry_after({"retry-after": "9"}) == "9"
    assert openai.retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == "9"
    assert azure.probe_params(None) == {"api-version": "2024-10-21"}


def test_api_version_belongs_to_azure_only() -> None:
    with pytest.raises(ValidationError, match="only provider azure-openai takes it"):
        target("openai", "https://api.openai.com/v1", apiVersion="2024-10-21")


def test_rate_limits_are_compiled_into_the_target() -> None:
    document = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Upstream",
        "metadata": {"name": "u"},
        "spec": {
            "provider": "openai",
            "baseURL": "https://api.openai.com/v1",
            "models": [{"name": "m", "cost": {"inputPer1M": 2.5, "outputPer1M": 10}}],
            "limits": {"requestsPerMinute": 60, "tokensPerMinute": 9000, "maxConcurrent": 4},
        },
    }

    table = build_table([parse(document)], {})

    target = table.targets[("default", "u")]
    assert table.problems == []
    assert (target.requests_per_minute, target.tokens_per_minute) == (60, 9000)
    assert target.priced("m", "m") == ("m", 2.5, 10)
    assert target.priced("m-2026-preview", "m") == ("m", 2.5, 10)  # a route target's model
    assert target.priced("anything-a-glob-let-in", "anything") == ("other", 0.0, 0.0)
