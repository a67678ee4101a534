"""Requests between OpenAI's Chat Completions and Anthropic's Messages, both ways.

:func:`to_anthropic_request` says an OpenAI chat request in Anthropic's Messages format (an
OpenAI client served by an Anthropic upstream); :func:`to_openai_request` the other way (an
Anthropic client served by an OpenAI-format upstream). Neither ever drops something that would
change the answer: what has no equivalent raises :class:`TranslationError` naming the
parameter. The tables below (``_OPENAI_*``, ``_ANTHROPIC_*``) are the whole list of what is
translated, ignored as harmless, or refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from sluice.providers.translation import TranslationError

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "FIRST_TURN_PLACEHOLDER",
    "to_anthropic_request",
    "to_openai_request",
    "wants_usage",
]

# Anthropic requires max_tokens; OpenAI does not. Used when neither the request nor the
# Upstream's model entry says.
DEFAULT_MAX_TOKENS = 4096

# Anthropic requires the first message to be the user's. A conversation that starts with the
# assistant (a chat UI's greeting) gets this user turn before it; nothing else is invented.
FIRST_TURN_PLACEHOLDER = "."

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
_TOOL_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# --- OpenAI -> Anthropic -------------------------------------------------------------------

# Translated (each below), and ignored because they cannot change the answer: model (the
# Upstream's model name is sent), stream_options (the stream translator's include_usage),
# store and metadata (OpenAI's stored completions), service_tier (capacity and price),
# prompt_cache_key / prompt_cache_retention / prompt_cache_options (cache hints), prediction
# (a latency hint: the answer is the same).
_OPENAI_TRANSLATED = frozenset({
    "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p", "top_k",
    "stream", "tools", "tool_choice", "parallel_tool_calls", "user", "safety_identifier",
    "response_format", "reasoning_effort",
})  # fmt: skip
_OPENAI_IGNORED = frozenset({
    "model", "stream_options", "store", "metadata", "service_tier", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "prediction",
})  # fmt: skip


def _absent(value: Any) -> bool:
    return value is None


# Refused unless they hold the value that asks for nothing (then they are dropped): each would
# change the answer, or what the client gets back, in a way Anthropic cannot.
_OPENAI_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v is None or (type(v) is int and v == 1),
          "more than one choice (n > 1) has no Anthropic equivalent"),
    "logprobs": (lambda v: v is None or v is False, "Anthropic does not return log probabilities"),
    "top_logprobs": (lambda v: v is None or (type(v) is int and v == 0),
                     "Anthropic does not return log probabilities"),
    "logit_bias": (lambda v: v is None or v == {}, "Anthropic has no logit bias"),
    "presence_penalty": (lambda v: v is None or (_is_number(v) and v == 0),
                         "Anthropic has no presence penalty"),
    "frequency_penalty": (lambda v: v is None or (_is_number(v) and v == 0),
                          "Anthropic has no frequency penalty"),
    "seed": (_absent, "Anthropic has no seed: answers could not be reproduced"),
    "modalities": (lambda v: v is None or v == ["text"], "Anthropic answers in text only"),
    "audio": (_absent, "Anthropic answers in text only"),
    "verbosity": (lambda v: v is None or v == "medium", "Anthropic has no verbosity setting"),
    "functions": (lambda v: v is None or v == [], "deprecated functions: use tools"),
    "function_call": (_absent, "deprecated function_call: use tool_choice"),
    "web_search_options": (_absent, "OpenAI's web search has no Anthropic equivalent here"),
    "moderation": (_absent, "Anthropic does not return moderation results"),
}  # fmt: skip


def to_anthropic_request(
    body: Mapping[str, Any], *, model: str, max_tokens_default: int
) -> dict[str, Any]:
    """An OpenAI chat completions request as an Anthropic Messages request for ``model``.

    ``max_tokens_default`` is used when the request has neither ``max_completion_tokens`` nor
    ``max_tokens`` (the Upstream model entry's maxTokens, else :data:`DEFAULT_MAX_TOKENS`).
    Raises TranslationError for what Anthropic cannot do.
    """
    _check_openai_params(body)
    system, messages = _openai_messages(body.get("messages"))
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": _openai_max_tokens(body, max_tokens_default),
        "messages": messages,
    }
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    if (stop := _stop(body.get("stop"), "stop")) is not None:
        out["stop_sequences"] = stop
    out.update(_sampling(body))
    if _flag(body.get("stream"), "stream"):
        out["stream"] = True
    out.update(_openai_tools(body))
    if (user := _user(body)) is not None:
        out["metadata"] = {"user_id": user}
    if output_config := _output_config(body):
        out["output_config"] = output_config
    return out


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether an OpenAI streaming request asked for the usage chunk
    (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _check_openai_params(body: Mapping[str, Any]) -> None:
    for name, value in body.items():
        if name in _OPENAI_TRANSLATED or name in _OPENAI_IGNORED:
            continue
        neutral = _OPENAI_NEUTRAL.get(name)
        if neutral is None:
            raise TranslationError(name, "this parameter has no Anthropic equivalent")
        is_neutral, why = neutral
        if not is_neutral(value):
            raise TranslationError(name, why)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _number(value: Any, param: str, high: float) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise TranslationError(param, "must be a number")
    if not 0 <= value <= high:
        raise TranslationError(param, f"must be between 0 and {high:g} for Anthropic")
    return value  # type: ignore[no-any-return]


def _whole(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise TranslationError(param, "must be a whole number, 0 or more")
    return value


def _flag(value: Any, param: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TranslationError(param, "must be true or false")
    return value


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(param, "must be a string")
    return value


def _openai_max_tokens(body: Mapping[str, Any], default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        if (value := _whole(body.get(name), name)) is not None:
            return value
    return default


def _stop(value: Any, param: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise TranslationError(param, "must be a string or a list of strings")
    return value or None


def _sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    """temperature (OpenAI's 0-2; Anthropic's 0-1, so above 1 is refused, never scaled), top_p
    and top_k, sent as given, except the values that ask for Anthropic's default (temperature
    1, top_p 1), which are left out. Anthropic deprecated all three: its models from Opus 4.7
    on answer any of them with a 400, which the client then sees; leaving the defaults out
    spares the many clients that always send ``temperature: 1``."""
    out: dict[str, Any] = {}
    temperature = _number(body.get("temperature"), "temperature", 1)
    if temperature is not None and temperature != 1:
        out["temperature"] = temperature
    top_p = _number(body.get("top_p"), "top_p", 1)
    if top_p is not None and top_p != 1:
        out["top_p"] = top_p
    if (top_k := _whole(body.get("top_k"), "top_k")) is not None:
        out["top_k"] = top_k
    return out


def _user(body: Mapping[str, Any]) -> str | None:
    for name in ("safety_identifier", "user"):  # safety_identifier replaces user
        if (value := body.get(name)) is not None:
            return _text(value, name)
    return None


def _output_config(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    response_format = body.get("response_format")
    if response_format is not None:
        if not isinstance(response_format, dict):
            raise TranslationError("response_format", "must be an object")
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise TranslationError(
                    "response_format.json_schema.schema",
                    "Anthropic's structured output needs the schema",
                )
            out["format"] = {"type": "json_schema", "schema": schema}
        elif kind != "text":
            raise TranslationError(
                "response_format", f"type {kind!r} has no Anthropic equivalent (json_schema has)"
            )
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in _EFFORTS:
            raise TranslationError(
                "reasoning_effort", f"{effort!r} has no Anthropic effort level (low to max)"
            )
        out["effort"] = effort
    return out


# Messages.


def _openai_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system blocks and the alternating turns (same-role messages merged; tool results
    in the user's turn)."""
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages", "must be a non-empty list")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(param, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system += _text_blocks(message.get("content"), f"{param}.content")
        elif role == "user":
            _add_turn(turns, "user", _user_blocks(message.get("content"), f"{param}.content"))
        elif role == "assistant":
            _add_turn(turns, "assistant", _assistant_blocks(message, param))
        elif role == "tool":
            _add_turn(turns, "user", [_tool_result(message, param)])
        elif role == "function":
            raise TranslationError(f"{param}.role", "deprecated function messages: use tools")
        else:
            raise TranslationError(f"{param}.role", f"unknown role {role!r}")
    if not turns:
        raise TranslationError("messages", "Anthropic needs a user or an assistant message")
    if turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [_text_block(FIRST_TURN_PLACEHOLDER)]})
    _trim_prefill(turns[-1])
    return system, turns


