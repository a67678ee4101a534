"""What the proxy says to clients in its own name, and how it writes to them.

Every error body is OpenAI's shape (``{"error": {"message", "type", "code", ...}}``), built by
:func:`error_response`; every write to a client is bounded in time (:func:`write_bounded`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from sluice.providers.anthropic import to_anthropic_error

__all__ = ["OWN_ERROR", "error_response", "in_client_shape", "write_bounded"]

OWN_ERROR = web.ResponseKey("sluice_own_error", str)  # the proxy's own answer, not an upstream's
_ANTHROPIC_CLIENTS = frozenset({"/v1/messages"})
_KEPT = ("Retry-After", "x-sluice-attempts", "x-sluice-upstream")


def error_response(
    status: int, message: str, kind: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An OpenAI-style error body: ``{"error": {"message", "type", "code", ...}}``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind, **extra}}
    response = web.json_response(body, status=status, headers=headers)
    response[OWN_ERROR] = kind
    return response


def in_client_shape(path: str, response: web.StreamResponse) -> web.StreamResponse:
    """The proxy's own error in the shape of the client's API: Anthropic's for ``/v1/messages``
    (``{"type": "error", "error": {"type", "message"}}``), else as it is (OpenAI's)."""
    if path not in _ANTHROPIC_CLIENTS or type(response) is not web.Response:
        return response
    if OWN_ERROR not in response or not isinstance(response.body, bytes):
        return response
    body = to_anthropic_error(response.body, status=response.status)
    headers = {k: v for k in _KEPT if (v := response.headers.get(k)) is not None}
    return web.json_response(body, status=response.status, headers=headers)


async def write_bounded(
    request: web.Request,
    response: web.StreamResponse,
    chunk: bytes | None,
    timeout: float,  # noqa: ASYNC109 - the bound is the point
) -> None:
    """Write ``chunk`` to the client (None: send the whole prepared-or-not ``response``) within
    ``timeout`` seconds. A client that does not read by then is disconnected:
    ConnectionResetError, as if it had left."""
    try:
        async with asyncio.timeout(timeout):
            if chunk is None:
                await response.prepare(request)
                await response.write_eof()
            else:
                await response.write(chunk)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"the client read nothing for {timeout:g}s") from None
