"""Answers between Anthropic's Messages and OpenAI's Chat Completions, both ways, and the two
pieces the streams share with them: stop reasons and usage.

Usage: OpenAI's ``prompt_tokens`` counts every input token, cached ones included, and
``prompt_tokens_details`` says how many were read from the cache (``cached_tokens``) and
written to it (``cache_write_tokens``). Anthropic's ``input_tokens`` counts only the uncached
ones, beside ``cache_read_input_tokens`` and ``cache_creation_input_tokens``. So
``prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens``, and
back. Thinking tokens are part of ``output_tokens`` and of ``completion_tokens``
(``completion_tokens_details.reasoning_tokens``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from sluice.providers.translation import UpstreamFormatError, loads_object

__all__ = [
    "anthropic_stop_reason",
    "anthropic_usage",
    "from_anthropic_response",
    "openai_finish_reason",
    "openai_usage",
    "to_anthropic_response",
]

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",  # OpenAI's length covers the context too
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",  # only with Anthropic's server tools, which are never sent
}
_STOP_REASONS = {
    "stop": "end_turn",  # OpenAI does not say whether a stop sequence matched
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def openai_finish_reason(stop_reason: Any) -> str:
    """Anthropic's ``stop_reason`` as OpenAI's ``finish_reason`` (an unknown one: stop)."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def anthropic_stop_reason(finish_reason: Any) -> str:
    """OpenAI's ``finish_reason`` as Anthropic's ``stop_reason`` (an unknown one: end_turn)."""
    if isinstance(finish_reason, str):
        return _STOP_REASONS.get(finish_reason, "end_turn")
    return "end_turn"


def _count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise UpstreamFormatError(f"usage.{name} is not a token count")
    return value


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's usage as OpenAI's (see the module's docstring)."""
    cache_read = _count(usage, "cache_read_input_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens")
    prompt = _count(usage, "input_tokens") + cache_read + cache_write
    completion = _count(usage, "output_tokens")
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
    }
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and details.get("thinking_tokens") is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": _count(details, "thinking_tokens")}
    return out


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenAI's usage as Anthropic's (see the module's docstring). None (an upstream that
    reports none) gives zeros: Anthropic's usage is not optional."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    cache_read = _count(details, "cached_tokens")
    cache_write = _count(details, "cache_write_tokens")
    out: dict[str, Any] = {
        "input_tokens": max(0, _count(usage, "prompt_tokens") - cache_read - cache_write),
        "output_tokens": _count(usage, "completion_tokens"),
    }
    if cache_read or cache_write:
        out["cache_read_input_tokens"] = cache_read
        out["cache_creation_input_tokens"] = cache_write
    completion = usage.get("completion_tokens_details")
    if isinstance(completion, Mapping) and completion.get("reasoning_tokens") is not None:
        out["output_tokens_details"] = {"thinking_tokens": _count(completion, "reasoning_tokens")}
    return out


def from_anthropic_response(
    body: Mapping[str, Any] | bytes, *, model: str, created: int | None = None
) -> dict[str, Any]:
    """An Anthropic Message as an OpenAI chat.completion.

    Text blocks are joined into ``message.content`` (None without text), tool_use blocks
    become ``tool_calls`` (their input JSON-encoded). Thinking blocks are left out, as OpenAI's
    reasoning models leave out their reasoning; their tokens stay in the usage. Other blocks
    (server tools', which are never asked for) are left out too. ``model`` is the name the
    client asked for; ``created`` is now unless given. ``body`` may be the bytes as they came.
    UpstreamFormatError if it is not a Message.
    """
    if isinstance(body, bytes):
        body = loads_object(body, "the upstream's answer")
    if body.get("type") != "message":
        raise UpstreamFormatError("the upstream's answer is not a Message")
    content = body.get("content")
    usage = body.get("usage")
    message_id = body.get("id")
    if not isinstance(content, list) or not isinstance(usage, Mapping):
        raise UpstreamFormatError("the upstream's Message has no content or no usage")
    if not isinstance(message_id, str):
        raise UpstreamFormatError("the upstream's Message has no id")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            texts.append(_str(block, "text", f"content[{i}]"))
        elif kind == "tool_use":
            calls.append(_tool_call(block, f"content[{i}]"))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": message_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": openai_finish_reason(body.get("stop_reason")),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(usage),
    }


def _str(block: Mapping[str, Any], name: str, where: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise UpstreamFormatError(f"the upstream's {where}.{name} is not a string")
    return value


def _tool_call(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    tool_input = block.get("input")
    if not isinstance(tool_input, Mapping):
        raise UpstreamFormatError(f"the upstream's {where}.input is not an object")
    return {
        "id": _str(block, "id", where),
        "type": "function",
        "function": {
            "name": _str(block, "name", where),
            "arguments": orjson.dumps(tool_input).decode(),
        },
    }


def to_anthropic_response(body: Mapping[str, Any] | bytes, *, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion (its first choice: n is never asked for) as an Anthropic
    Message. Its content becomes a text block, a refusal a text block with stop_reason
    refusal, its tool calls tool_use blocks (their arguments JSON-decoded: arguments that are
    not a JSON object are an UpstreamFormatError, as Anthropic's input must be one). ``body``
    may be the bytes as they came."""
    if isinstance(body, bytes):
        body = loads_object(body, "the upstream's answer")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise UpstreamFormatError("the upstream's chat.completion has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise UpstreamFormatError("the upstream's choice has no message")
    stop_reason = anthropic_stop_reason(choice.get("finish_reason"))
    blocks: list[dict[str, Any]] = []
    for name in ("content", "refusal"):
        text = message.get(name)
        if text is not None and not isinstance(text, str):
            raise UpstreamFormatError(f"the upstream's message.{name} is not a string")
        if text:
            blocks.append({"type": "text", "text": text})
            if name == "refusal":
                stop_reason = "refusal"
    calls = message.get("tool_calls")
    if calls is None:
        calls = []
    if not isinstance(calls, list):
        raise UpstreamFormatError("the upstream's message.tool_calls is not a list")
    blocks += [_tool_use(call, f"message.tool_calls[{i}]") for i, call in enumerate(calls)]
    message_id = body.get("id")
    usage = body.get("usage")
    return {
        "id": message_id if isinstance(message_id, str) else "msg_sluice",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage(usage if isinstance(usage, Mapping) else None),
    }


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        raise UpstreamFormatError(f"the upstream's {where} has no function")
    arguments = _str(function, "arguments", f"{where}.function")
    try:
        tool_input = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise UpstreamFormatError(f"the upstream's {where}.function.arguments is not a JSON object")
    return {
        "type": "tool_use",
        "id": _str(call, "id", where),
        "name": _str(function, "name", f"{where}.function"),
        "input": tool_input,
    }