def _add_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:  # an empty message says nothing (and Anthropic refuses empty text)
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] += blocks
    else:
        turns.append({"role": role, "content": blocks})


def _trim_prefill(turn: dict[str, Any]) -> None:
    """A last assistant turn is a prefill, which Anthropic refuses with trailing whitespace."""
    if turn["role"] != "assistant":
        return
    last = turn["content"][-1]
    if last["type"] == "text":  # never whitespace only: _text_blocks left those out
        last["text"] = last["text"].rstrip()


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _text_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """Text content (a string, or text parts) as text blocks; whitespace-only text is left out,
    as Anthropic refuses it."""
    if isinstance(content, str):
        return [_text_block(content)] if content.strip() else []
    if not isinstance(content, list):
        raise TranslationError(param, "must be a string or a list of content parts")
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise TranslationError(f"{param}[{j}]", "only text parts are allowed here")
        text = _text(part.get("text"), f"{param}[{j}].text")
        if text.strip():
            blocks.append(_text_block(text))
    return blocks


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str) or not isinstance(content, list):
        return _text_blocks(content, param)
    blocks = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = _text(part.get("text"), f"{where}.text")
            if text.strip():
                blocks.append(_text_block(text))
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.image_url"))
        elif kind in ("input_audio", "file"):
            raise TranslationError(where, f"{kind} parts have no Anthropic equivalent here")
        else:
            raise TranslationError(where, f"unknown content part type {kind!r}")
    return blocks


