"""OpenAI's Responses API (``POST /v1/responses``) as the fakes speak it.

Not streamed, the answer is a ``Response``: ``id: resp_...``, ``object: response``,
``status: completed``, one ``message`` output item whose one content part is ``output_text``
``hello from {name}``, and usage (input, output and total tokens, with their details).
Streamed (``stream: true``), the events OpenAI sends, each ``event: <type>`` and
``data: <json>`` with a ``sequence_number`` counting from 0: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``, one
``response.output_text.delta`` per chunk (``{name}-{i} ``, each with an ``obfuscation`` field
unless ``stream_options.include_obfuscation`` is false), ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done`` and ``response.completed``. The
stream steering headers count the deltas; ``x-fake-stream-error`` sends an ``error`` event
(``code: server_error``) in place of the rest.

Refused (400, OpenAI's error body): a body that is not a JSON object, an unknown top-level
parameter (``unknown_parameter``), no ``model`` (unless a stored ``prompt`` names one), and no
``input`` (unless a ``prompt``, ``previous_response_id`` or ``conversation`` stands for it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from aiohttp import web

from sluice.fakes.errors import invalid_request
from sluice.fakes.sse import StreamSteering, event, open_stream

__all__ = ["PARAMETERS", "answer"]

# ResponseCreateParams in the openai SDK (3.57), and ``stream``.
PARAMETERS = frozenset(
    {
        "access_programs", "background", "background_options", "context_management",
        "conversation", "image", "include", "input", "instructions", "max_output_tokens",
        "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
        "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
        "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
        "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
        "top_logprobs", "top_p", "truncation", "user",
    }
)  # fmt: skip


def _refusal(body: Any) -> web.Response | None:
    if not isinstance(body, dict):
        return invalid_request("The request body must be a JSON object.")
    for name in body:
        if name not in PARAMETERS:
            return invalid_request(
                f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
            )
    if not body.get("model") and not body.get("prompt"):
        return invalid_request(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    stands_in = ("prompt", "previous_response_id", "conversation")
    if body.get("input") in (None, "", []) and not any(body.get(k) for k in stands_in):
        return invalid_request(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    return None


def _usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1 + output_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(item_id: str, text: str | None) -> dict[str, Any]:
    """The output message item; ``text`` None while it is still being written."""
    return {
        "id": item_id,
        "type": "message",
        "status": "in_progress" if text is None else "completed",
        "role": "assistant",
        "content": [] if text is None else [_text_part(text)],
    }


def _response(
    body: dict[str, Any],
    response_id: str,
    created: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "background": bool(body.get("background", False)),
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": str(body.get("model", "")),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


async def answer(request: web.Request, name: str, steering: StreamSteering) -> web.StreamResponse:
    """The fake named ``name`` answers a Responses API request (after its steering)."""
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return invalid_request("We could not parse the JSON body of your request.")
    if (refusal := _refusal(body)) is not None:
        return refusal
    response_id = f"resp_{secrets.token_hex(24)}"
    item_id = f"msg_{secrets.token_hex(24)}"
    created = int(time.time())
    if not body.get("stream"):
        text = f"hello from {name}"
        return web.json_response(
            _response(
                body,
                response_id,
                created,
                status="completed",
                output=[_message(item_id, text)],
                usage=_usage(4),
            )
        )
    options = body.get("stream_options")
    obfuscate = not (isinstance(options, dict) and options.get("include_obfuscation") is False)
    response = await open_stream(request)
    sequence = 0

    async def send(data: dict[str, Any]) -> None:
        nonlocal sequence
        data["sequence_number"] = sequence
        sequence += 1
        await response.write(event(str(data["type"]), data))

    async def fail() -> web.StreamResponse:
        await send(
            {
                "type": "error",
                "code": "server_error",
                "message": "The server had an error processing your request. Sorry about that!",
                "param": None,
            }
        )
        await response.write_eof()
        return response

    def snapshot(status: str, output: list[dict[str, Any]], usage: Any = None) -> dict[str, Any]:
        return _response(body, response_id, created, status=status, output=output, usage=usage)

    await send({"type": "response.created", "response": snapshot("in_progress", [])})
    await send({"type": "response.in_progress", "response": snapshot("in_progress", [])})
    await send(
        {"type": "response.output_item.added", "output_index": 0, "item": _message(item_id, None)}
    )
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    await send({"type": "response.content_part.added", **where, "part": _text_part("")})
    text = ""
    for index in range(steering.chunks):
        verdict = await steering.before(request, index)
        if verdict == "cut":
            return response
        if verdict == "error":
            return await fail()
        delta = f"{name}-{index} "
        text += delta
        data: dict[str, Any] = {
            "type": "response.output_text.delta",
            **where,
            "delta": delta,
            "logprobs": [],
        }
        if obfuscate:
            data["obfuscation"] = secrets.token_urlsafe(6)
        await send(data)
        if steering.pause:
            await asyncio.sleep(steering.pause)
    if steering.error_at_end(steering.chunks):
        return await fail()
    await send({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
    await send({"type": "response.content_part.done", **where, "part": _text_part(text)})
    done = _message(item_id, text)
    await send({"type": "response.output_item.done", "output_index": 0, "item": done})
    final = snapshot("completed", [done], _usage(steering.chunks))
    await send({"type": "response.completed", "response": final})
    await response.write_eof()
    return response
