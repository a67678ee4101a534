"""Azure OpenAI upstreams through the proxy: the classic deployment paths with the Upstream's
api-version, the v1 API, the api-key header, and a 429's retry-after-ms honoured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sluice.fakes import FakeAzureOpenAI
from tests.component.conftest import API_KEYS, MakeGateway


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzureOpenAI]:
    fake = FakeAzureOpenAI(name="azure", models=("prod-gpt4o",))
    await fake.start()
    yield fake
    await fake.stop()


def azure_upstream(base_url: str, **spec: Any) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": "azure"},
            "spec": {
                "provider": "azure-openai",
                "baseURL": base_url,
                # The component tier's first Secret (see API_KEYS) is azure's key here.
                "credentials": {"secretRef": {"name": "primary-key"}},
                "models": [{"name": "m1", "upstreamModel": "prod-gpt4o"}],
                "forwardHeaders": ["x-fake-*"],
                **spec,
            },
        }
    ]


@pytest.mark.parametrize("api", ["classic", "v1"])
async def test_chat_goes_to_the_deployment_with_the_api_key(
    gateway_factory: MakeGateway, azure: FakeAzureOpenAI, api: str
) -> None:
    base = azure.base_url if api == "classic" else azure.v1_base_url
    spec = {"apiVersion": "2024-10-21"} if api == "classic" else {}
    gateway = await gateway_factory(documents=azure_upstream(base, **spec))

    answer = await gateway.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}]
    )

    assert answer.choices[0].message.content == "hello from azure"
    [seen] = [r for r in azure.seen if r.method == "POST"]
    expected = ("/openai/deployments/prod-gpt4o/chat/completions" if api == "classic"
                else "/openai/v1/chat/completions")  # fmt: skip
    assert seen.path == expected
    assert seen.query.get("api-version") == ("2024-10-21" if api == "classic" else None)
    assert seen.headers["api-key"] == API_KEYS["primary"]
    assert "authorization" not in seen.headers


async def test_a_429_holds_azure_off_for_its_retry_after_ms(
    gateway_factory: MakeGateway, azure: FakeAzureOpenAI
) -> None:
    gateway = await gateway_factory(documents=azure_upstream(azure.base_url))

    limited = await gateway.chat(headers={"x-fake-status": "429", "x-fake-retry-after": "7"})
    held = gateway.proxy.breakers.get(("default", "azure")).held_until

    assert limited.status == 429
    assert held == pytest.approx(gateway.clock() + 7, abs=0.5)