def _image_block(image_url: Any, param: str) -> dict[str, Any]:
    """An image_url part: a base64 data: URL as a base64 source, an http(s) URL as a url
    source. ``detail`` is a cost hint and is left out."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    url = _text(url, f"{param}.url")
    if url[:5].lower() == "data:":
        header, comma, data = url[5:].partition(",")
        media_type, *params = header.split(";")
        media_type = media_type.strip().lower()
        if media_type == "image/jpg":
            media_type = "image/jpeg"
        if not comma or "base64" not in (p.strip().lower() for p in params):
            raise TranslationError(f"{param}.url", "a data: URL must be base64")
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise TranslationError(
                f"{param}.url",
                f"media type {media_type!r}: Anthropic takes jpeg, png, gif and webp images",
            )
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url[:8].lower() == "https://" or url[:7].lower() == "http://":
        source = {"type": "url", "url": url}
    else:
        raise TranslationError(f"{param}.url", "must be an http(s) URL or a base64 data: URL")
    return {"type": "image", "source": source}


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    for name in ("function_call", "audio"):
        if message.get(name) is not None:
            raise TranslationError(f"{param}.{name}", "has no Anthropic equivalent")
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):  # a refusal part is what the assistant said: text
        content = [
            {"type": "text", "text": part.get("refusal")}
            if isinstance(part, dict) and part.get("type") == "refusal"
            else part
            for part in content
        ]
    if content is not None:
        blocks += _text_blocks(content, f"{param}.content")
    if (refusal := message.get("refusal")) is not None:
        blocks += _text_blocks(_text(refusal, f"{param}.refusal"), f"{param}.refusal")
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise TranslationError(f"{param}.tool_calls", "must be a list")
        blocks += [_tool_use(call, f"{param}.tool_calls[{j}]") for j, call in enumerate(calls)]
    return blocks


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise TranslationError(param, "only function tool calls have an Anthropic equivalent")
    function = call.get("function")
    if not isinstance(function, dict):
        raise TranslationError(f"{param}.function", "must be an object")
    arguments = _text(function.get("arguments", ""), f"{param}.function.arguments")
    try:
        tool_input = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        raise TranslationError(f"{param}.function.arguments", "is not valid JSON") from None
    if not isinstance(tool_input, dict):
        raise TranslationError(f"{param}.function.arguments", "must be a JSON object")
    return {
        "type": "tool_use",
        "id": _tool_id(call.get("id"), f"{param}.id"),
        "name": _text(function.get("name"), f"{param}.function.name"),
        "input": tool_input,
    }


def _tool_id(value: Any, param: str) -> str:
    """A tool call's id in Anthropic's alphabet (letters, digits, ``_`` and ``-``): any other
    character becomes ``_``, the same way in the tool_use and in its tool_result."""
    text = _text(value, param)
    if not text:
        raise TranslationError(param, "must not be empty")
    return _TOOL_ID_UNSAFE.sub("_", text)


def _tool_result(message: dict[str, Any], param: str) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": _tool_id(message.get("tool_call_id"), f"{param}.tool_call_id"),
    }
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif blocks := _text_blocks(content, f"{param}.content"):
        block["content"] = blocks
    return block


# Tools.


def _openai_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    tools = body.get("tools")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise TranslationError("parallel_tool_calls", "must be true or false")
    choice = body.get("tool_choice")
    if not tools:
        if choice is None or choice in ("none", "auto"):
            return {}
        raise TranslationError("tool_choice", "needs tools")
    if not isinstance(tools, list):
        raise TranslationError("tools", "must be a list")
    out: dict[str, Any] = {"tools": [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]}
    anthropic_choice = _tool_choice(choice)
    if parallel is False and anthropic_choice.get("type") != "none":
        anthropic_choice["disable_parallel_tool_use"] = True
    if anthropic_choice != {"type": "auto"}:  # auto is Anthropic's default with tools
        out["tool_choice"] = anthropic_choice
    return out


def _tool(tool: Any, param: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise TranslationError(param, "only function tools have an Anthropic equivalent")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise TranslationError(f"{param}.function", "must be an object")
    out: dict[str, Any] = {"name": _text(function.get("name"), f"{param}.function.name")}
    if (description := function.get("description")) is not None:
        out["description"] = _text(description, f"{param}.function.description")
    schema = function.get("parameters")
    if schema is None:
        schema = {"type": "object", "properties": {}}  # OpenAI: no parameters
    elif not isinstance(schema, dict):
        raise TranslationError(f"{param}.function.parameters", "must be a JSON schema object")
    out["input_schema"] = schema
    strict = function.get("strict")
    if strict is not None and _flag(strict, f"{param}.function.strict"):
        out["strict"] = True
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return {"type": "tool", "name": _text(name, "tool_choice.function.name")}
    raise TranslationError(
        "tool_choice", "has no Anthropic equivalent (allowed_tools and custom tools have none)"
    )


# --- Anthropic -> OpenAI -------------------------------------------------------------------

# Translated (each below), and ignored because they cannot change the answer: model (the
# Upstream's model name is sent), cache_control (a cache hint), service_tier and speed
# (capacity, latency and price), diagnostics (cache-miss reporting).
_ANTHROPIC_TRANSLATED = frozenset({
    "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "stream",
    "tools", "tool_choice", "metadata", "thinking", "output_config",
})  # fmt: skip
_ANTHROPIC_IGNORED = frozenset({"model", "cache_control", "service_tier", "speed", "diagnostics"})
_ANTHROPIC_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "top_k": (_absent, "OpenAI has no top_k"),
    "container": (_absent, "containers serve Anthropic's server tools"),
    "inference_geo": (_absent, "an OpenAI upstream cannot promise where it runs"),
    "user_profile_id": (_absent, "has no OpenAI equivalent"),
    "workspace_id": (_absent, "has no OpenAI equivalent"),
}


def to_openai_request(body: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat completions request for ``model``.

    A streamed request asks for the usage chunk (``stream_options.include_usage``): the
    Anthropic stream reports usage at its end. Raises TranslationError for what an OpenAI
    upstream cannot do.
    """
    for name, value in body.items():
        if name in _ANTHROPIC_TRANSLATED or name in _ANTHROPIC_IGNORED:
            continue
        neutral = _ANTHROPIC_NEUTRAL.get(name)
        if neutral is None:
            raise TranslationError(name, "this parameter has no OpenAI equivalent")
        is_neutral, why = neutral
        if not is_neutral(value):
            raise TranslationError(name, why)
    max_tokens = _whole(body.get("max_tokens"), "max_tokens")
    if max_tokens is None:
        raise TranslationError("max_tokens", "is required")
    out: dict[str, Any] = {
        "model": model,
        "messages": _system_messages(body.get("system"), "system")
        + _anthropic_messages(body.get("messages")),
        "max_completion_tokens": max_tokens,
    }
    if (stop := _stop(body.get("stop_sequences"), "stop_sequences")) is not None:
        out["stop"] = stop
    for name in ("temperature", "top_p"):
        if (value := _number(body.get(name), name, 1)) is not None:
            out[name] = value
    if _flag(body.get("stream"), "stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    out.update(_anthropic_tools(body))
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and (user := metadata.get("user_id")) is not None:
        out["user"] = _text(user, "metadata.user_id")
    _check_thinking(body.get("thinking"))
    out.update(_openai_output(body.get("output_config")))
    return out


def _check_thinking(thinking: Any) -> None:
    """``disabled`` and ``adaptive`` (the model decides whether to think: it may not) ask for
    nothing an OpenAI upstream cannot give; a thinking budget does."""
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("disabled", "adaptive"):
        raise TranslationError("thinking", f"{kind!r} thinking has no OpenAI equivalent")


def _openai_output(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise TranslationError("output_config", "must be an object")
    out: dict[str, Any] = {}
    output_format = config.get("format")
    if output_format is not None:
        schema = output_format.get("schema") if isinstance(output_format, dict) else None
        if not isinstance(schema, dict) or output_format.get("type") != "json_schema":
            raise TranslationError("output_config.format", "must be a json_schema with a schema")
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    effort = config.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in _EFFORTS:
            raise TranslationError("output_config.effort", f"unknown effort {effort!r}")
        out["reasoning_effort"] = effort
    return out


def _system_messages(system: Any, param: str) -> list[dict[str, Any]]:
    if system is None:
        return []
    content = _openai_text_content(system, param)
    return [{"role": "system", "content": content}] if content else []


def _openai_text_content(content: Any, param: str) -> str | list[dict[str, Any]]:
    """Anthropic text content (a string or text blocks) as OpenAI's: a string, or text parts
    when there are several blocks (their boundaries kept, no separator invented)."""
    if isinstance(content, str):
        return content
    parts = [_text_block(block["text"]) for block in _anthropic_text_blocks(content, param)]
    if len(parts) == 1:
        return str(parts[0]["text"])
    return parts


def _anthropic_text_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise TranslationError(param, "must be a string or a list of content blocks")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError(f"{param}[{j}]", "only text blocks are allowed here")
        _text(block.get("text"), f"{param}[{j}].text")
    return content


def _anthropic_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages", "must be a non-empty list")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(param, "must be an object")
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            out += _from_user(content, f"{param}.content")
        elif role == "assistant":
            out.append(_from_assistant(content, f"{param}.content"))
        elif role == "system":  # a mid-conversation system message, where it stands
            out += _system_messages(content, f"{param}.content")
        else:
            raise TranslationError(f"{param}.role", f"unknown role {role!r}")
    return out


def _from_user(content: Any, param: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages, the rest as one user message, in their
    order."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError(param, "must be a string or a list of content blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            if parts:
                out.append({"role": "user", "content": parts})
                parts = []
            out.append(_tool_message(block, where))
        elif kind == "text":
            parts.append(_text_block(_text(block.get("text"), f"{where}.text")))
        elif kind == "image":
            parts.append(_image_part(block.get("source"), f"{where}.source"))
        else:
            raise TranslationError(where, f"{kind!r} blocks have no OpenAI equivalent here")
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _image_part(source: Any, param: str) -> dict[str, Any]:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        media_type = _text(source.get("media_type"), f"{param}.media_type")
        data = _text(source.get("data"), f"{param}.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _text(source.get("url"), f"{param}.url")
    else:
        raise TranslationError(param, f"{kind!r} image sources have no OpenAI equivalent")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_message(block: dict[str, Any], param: str) -> dict[str, Any]:
    """A tool_result as a tool message. OpenAI has no ``is_error``: an error result's text is
    prefixed with "Error: ", the one place left to say it."""
    content = block.get("content", "")
    text: str | list[dict[str, Any]] = (
        content if isinstance(content, str) else _openai_text_content(content, f"{param}.content")
    )
    if block.get("is_error") is True:
        if isinstance(text, str):
            text = f"Error: {text}" if text else "Error"
        else:
            text = [_text_block("Error: "), *text]
    return {
        "role": "tool",
        "tool_call_id": _text(block.get("tool_use_id"), f"{param}.tool_use_id"),
        "content": text,
    }


def _from_assistant(content: Any, param: str) -> dict[str, Any]:
    """An assistant turn: its text and tool calls. Thinking blocks are left out: they are
    Anthropic's own, signed for Anthropic, and no OpenAI upstream can read them."""
    message: dict[str, Any] = {"role": "assistant"}
    if isinstance(content, str):
        message["content"] = content
        return message
    if not isinstance(content, list):
        raise TranslationError(param, "must be a string or a list of content blocks")
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{param}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text_block(_text(block.get("text"), f"{where}.text")))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind not in ("thinking", "redacted_thinking"):
            raise TranslationError(where, f"{kind!r} blocks have no OpenAI equivalent")
    message["content"] = None if not texts else texts[0]["text"] if len(texts) == 1 else texts
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: dict[str, Any], param: str) -> dict[str, Any]:
    tool_input = block.get("input")
    if not isinstance(tool_input, dict):
        raise TranslationError(f"{param}.input", "must be an object")
    return {
        "id": _text(block.get("id"), f"{param}.id"),
        "type": "function",
        "function": {
            "name": _text(block.get("name"), f"{param}.name"),
            "arguments": orjson.dumps(tool_input).decode(),
        },
    }


def _anthropic_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools:
        if choice is None or (isinstance(choice, dict) and choice.get("type") in ("none", "auto")):
            return {}
        raise TranslationError("tool_choice", "needs tools")
    if not isinstance(tools, list):
        raise TranslationError("tools", "must be a list")
    out: dict[str, Any] = {"tools": [_function(t, f"tools[{i}]") for i, t in enumerate(tools)]}
    if choice is None:
        return out
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice", "must be an object")
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {
            "type": "function",
            "function": {"name": _text(choice.get("name"), "tool_choice.name")},
        }
    elif kind in ("auto", "any", "none"):
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise TranslationError("tool_choice.type", f"unknown tool choice {kind!r}")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def _function(tool: Any, param: str) -> dict[str, Any]:
    """A client tool as a function tool. Anthropic's server tools (web search, code execution,
    ...) have no OpenAI equivalent; neither have deferred loading and input examples (the model
    would see another prompt). cache_control, allowed_callers and eager_input_streaming change
    no answer and are left out."""
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise TranslationError(param, f"server tool {kind!r} has no OpenAI equivalent")
    if tool.get("defer_loading") is True:
        raise TranslationError(f"{param}.defer_loading", "has no OpenAI equivalent")
    if tool.get("input_examples"):
        raise TranslationError(f"{param}.input_examples", "has no OpenAI equivalent")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise TranslationError(f"{param}.input_schema", "must be a JSON schema object")
    function: dict[str, Any] = {"name": _text(tool.get("name"), f"{param}.name")}
    if (description := tool.get("description")) is not None:
        function["description"] = _text(description, f"{param}.description")
    function["parameters"] = schema
    if tool.get("strict") is True:
        function["strict"] = True
    return {"type": "function", "function": function}
