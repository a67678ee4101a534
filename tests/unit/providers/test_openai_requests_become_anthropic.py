"""An OpenAI chat request as an Anthropic Messages request (to_anthropic_request): what is
translated, what is ignored, and what is refused with the parameter named. Every translated
request fits the anthropic SDK's MessageCreateParams."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.errors import ConfigurationError
from sluice.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    FIRST_TURN_PLACEHOLDER,
    TranslationError,
    to_anthropic_request,
    wants_usage,
)
from tests.unit.providers.support import check_anthropic_request

USER = {"role": "user", "content": "Hello"}


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [USER])
    out = to_anthropic_request({"model": "gpt-x", **body}, model="claude-x",
                               max_tokens_default=DEFAULT_MAX_TOKENS)  # fmt: skip
    check_anthropic_request(out)
    return out


def refused(**body: Any) -> TranslationError:
    body.setdefault("messages", [USER])
    with pytest.raises(TranslationError) as caught:
        to_anthropic_request({"model": "gpt-x", **body}, model="claude-x", max_tokens_default=9)
    return caught.value


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def test_a_plain_request_names_the_upstreams_model_and_the_default_max_tokens() -> None:
    assert translate() == {
        "model": "claude-x",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [text("Hello")]}],
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, DEFAULT_MAX_TOKENS),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 200}, 200),
        ({"max_tokens": 100, "max_completion_tokens": 200}, 200),
        ({"max_tokens": None, "max_completion_tokens": None}, DEFAULT_MAX_TOKENS),
    ],
)
def test_max_tokens_comes_from_the_request_else_the_default(
    given: dict[str, Any], expected: int
) -> None:
    assert translate(**given)["max_tokens"] == expected


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    one = translate(messages=[{"role": "system", "content": "Be brief."}, USER])
    assert one["system"] == "Be brief."
    several = translate(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [text("Be kind."), text("Be right.")]},
        USER,
        {"role": "system", "content": "Later."},
    ])  # fmt: skip
    assert several["system"] == [text("Be brief."), text("Be kind."), text("Be right."),
                                 text("Later.")]  # fmt: skip
    assert several["messages"] == [{"role": "user", "content": [text("Hello")]}]


def test_same_role_messages_merge_so_roles_alternate() -> None:
    out = translate(messages=[
        {"role": "user", "content": "a"},
        {"role": "user", "content": [text("b"), text("c")]},
        {"role": "assistant", "content": "d"},
        {"role": "assistant", "content": "e"},
        {"role": "user", "content": "f"},
    ])  # fmt: skip
    assert out["messages"] == [
        {"role": "user", "content": [text("a"), text("b"), text("c")]},
        {"role": "assistant", "content": [text("d"), text("e")]},
        {"role": "user", "content": [text("f")]},
    ]


def test_a_conversation_that_starts_with_the_assistant_gets_a_user_turn_first() -> None:
    out = translate(messages=[{"role": "assistant", "content": "Hi! How can I help?"}, USER])
    assert out["messages"] == [
        {"role": "user", "content": [text(FIRST_TURN_PLACEHOLDER)]},
        {"role": "assistant", "content": [text("Hi! How can I help?")]},
        {"role": "user", "content": [text("Hello")]},
    ]


def test_empty_text_is_left_out_and_a_prefill_loses_its_trailing_whitespace() -> None:
    out = translate(messages=[
        {"role": "user", "content": [text("a"), text("  ")]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "The answer is "},
    ])  # fmt: skip
    assert out["messages"] == [
        {"role": "user", "content": [text("a"), text("b")]},
        {"role": "assistant", "content": [text("The answer is")]},
    ]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ["END"]), (["a", "b"], ["a", "b"]), (None, None), ([], None)],
)
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str] | None) -> None:
    assert translate(stop=stop).get("stop_sequences") == expected


def test_sampling_parameters_and_stream_are_sent_as_given() -> None:
    out = translate(temperature=0.2, top_p=0.9, stream=True)
    assert (out["temperature"], out["top_p"], out["stream"]) == (0.2, 0.9, True)
    assert "stream" not in translate(stream=False)


def test_a_temperature_over_anthropics_range_is_refused_not_scaled() -> None:
    error = refused(temperature=1.5)
    assert error.param == "temperature"
    assert "between 0 and 1" in str(error)


def test_images_data_urls_become_base64_and_web_urls_url_sources() -> None:
    out = translate(messages=[{"role": "user", "content": [
        text("What is this?"),
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4A==",
                                            "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
    ]}])  # fmt: skip
    assert out["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": "/9j/4A=="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("data:image/tiff;base64,AAAA", "image/tiff"),
        ("data:image/png,rawbytes", "base64"),
        ("ftp://example.com/a.png", "http(s)"),
        ("file:///etc/passwd", "http(s)"),
    ],
)
def test_images_anthropic_cannot_take_are_refused(url: str, says: str) -> None:
    error = refused(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}])  # fmt: skip
    assert error.param == "messages[0].content[0].image_url.url"
    assert says in str(error)


@pytest.mark.parametrize("kind", ["input_audio", "file", "video"])
def test_other_content_parts_are_refused(kind: str) -> None:
    error = refused(messages=[{"role": "user", "content": [text("a"), {"type": kind}]}])
    assert error.param == "messages[0].content[1]"


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}  # fmt: skip


def test_function_tools_become_tools_with_an_input_schema() -> None:
    bare = {"type": "function", "function": {"name": "now", "strict": True}}
    out = translate(tools=[WEATHER, bare])
    assert out["tools"] == [
        {"name": "weather", "description": "The weather in a city",
         "input_schema": WEATHER["function"]["parameters"]},  # type: ignore[index]
        {"name": "now", "input_schema": {"type": "object", "properties": {}}, "strict": True},
    ]  # fmt: skip
    assert "tool_choice" not in out  # auto is Anthropic's default


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, None),
        ("auto", True, None),
        ("none", None, {"type": "none"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "weather"}}, None,
         {"type": "tool", "name": "weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)  # fmt: skip
def test_tool_choice_and_parallel_tool_calls(
    choice: Any, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    assert translate(tools=[WEATHER], tool_choice=choice,
                     parallel_tool_calls=parallel).get("tool_choice") == expected  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}},
         "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)  # fmt: skip
def test_tools_anthropic_has_no_equivalent_for_are_refused(
    body: dict[str, Any], param: str
) -> None:
    assert refused(**body).param == param


CALL = {"id": "call_1", "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip


def test_a_tool_conversation_becomes_tool_use_and_tool_result_blocks() -> None:
    out = translate(tools=[WEATHER], messages=[
        USER,
        {"role": "assistant", "content": "Let me look.",
         "tool_calls": [CALL, {**CALL, "id": "call_2",
                               "function": {"name": "weather", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [text("Rain")]},
        {"role": "user", "content": "Thanks"},
    ])  # fmt: skip
    assert out["messages"][1:] == [
        {"role": "assistant", "content": [
            text("Let me look."),
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "weather", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [text("Rain")]},
            text("Thanks"),
        ]},
    ]  # fmt: skip


def test_tool_call_ids_outside_anthropics_alphabet_are_rewritten_the_same_way_twice() -> None:
    out = translate(messages=[
        USER,
        {"role": "assistant", "tool_calls": [{**CALL, "id": "call:1/a"}]},
        {"role": "tool", "tool_call_id": "call:1/a", "content": "ok"},
    ])  # fmt: skip
    assert out["messages"][1]["content"][0]["id"] == "call_1_a"
    assert out["messages"][2]["content"][0]["tool_use_id"] == "call_1_a"


@pytest.mark.parametrize("arguments", ['{"city": ', "[1, 2]", "not json"])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    call = {**CALL, "function": {"name": "weather", "arguments": arguments}}
    error = refused(messages=[USER, {"role": "assistant", "tool_calls": [call]}])
    assert error.param == "messages[1].tool_calls[0].function.arguments"


def test_user_and_safety_identifier_become_metadata_user_id() -> None:
    assert translate(user="u-1")["metadata"] == {"user_id": "u-1"}
    assert translate(user="u-1", safety_identifier="s-1")["metadata"] == {"user_id": "s-1"}


def test_structured_output_and_effort_become_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}},
              "additionalProperties": False}  # fmt: skip
    out = translate(
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        reasoning_effort="high",
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema},
                                    "effort": "high"}  # fmt: skip
    assert "output_config" not in translate(response_format={"type": "text"})


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("seed", 42),
        ("response_format", {"type": "json_object"}),
        ("reasoning_effort", "minimal"),
        ("reasoning_effort", "none"),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("audio", {"voice": "alloy", "format": "mp3"}),
        ("modalities", ["text", "audio"]),
        ("verbosity", "low"),
        ("web_search_options", {}),
        ("moderation", {"model": "omni-moderation-latest"}),
        ("a_parameter_from_the_future", 1),
    ],
)
def test_parameters_that_would_change_the_answer_are_refused_by_name(
    param: str, value: Any
) -> None:
    error = refused(**{param: value})
    assert error.param == param
    assert isinstance(error, ConfigurationError)  # a 400 to the client
    assert str(error).startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 1), ("logprobs", False), ("top_logprobs", 0), ("logit_bias", {}),
        ("presence_penalty", 0), ("frequency_penalty", 0.0), ("seed", None),
        ("modalities", ["text"]), ("verbosity", "medium"), ("functions", []),
        ("stream_options", {"include_usage": True, "include_obfuscation": False}),
        ("parallel_tool_calls", True), ("store", False), ("metadata", {"k": "v"}),
        ("service_tier", "flex"), ("prompt_cache_key", "k"), ("prompt_cache_retention", "24h"),
        ("prediction", {"type": "content", "content": "x"}),
    ],
)  # fmt: skip
def test_parameters_that_ask_for_nothing_or_cannot_change_the_answer_are_accepted(
    param: str, value: Any
) -> None:
    assert translate(**{param: value}) == translate()


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "system", "content": "only a system prompt"}], "messages"),
        (["hello"], "messages[0]"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
        ([{"role": "system", "content": [{"type": "image_url"}]}], "messages[0].content[0]"),
        ([USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}],
         "messages[1].function_call"),
        ([USER, {"role": "tool", "content": "x"}], "messages[1].tool_call_id"),
    ],
)  # fmt: skip
def test_messages_anthropic_cannot_take_are_refused(messages: list[Any], param: str) -> None:
    assert refused(messages=messages).param == param


def test_the_client_asks_for_the_usage_chunk_in_stream_options() -> None:
    assert wants_usage({"stream_options": {"include_usage": True}})
    assert not wants_usage({"stream_options": {"include_usage": False}})
    assert not wants_usage({"stream_options": None})
    assert not wants_usage({})


FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
part_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "refusal"])},
    optional={
        "text": st.text(max_size=5) | json_values,
        "refusal": json_values,
        "image_url": st.sampled_from(
            [{"url": "https://x/y.png"}, {"url": "data:image/gif;base64,R0"}]
        )
        | json_values,
    },
)
message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "x"])},
    optional={
        "content": st.one_of(st.text(max_size=5), st.lists(part_like, max_size=3), json_values),
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.text(max_size=4),
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {
                            "name": st.text(max_size=4),
                            "arguments": st.sampled_from(["{}", '{"a":1}', "{"]),
                        }
                    ),
                }
            ),
            max_size=2,
        )
        | json_values,
        "tool_call_id": st.text(max_size=4) | json_values,
    },
)
sensible = {
    "max_tokens": st.integers(-1, 10),
    "stop": st.text(max_size=3),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "stream": st.booleans(),
    "tools": st.just([WEATHER]),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "user": st.text(max_size=3),
    "response_format": st.just({"type": "text"}),
    "parallel_tool_calls": st.booleans(),
    "n": st.just(1),
}
body_like = st.fixed_dictionaries(
    {"messages": st.lists(st.one_of(st.just(USER), message_like), max_size=4)},
    optional={k: st.one_of(v, v, v, json_values) for k, v in sensible.items()},
)


@FUZZ
@given(body_like)
def test_any_request_translates_or_is_refused_with_a_translation_error(body: Any) -> None:
    before = json.dumps(body, sort_keys=True)
    try:
        out = to_anthropic_request(body, model="m", max_tokens_default=1)
    except TranslationError as e:
        param = e.param
        assert param
    else:
        check_anthropic_request(out)
    assert json.dumps(body, sort_keys=True) == before  # the client's body is left as it was


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"temperature": 1}, {}),
        ({"temperature": 1.0, "top_p": 1}, {}),
        ({"temperature": 0, "top_p": 0.5}, {"temperature": 0, "top_p": 0.5}),
        ({"top_k": 40}, {"top_k": 40}),
    ],
)
def test_sampling_values_that_ask_for_anthropics_default_are_left_out(
    body: dict[str, Any], sent: dict[str, Any]
) -> None:
    out = translate(**body)
    assert {k: out[k] for k in ("temperature", "top_p", "top_k") if k in out} == sent


def test_a_refusal_says_itself_to_either_client_as_a_400_body() -> None:
    error = refused(n=3)
    assert error.openai_body() == {
        "error": {
            "message": "n: more than one choice (n > 1) has no Anthropic equivalent",
            "type": "invalid_request_error",
            "param": "n",
            "code": "unsupported_parameter",
        }
    }
    assert error.anthropic_body()["error"]["type"] == "invalid_request_error"
