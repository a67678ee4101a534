"""Clients on Anthropic's SDK: ``/v1/messages`` through the proxy, natively to an Anthropic
upstream and translated to an OpenAI-format one, so an Anthropic-SDK client fails over to
any model and sees Anthropic's shape either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from sluice.fakes import FakeAnthropic, FakeUpstream
from sluice.proxy.access import ClientKeys
from tests.component.conftest import API_KEYS, Gateway, MakeGateway
from tests.component.test_anthropic_upstreams_serve_openai_clients import documents

HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic(name="claude")
    await fake.start()
    yield fake
    await fake.stop()


def sdk(gateway: Gateway, key: str = "client-key") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(gateway.client.make_url("")), api_key=key, max_retries=0
    )


async def gateway_for(
    make: MakeGateway,
    fakes: dict[str, FakeUpstream],
    claude: FakeAnthropic,
    *,
    claude_first: bool,
    **options: Any,
) -> Gateway:
    return await make(documents=documents(fakes, claude, claude_first=claude_first), **options)


async def test_a_message_goes_natively_to_anthropic(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    keys = ClientKeys.of({"team": "sk-team-key-0001"})
    gateway = await gateway_for(
        gateway_factory, fakes, claude, claude_first=True, proxy_options={"client_keys": keys}
    )
    async with sdk(gateway, "sk-team-key-0001") as client:
        message = await client.messages.create(model="m1", max_tokens=64, messages=HI)

    assert message.content[0].type == "text"
    assert message.content[0].text == "hello from claude"
    [seen] = claude.requests_to("/v1/messages")
    assert seen.headers["x-api-key"] == API_KEYS["secondary"]  # the upstream's, never the client's
    assert "sk-team-key-0001" not in str(seen.headers)
    assert gateway.access_log()[-1]["client"] == "team"
    assert gateway.access_log()[-1]["tokens"]["output"] > 0


async def test_a_message_stream_goes_natively_to_anthropic_and_is_counted(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    gateway = await gateway_for(gateway_factory, fakes, claude, claude_first=True)
    async with (
        sdk(gateway) as client,
        client.messages.stream(model="m1", max_tokens=64, messages=HI) as stream,
    ):
        text = "".join([chunk async for chunk in stream.text_stream])
        final = await stream.get_final_message()

    assert text.strip()
    assert final.stop_reason == "end_turn"
    assert gateway.access_log()[-1]["tokens"]["output"] > 0


async def test_a_message_is_translated_for_an_openai_format_upstream(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    gateway = await gateway_for(gateway_factory, fakes, claude, claude_first=False)
    async with sdk(gateway) as client:
        message = await client.messages.create(model="m1", max_tokens=64, messages=HI)
        async with client.messages.stream(model="m1", max_tokens=64, messages=HI) as stream:
            streamed = "".join([chunk async for chunk in stream.text_stream])

    assert message.content[0].type == "text"
    assert message.content[0].text == "hello from primary"
    assert message.stop_reason == "end_turn"
    assert "primary" in streamed
    assert claude.requests_to("/v1/messages") == []


async def test_an_overloaded_anthropic_fails_over_to_openai_in_anthropics_shape(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    gateway = await gateway_for(gateway_factory, fakes, claude, claude_first=True)
    async with sdk(gateway) as client:
        message = await client.messages.create(
            model="m1", max_tokens=64, messages=HI, extra_headers={"x-fake-status-claude": "529"}
        )

    assert message.content[0].type == "text"
    assert message.content[0].text == "hello from primary"
    assert [a["upstream"] for a in gateway.access_log()[-1]["attempts"]] == ["claude", "primary"]


async def test_the_proxys_own_errors_come_in_anthropics_shape(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    gateway = await gateway_for(gateway_factory, fakes, claude, claude_first=True)
    for name in ("claude", "primary"):
        await gateway.client.post(
            f"/admin/breakers/default/{name}/open", headers={"Authorization": "Bearer admin-secret"}
        )
    async with sdk(gateway) as client:
        with pytest.raises(anthropic.APIStatusError) as refused:
            await client.messages.create(model="m1", max_tokens=64, messages=HI)

    assert refused.value.status_code == 503
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["type"] == "error"
    assert "circuit" in refused.value.body["error"]["message"]


async def test_models_and_tools_work_from_the_anthropic_sdk(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    gateway = await gateway_for(gateway_factory, fakes, claude, claude_first=True)
    tools: Any = [
        {
            "name": "weather",
            "description": "the weather in a city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    async with sdk(gateway) as client:
        models = await client.models.list()
        message = await client.messages.create(
            model="m1",
            max_tokens=64,
            messages=[{"role": "user", "content": "weather in Oslo?"}],
            tools=tools,
            tool_choice={"type": "any"},
        )

    assert [m.id for m in models.data] == ["m1"]
    [block] = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "weather"
    assert message.stop_reason == "tool_use"
