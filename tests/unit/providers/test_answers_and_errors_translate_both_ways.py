"""Answers (from_anthropic_response, to_anthropic_response), usage, stop reasons, error bodies
and the classification of Anthropic's statuses. Every translated answer validates as the SDK's
Message or ChatCompletion."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types.shared import ErrorResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.providers.anthropic import (
    AnthropicVerdict,
    Disposition,
    UpstreamFormatError,
    anthropic_stop_reason,
    anthropic_usage,
    classify_anthropic,
    from_anthropic_error,
    from_anthropic_response,
    openai_finish_reason,
    openai_usage,
    status_for_error_type,
    to_anthropic_error,
    to_anthropic_response,
)
from tests.unit.providers.support import check_completion, check_message


def message(
    *content: dict[str, Any], stop_reason: str = "end_turn", **usage: int
) -> dict[str, Any]:
    body = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }
    check_message(body)  # the fixture is a real Message
    return body


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


TOOL_USE = {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}}


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    out = from_anthropic_response(body, model="gpt-x", created=1700000000)
    check_completion(out)
    return out


def test_a_text_answer() -> None:
    assert to_openai(message(text("Hello"), text(" world"))) == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        },
    }


def test_tool_use_becomes_tool_calls_and_thinking_is_left_out() -> None:
    out = to_openai(
        message(
            {"type": "thinking", "thinking": "The user wants...", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xyz"},
            text("Let me look."),
            TOOL_USE,
            stop_reason="tool_use",
        )
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "toolu_01",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }


def test_only_tool_calls_have_no_content() -> None:
    out = to_openai(message(TOOL_USE, stop_reason="tool_use"))
    assert out["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("a_reason_from_the_future", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons_become_finish_reasons(stop_reason: Any, finish_reason: str) -> None:
    assert openai_finish_reason(stop_reason) == finish_reason


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_become_stop_reasons(finish_reason: Any, stop_reason: str) -> None:
    assert anthropic_stop_reason(finish_reason) == stop_reason


def test_cached_tokens_count_in_the_prompt_as_openai_counts_them() -> None:
    usage = to_openai(
        message(
            text("x"),
            cache_read_input_tokens=300,
            cache_creation_input_tokens=50,
            output_tokens_details={"thinking_tokens": 3},  # type: ignore[arg-type]
        )
    )["usage"]
    assert usage == {
        "prompt_tokens": 360,
        "completion_tokens": 5,
        "total_tokens": 365,
        "prompt_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 50},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


counts = st.integers(0, 10**9)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(counts, counts, counts, counts)
def test_usage_goes_there_and_back(fresh: int, read: int, written: int, output: int) -> None:
    usage = {
        "input_tokens": fresh,
        "output_tokens": output,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    }
    back = anthropic_usage(openai_usage(usage))
    assert back["input_tokens"] == fresh
    assert back["output_tokens"] == output
    assert back.get("cache_read_input_tokens", 0) == read
    assert back.get("cache_creation_input_tokens", 0) == written


@pytest.mark.parametrize(
    "body",
    [
        {"type": "error", "error": {"type": "api_error", "message": "x"}},
        {"type": "message", "id": "m", "content": "text", "usage": {}},
        {"type": "message", "id": "m", "content": [], "usage": None},
        {"type": "message", "content": [], "usage": {"input_tokens": 1, "output_tokens": 1}},
        {**message(), "content": [{"type": "text", "text": 5}]},
        {**message(), "content": [{"type": "tool_use", "id": "t", "name": "n", "input": "x"}]},
        {**message(), "usage": {"input_tokens": -1, "output_tokens": 1}},
        {**message(), "usage": {"input_tokens": "10", "output_tokens": 1}},
    ],
)
def test_an_answer_that_is_not_a_message_is_an_upstream_format_error(body: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        from_anthropic_response(body, model="m")


# OpenAI's answer as Anthropic's, for the /v1/messages endpoint.


def completion(
    message: dict[str, Any], finish_reason: str = "stop", **extra: Any
) -> dict[str, Any]:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 7,
            "total_tokens": 27,
            "prompt_tokens_details": {"cached_tokens": 12},
        },
        **extra,
    }
    check_completion(body)
    return body


def to_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    out = to_anthropic_response(body, model="claude-x")
    check_message(out)
    return out


def test_an_openai_answer_as_a_message() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
    }
    out = to_anthropic(
        completion({"role": "assistant", "content": "Looking.", "tool_calls": [call]}, "tool_calls")
    )
    assert out == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            text("Looking."),
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 8,
            "output_tokens": 7,
            "cache_read_input_tokens": 12,
            "cache_creation_input_tokens": 0,
        },
    }


def test_a_refusal_is_text_with_stop_reason_refusal() -> None:
    out = to_anthropic(completion({"role": "assistant", "content": None, "refusal": "I can't."}))
    assert out["content"] == [text("I can't.")]
    assert out["stop_reason"] == "refusal"


def test_an_answer_without_usage_reports_zero() -> None:
    body = completion({"role": "assistant", "content": "hi"})
    del body["usage"]
    assert to_anthropic(body)["usage"] == {"input_tokens": 0, "output_tokens": 0}


@pytest.mark.parametrize("arguments", ["{", "[1]", '"x"'])
def test_tool_arguments_that_are_not_a_json_object_are_an_upstream_format_error(
    arguments: str,
) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    with pytest.raises(UpstreamFormatError):
        to_anthropic_response(
            completion({"role": "assistant", "tool_calls": [call]}, "tool_calls"), model="m"
        )


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"choices": "x"},
        {"choices": [{"message": None}]},
        {"choices": [{"message": {"content": 5}}]},
        {"choices": [{"message": {"tool_calls": {}}}]},
    ],
)
def test_a_completion_without_a_usable_choice_is_an_upstream_format_error(body: Any) -> None:
    with pytest.raises(UpstreamFormatError):
        to_anthropic_response(body, model="m")


def test_an_answer_goes_there_and_back() -> None:
    original = message(text("Let me look."), TOOL_USE, stop_reason="tool_use")
    original["usage"] |= {"cache_read_input_tokens": 4, "cache_creation_input_tokens": 2}
    there = from_anthropic_response(original, model="gpt-x")
    back = to_anthropic_response(there, model="claude-sonnet-4-5")
    assert back == original


# Errors.


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
            b'"request_id":"req_1"}',
            {"message": "Overloaded", "type": "overloaded_error", "code": "overloaded_error"},
        ),
        (
            400,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            {"message": "bad", "type": "invalid_request_error", "code": "invalid_request_error"},
        ),
        (
            502,
            b"<html>Bad Gateway</html>",
            {"message": "the upstream answered HTTP 502", "type": "api_error", "code": "api_error"},
        ),
        (
            404,
            None,
            {
                "message": "the upstream answered HTTP 404",
                "type": "not_found_error",
                "code": "not_found_error",
            },
        ),
    ],
)
def test_anthropic_error_bodies_become_openais(
    status: int, body: Any, expected: dict[str, Any]
) -> None:
    assert from_anthropic_error(body, status=status) == {"error": {**expected, "param": None}}


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "invalid_request_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
    ],
)
def test_openai_error_bodies_become_anthropics(status: int, error_type: str) -> None:
    body = {"error": {"message": "no", "type": "x", "param": None, "code": None}}
    out = to_anthropic_error(body, status=status)
    assert out == {"type": "error", "error": {"type": error_type, "message": "no"}}
    ErrorResponse.model_validate(out)


@pytest.mark.parametrize(
    ("status", "headers", "verdict"),
    [
        (200, None, AnthropicVerdict(Disposition.SUCCESS, 200)),
        (
            529,
            None,
            AnthropicVerdict(Disposition.FAIL_OVER, 529, "overloaded_error"),
        ),
        (500, None, AnthropicVerdict(Disposition.FAIL_OVER, 500, "overloaded_error")),
        (408, None, AnthropicVerdict(Disposition.FAIL_OVER, 408, "overloaded_error")),
        (
            429,
            {"retry-after": "17"},
            AnthropicVerdict(Disposition.RATE_LIMITED, 429, "overloaded_error", "17"),
        ),
        (400, None, AnthropicVerdict(Disposition.PASS_BACK, 400, "overloaded_error")),
        (401, None, AnthropicVerdict(Disposition.PASS_BACK, 401, "overloaded_error")),
        (403, None, AnthropicVerdict(Disposition.PASS_BACK, 403, "overloaded_error")),
        (404, None, AnthropicVerdict(Disposition.PASS_BACK, 404, "overloaded_error")),
        (413, None, AnthropicVerdict(Disposition.PASS_BACK, 413, "overloaded_error")),
    ],
)
def test_statuses_are_classified_as_the_issue_says(
    status: int, headers: dict[str, str] | None, verdict: AnthropicVerdict
) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "m"}}
    assert classify_anthropic(status, headers=headers, body=body if status != 200 else None) == (
        verdict
    )


def test_a_429_without_retry_after_and_an_error_without_a_body() -> None:
    assert classify_anthropic(429) == AnthropicVerdict(Disposition.RATE_LIMITED, 429)
    assert classify_anthropic(502, body=b"not json") == AnthropicVerdict(Disposition.FAIL_OVER, 502)


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 529),
        ("api_error", 500),
        ("rate_limit_error", 429),
        ("timeout_error", 504),
        ("invalid_request_error", 400),
        ("something_new", 500),
        (None, 500),
    ],
)
def test_an_error_events_type_stands_for_a_status(error_type: str | None, status: int) -> None:
    assert status_for_error_type(error_type) == status


def test_answers_may_be_given_as_the_bytes_that_came() -> None:
    body = message(text("hi"))
    assert from_anthropic_response(orjson.dumps(body), model="m", created=1) == (
        from_anthropic_response(body, model="m", created=1)
    )
    openai_body = completion({"role": "assistant", "content": "hi"})
    assert to_anthropic_response(orjson.dumps(openai_body), model="m") == (
        to_anthropic_response(openai_body, model="m")
    )
    for bad in (b"not json", b"[1]"):
        with pytest.raises(UpstreamFormatError):
            from_anthropic_response(bad, model="m")
        with pytest.raises(UpstreamFormatError):
            to_anthropic_response(bad, model="m")
