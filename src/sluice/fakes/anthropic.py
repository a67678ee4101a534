"""A fake Anthropic Messages API, steered as the OpenAI fake is (``x-fake-*``, see
``sluice.fakes.upstream``), with Anthropic's error bodies:
``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": "req_..."}``.

Endpoints: ``POST /v1/messages`` and ``GET /v1/models`` (what a probe asks). Every answer
carries a ``request-id`` header.

Refused, in this order, each with Anthropic's status and error type:

* no key (401 ``authentication_error``): the key is ``x-api-key`` or, as the 2.x SDKs send it,
  ``Authorization: Bearer``; ``x-api-key`` wins when both are there. With ``api_key`` set, any
  other key is refused too.
* no ``anthropic-version`` header, or one it does not know (400 ``invalid_request_error``). It
  knows ``2023-06-01`` (what Sluice's provider sends) and ``2026-10-21`` (what the 2.x SDKs
  send), and the body rules differ between them, as the SDKs' types do:
* the body (400 ``invalid_request_error``): not a JSON object; an unknown top-level field
  (``<field>: Extra inputs are not permitted``; ``temperature``, ``top_p`` and ``top_k`` are
  fields on 2023-06-01 only); no ``model``, no ``max_tokens`` (or not an integer >= 0), no
  ``messages`` or an empty list; a message that is not an object, has no ``content`` or a role
  other than ``user`` and ``assistant``; ``system`` as a message role is refused on 2023-06-01
  (its SDK: "there is no system role for input messages") and allowed on 2026-10-21 (whose SDK
  has ``SystemMessageParam``); ``tool_choice`` ``any`` or ``tool`` without ``tools``.
  Consecutive turns of one role and a first turn that is ``assistant`` are accepted, as the
  API documents today ("consecutive user or assistant turns ... will be combined");
  ``strict_turns=True`` refuses them as the API once did (and Bedrock still does).

Answers a ``Message`` (``msg_...``): one text block ``hello from {name}``, ``stop_reason:
end_turn``, usage with input, output and cache fields. With ``tools``, and ``tool_choice``
``any`` or ``tool`` (or the ``x-fake-tool-use`` header: a tool's name, or anything to take the
first), one ``tool_use`` block instead (``toolu_...``, the input filled from the tool's
``input_schema`` required properties) and ``stop_reason: tool_use``; ``tool_choice: none``
never uses one. Streamed (``stream: true``): ``message_start``, ``content_block_start``,
``ping``, one ``content_block_delta`` per chunk (``text_delta`` ``{name}-{i} ``, or
``input_json_delta`` pieces of the tool input), ``content_block_stop``, ``message_delta``
(``stop_reason``, ``usage.output_tokens``) and ``message_stop``, each ``event: <type>`` and
``data: <json>``. The model name is not checked.

Steering, besides the OpenAI fake's: a failing status gets Anthropic's error type for it
(529 ``overloaded_error``, 429 ``rate_limit_error`` with ``retry-after``, 1 unless
``x-fake-retry-after`` says, 500 ``api_error``, ...); ``x-fake-stream-error: N`` sends, after N
chunks, ``event: error`` with ``{"type": "error", "error": {"type": "overloaded_error"}}`` and
ends the stream; ``x-fake-error-type`` names another error type for either.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sluice.fakes.sse import event, open_stream, split
from sluice.fakes.upstream import FakeUpstream

__all__ = ["FakeAnthropic"]

VERSIONS = ("2023-06-01", "2026-10-21")

# MessageCreateParams in the anthropic SDK 2.14 (API version 2026-10-21), and ``stream``;
# its user_profile_id and workspace_id travel as headers, not in the body.
FIELDS = frozenset(
    {
        "cache_control", "container", "diagnostics", "inference_geo", "max_tokens",
        "messages", "metadata", "model", "output_config", "service_tier", "speed",
        "stop_sequences", "stream", "system", "thinking", "tool_choice", "tools",
    }
)  # fmt: skip
# 2023-06-01 has the sampling parameters too (removed from the 2.x SDKs and the new version).
FIELDS_2023 = FIELDS | {"temperature", "top_k", "top_p"}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
MESSAGES = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "This request would exceed the rate limit for your organization.",
    "api_error": "Internal server error",
}


def _request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


def error_body(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def _refuse(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Anthropic's error answer; its ``request_id`` is the ``request-id`` header's."""
    request_id = _request_id()
    return web.json_response(
        error_body(kind, message, request_id),
        status=status,
        headers={**(headers or {}), "request-id": request_id},
    )


