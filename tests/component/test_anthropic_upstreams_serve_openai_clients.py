"""An OpenAI client, an Anthropic upstream: the official openai SDK through the proxy to the
fake Anthropic Messages API (which refuses what the real one refuses). Failover crosses
formats and the client sees OpenAI's shape either way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from sluice.core import State
from sluice.fakes import FakeAnthropic, FakeUpstream
from tests.component.conftest import API_KEYS, Gateway, MakeGateway, manifests


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic(name="claude")
    await fake.start()
    yield fake
    await fake.stop()


def documents(
    fakes: dict[str, FakeUpstream], claude: FakeAnthropic, *, claude_first: bool
) -> list[dict[str, Any]]:
    """Route m1: the OpenAI-format primary and the Anthropic claude, in the order asked."""
    docs = manifests({"primary": fakes["primary"]})
    docs.append(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": "claude"},
            "spec": {
                "provider": "anthropic",
                "baseURL": claude.base_url,
                # The component tier's second Secret (see API_KEYS) is claude's key here.
                "credentials": {"secretRef": {"name": "secondary-key"}},
                "models": [{"name": "m1", "upstreamModel": "claude-fake-1", "maxTokens": 512}],
                "priority": 0 if claude_first else 5,
                "breaker": {"policyRef": {"name": "fast"}},
                "forwardHeaders": ["x-fake-*"],
            },
        }
    )
    route = next(d for d in docs if d["kind"] == "ModelRoute")
    names = ["claude", "primary"] if claude_first else ["primary", "claude"]
    route["spec"]["targets"] = [{"upstream": n} for n in names]
    return docs


@pytest.fixture
async def via_claude(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> Gateway:
    return await gateway_factory(documents=documents(fakes, claude, claude_first=True))


def messages_to(claude: FakeAnthropic) -> list[Any]:
    return claude.requests_to("/v1/messages")


async def test_a_chat_completion_is_answered_by_anthropic_in_openais_shape(
    via_claude: Gateway, claude: FakeAnthropic
) -> None:
    answer = await via_claude.openai.chat.completions.create(
        model="m1",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )

    assert answer.choices[0].message.content == "hello from claude"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    [seen] = messages_to(claude)
    assert seen.headers["x-api-key"] == API_KEYS["secondary"]  # the upstream's key, not ours
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    record = via_claude.access_log()[-1]
    assert record["tokens"]["output"] > 0


async def test_a_stream_from_anthropic_reaches_the_openai_sdk_and_is_counted(
    via_claude: Gateway,
) -> None:
    stream = await via_claude.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].choices[0].finish_reason == "stop"
    metrics = await (await via_claude.client.get("/metrics")).text()
    assert (
        'sluice_tokens_total{kind="output",model="m1",namespace="default",upstream="claude"}'
        in metrics
    )


async def test_tools_round_trip_through_anthropic(via_claude: Gateway) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]

    answer = await via_claude.openai.chat.completions.create(
        model="m1",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=tools,
        tool_choice="required",
    )

    [call] = answer.choices[0].message.tool_calls or []
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather"
    assert "city" in json.loads(call.function.arguments)


async def test_an_openai_primary_failing_fails_over_to_anthropic_invisibly(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    gateway = await gateway_factory(documents=documents(fakes, claude, claude_first=False))
    fakes["primary"].default_status = 503

    answer = await gateway.chat()

    assert answer.status == 200
    assert answer.headers["x-sluice-upstream"] == "claude"
    body = await answer.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "hello from claude"


async def test_an_anthropic_529_fails_over(via_claude: Gateway, claude: FakeAnthropic) -> None:
    answer = await via_claude.chat(headers={"x-fake-status-claude": "529"})

    assert answer.status == 200
    assert answer.headers["x-sluice-upstream"] == "primary"
    assert [a["outcome"] for a in via_claude.access_log()[-1]["attempts"]] == [
        "failure",
        "success",
    ]


async def test_an_anthropic_400_comes_back_as_openais_400_without_failover(
    via_claude: Gateway, fakes: dict[str, FakeUpstream]
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await via_claude.openai.chat.completions.create(
            model="m1",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status-claude": "400"},
        )

    assert refused.value.status_code == 400
    assert refused.value.body is not None
    assert via_claude.hits("primary") == 0
    assert via_claude.breaker_state("claude") is State.CLOSED


async def test_a_parameter_anthropic_cannot_honour_goes_to_an_upstream_that_can(
    via_claude: Gateway, claude: FakeAnthropic
) -> None:
    answer = await via_claude.chat(n=2)

    assert answer.status == 200
    assert answer.headers["x-sluice-upstream"] == "primary"
    assert messages_to(claude) == []  # never sent what it would have to change
    assert via_claude.breaker_state("claude") is State.CLOSED


async def test_a_parameter_no_upstream_can_honour_is_a_400_naming_it(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    docs = documents(fakes, claude, claude_first=True)
    route = next(d for d in docs if d["kind"] == "ModelRoute")
    route["spec"]["targets"] = [{"upstream": "claude"}]
    gateway = await gateway_factory(documents=docs)

    answer = await gateway.chat(n=2)

    assert answer.status == 400
    assert (await answer.json())["error"]["param"] == "n"
    assert messages_to(claude) == []


async def test_an_api_the_upstreams_cannot_serve_is_a_400_saying_why(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream], claude: FakeAnthropic
) -> None:
    docs = [d for d in documents(fakes, claude, claude_first=True)
            if d["metadata"]["name"] != "primary"]  # fmt: skip
    route = next(d for d in docs if d["kind"] == "ModelRoute")
    route["spec"]["targets"] = [{"upstream": "claude"}]
    gateway = await gateway_factory(documents=docs)

    answer = await gateway.client.post("/v1/embeddings", json={"model": "m1", "input": "x"})

    assert answer.status == 400
    assert "do not speak that API" in (await answer.json())["error"]["message"]
    assert claude.seen == []
