"""What a client request must be before it reaches the exchange, checked cheapest first.

The Host (and a browser's Origin) against the allowlist, the client's key, the content type,
the body (its size and the time it takes to arrive, valid JSON, no top-level key given twice),
and the model name's length. Each refusal is an answer that names the problem
(docs/security.md has the list).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from sluice.proxy.access import ClientKeys, HostAllowlist, presented_key
from sluice.proxy.answers import error_response, write_bounded
from sluice.proxy.limits import Limits

__all__ = ["client_refusal", "host_refusal", "parse_body", "read_body"]


def host_refusal(request: web.Request, hosts: HostAllowlist) -> web.Response | None:
    """A Host (or a browser's Origin) the proxy does not answer to: DNS rebinding, or a web
    page reaching for a proxy on a developer's machine."""
    if not hosts.patterns:
        return None
    if not hosts.allows_host(request.headers.get("Host")):
        return error_response(
            421, "this proxy does not answer to that Host name (see --allowed-hosts)",
            "misdirected_request",
        )  # fmt: skip
    if not hosts.allows_origin(request.headers.get("Origin")):
        return error_response(
            403, "requests from that web origin are refused (see --allowed-hosts)", "forbidden"
        )
    return None


def client_refusal(
    request: web.Request, keys: ClientKeys | None
) -> tuple[web.Response | None, str | None]:
    """A missing or wrong client key (when keys are asked for): the refusal, or the client's
    name (None without keys)."""
    if keys is None:
        return None, None
    client = keys.client(presented_key(request.headers))
    if client is None:
        refused = error_response(
            401,
            "a valid client API key is required: 'Authorization: Bearer <key>' "
            "(the SDK's api_key) or 'x-api-key'",
            "invalid_api_key",
        )
        return refused, None
    return None, client


def parse_body(raw: bytes, limits: Limits) -> dict[str, Any] | web.Response:
    """The request body as JSON with a model name, or the 400 that says what is wrong. A key
    given twice at the top level is refused: the proxy routes by the value it parsed while the
    upstream gets the raw bytes, and parsers disagree on which of two values wins."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error_response(400, "the request body is not valid JSON", "invalid_request_error")
    if not isinstance(body, dict):
        return error_response(
            400, "the request body must be a JSON object", "invalid_request_error"
        )
    if b"\\" in raw or raw.count(b'"model"') != 1:  # escapes can spell a key twice, too
        try:
            pairs = json.loads(raw, object_pairs_hook=list)
        except (ValueError, RecursionError):  # what orjson took and json does not (deep nesting)
            return error_response(
                400, "the request body is not JSON this proxy can check", "invalid_request_error"
            )
        names = [name for name, _ in pairs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            return error_response(
                400, f"the request body has duplicate keys: {', '.join(twice)[:200]}",
                "invalid_request_error",
            )  # fmt: skip
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_response(400, "the request needs a 'model' string", "invalid_request_error")
    if len(model) > limits.max_model_length:
        return error_response(
            400,
            f"the model name is {len(model)} characters long; the limit is "
            f"{limits.max_model_length}",
            "invalid_request_error",
        )
    return body


async def read_body(request: web.Request, limits: Limits) -> bytes | web.Response:
    """The whole body, within the size limit (413) and the time limit (408). A body that has
    all arrived is read without setting a timer: a timer costs more than the rest of the read,
    and reading what is there cannot wait."""
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        return error_response(
            415, "the request body must be JSON, sent with 'Content-Type: application/json'",
            "invalid_request_error",
        )  # fmt: skip
    try:
        if request.content.is_eof():  # it has all come (a small body mostly has): no timer
            return await request.read()
        async with asyncio.timeout(limits.request_body_timeout):
            return await request.read()
    except TimeoutError:
        response = error_response(
            408, f"the request body did not arrive within {limits.request_body_timeout:g}s",
            "request_timeout",
        )  # fmt: skip
        # Answer, then close: aiohttp would otherwise linger reading the rest of the body.
        response.force_close()
        with contextlib.suppress(ConnectionError):
            await write_bounded(request, response, None, limits.client_write_timeout)
        if request.transport is not None:
            request.transport.close()
        return response
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413, f"the request body is over the limit of {limits.max_request_bytes} bytes",
            "request_too_large",
        )  # fmt: skip
    except RequestPayloadError as e:  # e.g. a Content-Encoding the body does not have
        return error_response(
            400,
            f"the request body cannot be read: {str(e).splitlines()[-1].strip()}",
            "invalid_request_error",
        )