def _invalid(message: str) -> web.Response:
    return _refuse(400, "invalid_request_error", message)


def _example(schema: Any) -> Any:
    """A value that fits a JSON schema well enough for a fake tool call."""
    if not isinstance(schema, dict):
        return "fake"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        return {name: _example(properties.get(name)) for name in required}
    return {"integer": 1, "number": 1, "boolean": True, "array": [], "null": None}.get(
        str(kind), "fake"
    )


@dataclass
class FakeAnthropic(FakeUpstream):
    """``FakeAnthropic(name=...)``: ``root_url`` is what ``anthropic.AsyncAnthropic(base_url=...)``
    takes; ``base_url`` (``.../v1``) is an Upstream's baseURL."""

    models: tuple[str, ...] = ("claude-fake-1",)
    api_key: str | None = None  # when set, the only key accepted
    strict_turns: bool = False  # refuse non-alternating turns and an assistant turn first

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._anthropic_models)
        app.router.add_post("/v1/messages", self._messages)
        app.on_response_prepare.append(_add_request_id)
        return app

    def _error(self, request: web.Request, code: int) -> web.Response:
        kind = self._steer(request, "x-fake-error-type") or ERROR_TYPES.get(
            code, "api_error" if code >= 500 else "invalid_request_error"
        )
        headers = {}
        retry_after = self._steer(request, "x-fake-retry-after")
        if code == 429:
            headers["retry-after"] = retry_after or "1"
        elif retry_after:
            headers["retry-after"] = retry_after
        return _refuse(code, kind, MESSAGES.get(kind, f"fake {self.name} says {code}"), headers)

    async def _gate(self, request: web.Request) -> tuple[web.Response | None, str]:
        """Steering, then the key and the version: a refusal, or None and the version."""
        if (trouble := await self._trouble(request)) is not None:
            return trouble, ""
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token if scheme.lower() == "bearer" else None
        if not key:
            return _refuse(401, "authentication_error", "x-api-key header is required"), ""
        if self.api_key is not None and key != self.api_key:
            return _refuse(401, "authentication_error", "invalid x-api-key"), ""
        version = request.headers.get("anthropic-version")
        if not version:
            return _invalid("anthropic-version: header is required"), ""
        if version not in VERSIONS:
            known = " and ".join(VERSIONS)
            return _invalid(f"anthropic-version: unknown version {version!r} (known: {known})"), ""
        return None, version

    async def _anthropic_models(self, request: web.Request) -> web.Response:
        refusal, _ = await self._gate(request)
        if refusal is not None:
            return refusal
        data = [
            {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-01-01T00:00:00Z",
                "lifecycle": "active",
            }
            for model in self.models
        ]
        return web.json_response(
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    def _refusal(self, body: Any, version: str) -> web.Response | None:
        if not isinstance(body, dict):
            return _invalid("The request body is not a JSON object")
        fields = FIELDS_2023 if version == "2023-06-01" else FIELDS
        for name in body:
            if name not in fields:
                return _invalid(f"{name}: Extra inputs are not permitted")
        for required in ("model", "max_tokens", "messages"):
            if required not in body:
                return _invalid(f"{required}: Field required")
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            return _invalid("max_tokens: Input should be a valid integer, at least 0")
        if (refusal := self._messages_refusal(body["messages"], version)) is not None:
            return refusal
        choice = body.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind in ("any", "tool") and not body.get("tools"):
            return _invalid("tool_choice: tool_choice may only be specified while providing tools")
        return None

    def _messages_refusal(self, messages: Any, version: str) -> web.Response | None:
        if not isinstance(messages, list):
            return _invalid("messages: Input should be a valid list")
        if not messages:
            return _invalid("messages: at least one message is required")
        roles = (
            ["user", "assistant"] if version == "2023-06-01" else ["user", "assistant", "system"]
        )
        turns: list[str] = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                return _invalid(f"messages.{index}: Input should be a valid dictionary")
            role = message.get("role")
            if role == "system" and "system" not in roles:
                return _invalid(
                    f'messages.{index}: Unexpected role "system". The Messages API accepts a '
                    'top-level `system` parameter, not "system" as an input message role.'
                )
            if role not in roles:
                allowed = " or ".join(f"'{r}'" for r in roles)
                return _invalid(f"messages.{index}.role: Input should be {allowed}")
            if "content" not in message:
                return _invalid(f"messages.{index}.content: Field required")
            if role != "system":
                turns.append(str(role))
        if not self.strict_turns:
            return None
        if not turns or turns[0] != "user":
            return _invalid('messages: first message must use the "user" role')
        for before, after in itertools.pairwise(turns):
            if before == after:
                return _invalid(
                    'messages: roles must alternate between "user" and "assistant", '
                    f'but found multiple "{after}" roles in a row'
                )
        return None

    def _tool(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any] | None:
        """The tool this answer calls, if any."""
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t]
        choice = body.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, dict) else None
        if not tools or kind == "none":
            return None
        named = {str(t["name"]): t for t in tools}
        if kind == "tool" and isinstance(choice, dict):
            return named.get(str(choice.get("name")), tools[0])
        steered = self._steer(request, "x-fake-tool-use")
        if kind == "any" or steered:
            return named.get(steered or "", tools[0])
        return None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        refusal, version = await self._gate(request)
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _invalid("There was an error parsing the body: it is not valid JSON")
        if (refusal := self._refusal(body, version)) is not None:
            return refusal
        tool = self._tool(request, body)
        message: dict[str, Any] = {
            "id": f"msg_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": str(body["model"]),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(1),
        }
        block: dict[str, Any]
        if tool is not None:
            block = {
                "type": "tool_use",
                "id": f"toolu_{secrets.token_hex(12)}",
                "name": str(tool["name"]),
                "input": _example(tool.get("input_schema") or {"type": "object"}),
            }
            stop_reason = "tool_use"
        else:
            block = {"type": "text", "text": f"hello from {self.name}"}
            stop_reason = "end_turn"
        if not body.get("stream"):
            message["content"] = [block]
            message["stop_reason"] = stop_reason
            message["usage"] = _usage(4)
            return web.json_response(message)
        return await self._stream(request, message, block, stop_reason)

    async def _stream(
        self,
        request: web.Request,
        message: dict[str, Any],
        block: dict[str, Any],
        stop_reason: str,
    ) -> web.StreamResponse:
        steering = self._stream_steering(request)
        response = await open_stream(request)
        error_type = self._steer(request, "x-fake-error-type") or "overloaded_error"

        async def send(data: dict[str, Any]) -> None:
            await response.write(event(str(data["type"]), data))

        async def fail() -> web.StreamResponse:
            message = MESSAGES.get(error_type, f"fake {self.name} failed mid-stream")
            await send(error_body(error_type, message, response.headers["request-id"]))
            await response.write_eof()
            return response

        await send({"type": "message_start", "message": message})
        if block["type"] == "tool_use":
            start = {**block, "input": {}}
            pieces = split(json.dumps(block["input"]), steering.chunks)

            def delta(piece: str) -> dict[str, Any]:
                return {"type": "input_json_delta", "partial_json": piece}
        else:
            start = {"type": "text", "text": ""}
            pieces = [f"{self.name}-{i} " for i in range(steering.chunks)]

            def delta(piece: str) -> dict[str, Any]:
                return {"type": "text_delta", "text": piece}

        await send({"type": "content_block_start", "index": 0, "content_block": start})
        await send({"type": "ping"})
        for index, piece in enumerate(pieces):
            verdict = await steering.before(request, index)
            if verdict == "cut":
                return response
            if verdict == "error":
                return await fail()
            await send({"type": "content_block_delta", "index": 0, "delta": delta(piece)})
            if steering.pause:
                await asyncio.sleep(steering.pause)
        if steering.error_at_end(len(pieces)):
            return await fail()
        await send({"type": "content_block_stop", "index": 0})
        await send(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            }
        )
        await send({"type": "message_stop"})
        await response.write_eof()
        return response


def _usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("request-id", _request_id())
