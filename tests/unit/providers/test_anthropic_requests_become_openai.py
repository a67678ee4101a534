"""An Anthropic Messages request as an OpenAI chat request (to_openai_request, for the coming
/v1/messages endpoint), and the round trip back: what is translated, ignored and refused.
Every translated request fits the openai SDK's CompletionCreateParams."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.providers.anthropic import (
    TranslationError,
    to_anthropic_request,
    to_openai_request,
)
from tests.unit.providers.support import check_anthropic_request, check_openai_request

USER = {"role": "user", "content": "Hello"}


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [USER])
    body.setdefault("max_tokens", 256)
    out = to_openai_request({"model": "claude-x", **body}, model="gpt-x")
    check_openai_request(out)
    return out


def refused(**body: Any) -> TranslationError:
    body.setdefault("messages", [USER])
    body.setdefault("max_tokens", 256)
    with pytest.raises(TranslationError) as caught:
        to_openai_request({"model": "claude-x", **body}, model="gpt-x")
    return caught.value


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def test_a_plain_request() -> None:
    assert translate() == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_completion_tokens": 256,
    }


def test_max_tokens_is_required_as_anthropic_requires_it() -> None:
    with pytest.raises(TranslationError) as caught:
        to_openai_request({"model": "c", "messages": [USER]}, model="g")
    assert caught.value.param == "max_tokens"


def test_the_system_prompt_and_mid_conversation_system_messages_keep_their_place() -> None:
    out = translate(system=[text("Be brief."), text("Be kind.")], messages=[
        USER,
        {"role": "assistant", "content": "Hi"},
        {"role": "system", "content": "Now answer in French."},
        {"role": "user", "content": "Bonjour"},
    ])  # fmt: skip
    assert out["messages"] == [
        {"role": "system", "content": [text("Be brief."), text("Be kind.")]},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "system", "content": "Now answer in French."},
        {"role": "user", "content": "Bonjour"},
    ]
    assert translate(system="Be brief.")["messages"][0] == {"role": "system",
                                                            "content": "Be brief."}  # fmt: skip


def test_parameters_and_a_stream_that_asks_for_its_usage() -> None:
    out = translate(stop_sequences=["END"], temperature=0.3, top_p=0.8, stream=True,
                    metadata={"user_id": "u-1"})  # fmt: skip
    assert out["stop"] == ["END"]
    assert (out["temperature"], out["top_p"], out["user"]) == (0.3, 0.8, "u-1")
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_images_become_image_url_parts() -> None:
    out = translate(messages=[{"role": "user", "content": [
        text("What is this?"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iV"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.gif"}},
    ]}])  # fmt: skip
    assert out["messages"][0]["content"] == [
        text("What is this?"),
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iV"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.gif"}},
    ]


WEATHER_TOOL = {"name": "weather", "description": "The weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "cache_control": {"type": "ephemeral"}}  # fmt: skip


def test_client_tools_become_function_tools_and_tool_choice_maps() -> None:
    out = translate(tools=[WEATHER_TOOL, {"name": "now", "input_schema": {"type": "object"},
                                          "strict": True, "type": "custom"}],
                    tool_choice={"type": "any", "disable_parallel_tool_use": True})  # fmt: skip
    assert out["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "The weather",
                                          "parameters": WEATHER_TOOL["input_schema"]}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"},
                                          "strict": True}},
    ]  # fmt: skip
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    assert translate(tools=[WEATHER_TOOL], tool_choice=choice)["tool_choice"] == expected


def test_a_tool_conversation_becomes_tool_calls_and_tool_messages() -> None:
    out = translate(tools=[WEATHER_TOOL], messages=[
        USER,
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "sig"},
            text("Let me look."),
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [text("No such city")],
             "is_error": True},
            text("Thanks"),
        ]},
    ])  # fmt: skip
    assert out["messages"][1:] == [
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: No such city"},
        {"role": "user", "content": [text("Thanks")]},
    ]  # fmt: skip


def test_structured_output_and_effort() -> None:
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    out = translate(output_config={"format": {"type": "json_schema", "schema": schema},
                                   "effort": "low"})  # fmt: skip
    assert out["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}
    }  # fmt: skip
    assert out["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("thinking", {"type": "disabled"}),
        ("thinking", {"type": "adaptive"}),
        ("cache_control", {"type": "ephemeral"}),
        ("service_tier", "auto"),
        ("speed", "fast"),
        ("diagnostics", {"previous_message_id": "msg_1"}),
        ("top_k", None),
    ],
)
def test_what_cannot_change_the_answer_is_ignored(param: str, value: Any) -> None:
    assert translate(**{param: value}) == translate()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"top_k": 5}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
        ({"container": "c-1"}, "container"),
        ({"inference_geo": "us"}, "inference_geo"),
        ({"context_management": {"edits": []}}, "context_management"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tools": [{**WEATHER_TOOL, "defer_loading": True}]}, "tools[0].defer_loading"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
         "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
         "messages[0].content[0].source"),
        ({"messages": [USER, {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]},
         "messages[1].content[0]"),
    ],
)  # fmt: skip
def test_what_an_openai_upstream_cannot_do_is_refused_by_name(
    body: dict[str, Any], param: str
) -> None:
    assert refused(**body).param == param


# Round trips: an Anthropic request in the shape both formats can say (text before tool uses,
# tool results first in a user turn) comes back as it went.

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
words = st.text(alphabet="abc xyz", min_size=1, max_size=8).filter(lambda t: t.strip() == t)
texts = st.lists(words.map(text), min_size=1, max_size=2)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = [{"role": "user", "content": draw(texts)}]
    for n in range(draw(st.integers(0, 3))):
        calls = [{"type": "tool_use", "id": f"toolu_{n}_{i}", "name": draw(words.map(str.strip)),
                  "input": draw(st.dictionaries(words, st.integers() | words, max_size=2))}
                 for i in range(draw(st.integers(0, 2)))]  # fmt: skip
        said = draw(texts) if not calls or draw(st.booleans()) else []
        turns.append({"role": "assistant", "content": said + calls})
        results = [{"type": "tool_result", "tool_use_id": c["id"], "content": draw(words)}
                   for c in calls]  # fmt: skip
        turns.append({"role": "user", "content": results + draw(texts)})
    return turns


@FUZZ
@given(conversations(), st.none() | words, st.integers(1, 4096))
def test_anthropic_to_openai_and_back_is_the_same_request(
    messages: list[dict[str, Any]], system: str | None, max_tokens: int
) -> None:
    original: dict[str, Any] = {"model": "claude-x", "max_tokens": max_tokens,
                                "messages": messages}  # fmt: skip
    if system is not None:
        original["system"] = system
    check_anthropic_request(original)
    there = to_openai_request(original, model="gpt-x")
    check_openai_request(there)
    back = to_anthropic_request(there, model="claude-x", max_tokens_default=1)
    assert back == original


def test_openai_to_anthropic_and_back_keeps_what_the_conversation_says() -> None:
    original = {
        "model": "gpt-x", "max_completion_tokens": 64, "stop": ["END"], "temperature": 0.5,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Snow"},
        ],
        "tools": [{"type": "function", "function": {"name": "weather",
                                                    "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    }  # fmt: skip
    there = to_anthropic_request(original, model="claude-x", max_tokens_default=1)
    back = to_openai_request(there, model="gpt-x")
    said_as_parts = {"role": "user", "content": [text("Weather?")]}  # the one difference
    assert back == {**original, "messages": [original["messages"][0], said_as_parts,
                                             *original["messages"][2:]]}  # fmt: skip


def test_the_clients_request_is_never_changed() -> None:
    body = {
        "model": "c",
        "max_tokens": 9,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [text("a")],
                        "is_error": True,
                    }
                ],
            }
        ],
    }
    before = json.dumps(body)
    to_openai_request(body, model="g")
    assert json.dumps(body) == before
