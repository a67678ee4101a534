"""Each fake speaks its provider's wire format: the official SDKs, driven straight at the fakes
(no proxy), parse every answer, and every refusal surfaces as the SDK's own typed error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from sluice.fakes import FakeAnthropic, FakeAzureOpenAI, FakeUpstream, fake_for

HI = [{"role": "user", "content": "hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic(name="claude")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzureOpenAI]:
    fake = FakeAzureOpenAI(name="azure", models=("gpt-deployment",))
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def oai() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(name="oai")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def sdk(claude: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=claude.root_url, api_key="sk-ant-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def openai_sdk(oai: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=oai.base_url, api_key="sk-test", max_retries=0
    ) as client:
        yield client


async def raw_post(
    url: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=json.dumps(body), headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event"), json.loads(fields["data"])))
    return events


# Anthropic


async def test_a_message_is_text_with_usage(
    claude: FakeAnthropic, sdk: anthropic.AsyncAnthropic
) -> None:
    message = await sdk.messages.create(model="claude-fake-1", max_tokens=64, messages=HI)

    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.stop_reason) == ("message", "assistant", "end_turn")
    [block] = message.content
    assert isinstance(block, anthropic.types.TextBlock)
    assert block.text == "hello from claude"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (1, 4)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    [seen] = claude.requests_to("/v1/messages")
    # The 2.x SDK sends the key as a bearer token and the 2026-10-21 API version.
    assert seen.headers["authorization"] == "Bearer sk-ant-test"
    assert seen.headers["anthropic-version"] == "2026-10-21"


async def test_a_tool_choice_of_any_answers_a_tool_call(sdk: anthropic.AsyncAnthropic) -> None:
    message = await sdk.messages.create(
        model="claude-fake-1",
        max_tokens=64,
        messages=HI,
        tools=[WEATHER],
        tool_choice={"type": "any"},
    )

    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert isinstance(block, anthropic.types.ToolUseBlock)
    assert block.id.startswith("toolu_")
    assert (block.name, block.input) == ("get_weather", {"city": "fake", "days": 1})


async def test_tools_on_auto_answer_text_unless_steered(sdk: anthropic.AsyncAnthropic) -> None:
    plain = await sdk.messages.create(
        model="claude-fake-1",
        max_tokens=64,
        messages=HI,
        tools=[WEATHER],
    )
    steered = await sdk.messages.create(
        model="claude-fake-1",
        max_tokens=64,
        messages=HI,
        tools=[WEATHER],
        extra_headers={"x-fake-tool-use": "get_weather"},
    )

    assert [b.type for b in plain.content] == ["text"]
    assert [b.type for b in steered.content] == ["tool_use"]


async def test_a_stream_accumulates_into_the_message(sdk: anthropic.AsyncAnthropic) -> None:
    async with sdk.messages.stream(
        model="claude-fake-1", max_tokens=64, messages=HI, extra_headers={"x-fake-chunks": "4"}
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()

    assert texts == ["claude-0 ", "claude-1 ", "claude-2 ", "claude-3 "]
    assert final.content[0].type == "text"
    assert final.content[0].text == "claude-0 claude-1 claude-2 claude-3 "
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (1, 4)


async def test_a_streamed_tool_call_arrives_as_json_deltas(sdk: anthropic.AsyncAnthropic) -> None:
    async with sdk.messages.stream(
        model="claude-fake-1",
        max_tokens=64,
        messages=HI,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    [block] = final.content
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("get_weather", {"city": "fake", "days": 1})


async def test_the_stream_is_the_real_event_sequence(claude: FakeAnthropic) -> None:
    body = {"model": "claude-fake-1", "max_tokens": 64, "messages": HI, "stream": True}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    status, response_headers, raw = await raw_post(f"{claude.base_url}/messages", body, headers)

    assert status == 200
    assert response_headers["Content-Type"].startswith("text/event-stream")
    assert response_headers["request-id"].startswith("req_")
    events = sse_events(raw)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"]) == ([], None)
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "claude-0 "}
    assert events[7][1]["delta"]["stop_reason"] == "end_turn"
    assert events[7][1]["usage"] == {"output_tokens": 3}


async def test_a_stream_can_fail_with_an_error_event(sdk: anthropic.AsyncAnthropic) -> None:
    texts: list[str] = []

    async def read() -> None:
        async with sdk.messages.stream(
            model="claude-fake-1",
            max_tokens=64,
            messages=HI,
            extra_headers={"x-fake-stream-error": "2"},
        ) as stream:
            async for text in stream.text_stream:
                texts.append(text)

    with pytest.raises(anthropic.APIStatusError) as raised:
        await read()

    assert texts == ["claude-0 ", "claude-1 "]
    # The HTTP status was 200: the SDK's error has that status and the error event's type.
    assert raised.value.status_code == 200
    assert raised.value.type == "overloaded_error"


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
    ],
)
async def test_steered_failures_carry_anthropic_error_bodies(
    sdk: anthropic.AsyncAnthropic, status: int, error: type[anthropic.APIStatusError], kind: str
) -> None:
    with pytest.raises(error) as raised:
        await sdk.messages.create(
            model="claude-fake-1",
            max_tokens=64,
            messages=HI,
            extra_headers={"x-fake-status": str(status)},
        )

    assert raised.value.status_code == status
    assert raised.value.type == kind
    assert raised.value.request_id is not None
    assert raised.value.request_id.startswith("req_")
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["request_id"] == raised.value.request_id
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "1"


async def test_a_429_says_how_long_to_wait(sdk: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as raised:
        await sdk.messages.create(
            model="claude-fake-1",
            max_tokens=64,
            messages=HI,
            extra_headers={"x-fake-status": "429", "x-fake-retry-after": "7"},
        )

    assert raised.value.response.headers["retry-after"] == "7"


VALID = {"model": "claude-fake-1", "max_tokens": 64, "messages": HI}


@pytest.mark.parametrize(
    ("version", "body", "says"),
    [
        ("2026-10-21", {"model": "claude-fake-1", "messages": HI}, "max_tokens: Field required"),
        ("2026-10-21", {"max_tokens": 1, "messages": HI}, "model: Field required"),
        ("2026-10-21", {**VALID, "max_tokens": "lots"}, "max_tokens"),
        ("2026-10-21", {**VALID, "messages": []}, "at least one message"),
        ("2026-10-21", {**VALID, "messages": "hi"}, "valid list"),
        ("2026-10-21", {**VALID, "colour": "blue"}, "colour: Extra inputs are not permitted"),
        ("2026-10-21", {**VALID, "temperature": 1.0}, "temperature: Extra inputs"),
        ("2026-10-21", {**VALID, "messages": [{"role": "tool", "content": "x"}]}, "role"),
        ("2026-10-21", {**VALID, "messages": [{"role": "user"}]}, "content: Field required"),
        ("2026-10-21", {**VALID, "tool_choice": {"type": "any"}}, "providing tools"),
        (
            "2023-06-01",
            {**VALID, "messages": [{"role": "system", "content": "be brief"}, *HI]},
            'Unexpected role "system"',
        ),
    ],
)
async def test_bodies_the_api_refuses_are_bad_requests(
    claude: FakeAnthropic, version: str, body: dict[str, Any], says: str
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=claude.root_url,
        api_key="k",
        max_retries=0,
        default_headers={"anthropic-version": version},
    ) as client:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)

    assert raised.value.type == "invalid_request_error"
    assert raised.value.api_message is not None
    assert says in raised.value.api_message
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["type"] == "error"


@pytest.mark.parametrize(
    ("version", "body"),
    [
        # Sampling parameters are still fields on 2023-06-01.
        ("2023-06-01", {**VALID, "temperature": 0.2, "top_k": 5, "top_p": 0.9}),
        # The 2.x SDK's MessageParam has a system role (API version 2026-10-21).
        ("2026-10-21", {**VALID, "messages": [*HI, {"role": "system", "content": "be brief"}]}),
        # Consecutive turns are combined, and an assistant turn may come first.
        ("2026-10-21", {**VALID, "messages": [*HI, *HI]}),
        ("2023-06-01", {**VALID, "messages": [{"role": "assistant", "content": "hi"}, *HI]}),
    ],
)
async def test_bodies_the_api_accepts_are_answered(
    claude: FakeAnthropic, version: str, body: dict[str, Any]
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=claude.root_url,
        api_key="k",
        max_retries=0,
        default_headers={"anthropic-version": version},
    ) as client:
        message = await client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)

    assert message.content[0].type == "text"


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([*HI, *HI], 'multiple "user" roles in a row'),
        ([{"role": "assistant", "content": "hi"}, *HI], 'first message must use the "user" role'),
    ],
)
async def test_strict_turns_refuse_what_the_api_once_refused(
    messages: list[dict[str, str]], says: str
) -> None:
    fake = FakeAnthropic(name="strict", strict_turns=True)
    await fake.start()
    try:
        async with anthropic.AsyncAnthropic(
            base_url=fake.root_url, api_key="k", max_retries=0
        ) as client:
            with pytest.raises(anthropic.BadRequestError) as raised:
                await client.messages.create(
                    model="claude-fake-1",
                    max_tokens=64,
                    messages=messages,
                )
    finally:
        await fake.stop()

    assert raised.value.api_message is not None
    assert says in raised.value.api_message


async def test_the_key_and_the_version_are_required(claude: FakeAnthropic) -> None:
    url = f"{claude.base_url}/messages"
    no_key = await raw_post(url, VALID, {"anthropic-version": "2023-06-01"})
    x_api_key = await raw_post(url, VALID, {"x-api-key": "k", "anthropic-version": "2023-06-01"})
    no_version = await raw_post(url, VALID, {"x-api-key": "k"})
    unknown = await raw_post(url, VALID, {"x-api-key": "k", "anthropic-version": "2024-01-01"})

    assert no_key[0] == 401
    assert json.loads(no_key[2])["error"]["type"] == "authentication_error"
    assert x_api_key[0] == 200
    assert no_version[0] == 400
    assert "anthropic-version" in json.loads(no_version[2])["error"]["message"]
    assert unknown[0] == 400
    assert "2023-06-01" in json.loads(unknown[2])["error"]["message"]


async def test_a_wrong_key_is_an_authentication_error() -> None:
    fake = FakeAnthropic(name="keyed", api_key="sk-ant-right")
    await fake.start()
    try:
        async with anthropic.AsyncAnthropic(
            base_url=fake.root_url, api_key="sk-ant-wrong", max_retries=0
        ) as client:
            with pytest.raises(anthropic.AuthenticationError) as raised:
                await client.messages.create(model="claude-fake-1", max_tokens=64, messages=HI)
        async with anthropic.AsyncAnthropic(
            base_url=fake.root_url, api_key="sk-ant-right", max_retries=0
        ) as client:
            await client.messages.create(model="claude-fake-1", max_tokens=64, messages=HI)
    finally:
        await fake.stop()

    assert raised.value.type == "authentication_error"


async def test_the_model_list_is_anthropics(sdk: anthropic.AsyncAnthropic) -> None:
    page = await sdk.models.list()

    assert [model.id for model in page.data] == ["claude-fake-1"]
    assert page.data[0].type == "model"


# Azure OpenAI


async def test_azure_classic_paths_answer_chat_and_embeddings(azure: FakeAzureOpenAI) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=azure.root_url, api_version="2024-10-21", api_key="az-key", max_retries=0
    ) as client:
        chat = await client.chat.completions.create(model="gpt-deployment", messages=HI)
        embedded = await client.embeddings.create(model="gpt-deployment", input=["a", "b"])
        stream = await client.chat.completions.create(
            model="gpt-deployment",
            messages=HI,
            stream=True,
        )
        deltas = [chunk.choices[0].delta.content async for chunk in stream]

    assert chat.choices[0].message.content == "hello from azure"
    assert len(embedded.data) == 2
    assert deltas == ["azure-0 ", "azure-1 ", "azure-2 ", None]  # None: the finish chunk
    seen = azure.requests_to("/openai/deployments/gpt-deployment/chat/completions")[0]
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == "az-key"


async def test_azure_refuses_an_api_version_it_does_not_serve(azure: FakeAzureOpenAI) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=azure.root_url, api_version="2023-05-15", api_key="k", max_retries=0
    ) as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(model="gpt-deployment", messages=HI)

    assert raised.value.code == "BadRequest"
    assert "2024-10-21" in raised.value.message  # says which versions it serves


async def test_azure_without_an_api_version_is_not_found(azure: FakeAzureOpenAI) -> None:
    url = f"{azure.base_url}/deployments/gpt-deployment/chat/completions"
    body = {"model": "gpt-deployment", "messages": HI}
    status, _, raw = await raw_post(url, body, {"api-key": "k"})

    assert status == 404
    assert json.loads(raw) == {"error": {"code": "404", "message": "Resource not found"}}


async def test_azure_refuses_a_deployment_it_does_not_serve(azure: FakeAzureOpenAI) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=azure.root_url, api_version="2024-10-21", api_key="k", max_retries=0
    ) as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="gpt-elsewhere", messages=HI)

    assert raised.value.code == "DeploymentNotFound"


async def test_azure_wants_a_key(azure: FakeAzureOpenAI) -> None:
    url = f"{azure.base_url}/deployments/gpt-deployment/chat/completions?api-version=2024-10-21"
    status, _, raw = await raw_post(url, {"model": "gpt-deployment", "messages": HI}, {})
    keyed = FakeAzureOpenAI(name="keyed", models=("d",), api_key="right")
    await keyed.start()
    try:
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=keyed.root_url, api_version="2024-10-21", api_key="wrong", max_retries=0
        ) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="d", messages=HI)
    finally:
        await keyed.stop()

    assert status == 401
    assert json.loads(raw)["error"]["code"] == "401"


async def test_azure_429s_say_how_long_in_milliseconds_too(azure: FakeAzureOpenAI) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=azure.root_url, api_version="2024-10-21", api_key="k", max_retries=0
    ) as client:
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(
                model="gpt-deployment",
                messages=HI,
                extra_headers={"x-fake-status": "429", "x-fake-retry-after": "2"},
            )

    headers = raised.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "2000")
    assert headers["x-ms-retry-after-ms"] == "2000"
    assert raised.value.code == "429"


async def test_azure_v1_takes_the_plain_openai_client(azure: FakeAzureOpenAI) -> None:
    async with openai.AsyncOpenAI(
        base_url=azure.v1_base_url, api_key="az-key", max_retries=0
    ) as client:
        chat = await client.chat.completions.create(model="gpt-deployment", messages=HI)
        response = await client.responses.create(model="gpt-deployment", input="hi")
        models = await client.models.list()
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model="gpt-elsewhere", messages=HI)

    assert chat.choices[0].message.content == "hello from azure"
    assert response.output_text == "hello from azure"
    assert [m.id for m in models.data] == ["gpt-deployment"]
    assert raised.value.code == "DeploymentNotFound"
    [seen] = azure.requests_to("/openai/v1/chat/completions")[:1]
    assert seen.query == {}
    assert seen.headers["authorization"] == "Bearer az-key"


async def test_azure_probes_list_models_with_an_api_version(azure: FakeAzureOpenAI) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{azure.base_url}/models",
            params={"api-version": "2024-10-21"},
            headers={"api-key": "k"},
        ) as response,
    ):
        listed = await response.json()

    assert response.status == 200
    assert [m["id"] for m in listed["data"]] == ["gpt-deployment"]


# OpenAI: the Responses API, and chat usage chunks


async def test_a_response_is_one_message_with_output_text(openai_sdk: openai.AsyncOpenAI) -> None:
    response = await openai_sdk.responses.create(model="m1", input="hi")

    assert response.id.startswith("resp_")
    assert (response.object, response.status) == ("response", "completed")
    [item] = response.output
    assert item.type == "message"
    assert [part.type for part in item.content] == ["output_text"]
    assert response.output_text == "hello from oai"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1, 4)
    assert response.usage.total_tokens == 5


async def test_a_streamed_response_is_the_real_event_sequence(
    openai_sdk: openai.AsyncOpenAI,
) -> None:
    stream = await openai_sdk.responses.create(model="m1", input="hi", stream=True)
    events = [event async for event in stream]

    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    done = events[-1]
    assert isinstance(done, openai.types.responses.ResponseCompletedEvent)
    assert done.response.output_text == "oai-0 oai-1 oai-2 "
    assert done.response.usage is not None
    assert done.response.usage.output_tokens == 3


async def test_the_sdks_response_stream_helper_accumulates_it(
    openai_sdk: openai.AsyncOpenAI,
) -> None:
    async with openai_sdk.responses.stream(model="m1", input="hi") as stream:
        deltas = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()

    assert deltas == ["oai-0 ", "oai-1 ", "oai-2 "]
    assert final.output_text == "oai-0 oai-1 oai-2 "


async def test_a_response_stream_can_fail_with_an_error_event(
    openai_sdk: openai.AsyncOpenAI,
) -> None:
    stream = await openai_sdk.responses.create(
        model="m1", input="hi", stream=True, extra_headers={"x-fake-stream-error": "1"}
    )
    types = [event.type async for event in stream]

    assert types[-2:] == ["response.output_text.delta", "error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m1"}, "input"),
        ({"model": "m1", "input": "hi", "bogus": 1}, "bogus"),
    ],
)
async def test_responses_refuse_what_openai_refuses(
    openai_sdk: openai.AsyncOpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await openai_sdk.post("/responses", body=body, cast_to=openai.types.responses.Response)

    assert raised.value.param == param


async def test_include_usage_ends_a_chat_stream_with_the_usage_chunk(
    openai_sdk: openai.AsyncOpenAI,
) -> None:
    with_usage = await openai_sdk.chat.completions.create(
        model="m1",
        messages=HI,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in with_usage]
    without = await openai_sdk.chat.completions.create(model="m1", messages=HI, stream=True)
    plain = [chunk async for chunk in without]

    *content, last = chunks
    assert [c.choices[0].delta.content for c in content] == ["oai-0 ", "oai-1 ", "oai-2 ", None]
    assert all(c.usage is None for c in content)
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (1, 3)
    assert last.usage.total_tokens == 4
    assert len(plain) == 4  # three content chunks and the finish chunk
    assert all(c.choices and c.usage is None for c in plain)


async def test_stream_options_without_stream_are_refused(openai_sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await openai_sdk.chat.completions.create(
            model="m1",
            messages=HI,
            stream_options={"include_usage": True},
        )

    assert raised.value.param == "stream_options"


async def test_a_chat_stream_can_fail_part_way(openai_sdk: openai.AsyncOpenAI) -> None:
    stream = await openai_sdk.chat.completions.create(
        model="m1",
        messages=HI,
        stream=True,
        extra_headers={"x-fake-stream-error": "1"},
    )
    seen: list[str | None] = []

    async def read() -> None:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content)

    with pytest.raises(openai.APIError) as raised:
        await read()

    assert seen == ["oai-0 "]
    assert "server had an error" in raised.value.message


def test_each_provider_has_its_fake() -> None:
    assert type(fake_for("openai")) is FakeUpstream
    assert type(fake_for("openai-compatible")) is FakeUpstream
    assert isinstance(fake_for("anthropic", name="a"), FakeAnthropic)
    assert isinstance(fake_for("azure-openai", models=("d",)), FakeAzureOpenAI)
