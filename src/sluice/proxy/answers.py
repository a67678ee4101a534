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
    ConnectionResetError, as if it had left. A write that cannot wait (:func:`_cannot_wait`)
    goes without the timer, which costs more than the rest of a small write."""
    if _cannot_wait(request, response, chunk):
        await _write(request, response, chunk)
        return
    try:
        async with asyncio.timeout(timeout):
            await _write(request, response, chunk)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"the client read nothing for {timeout:g}s") from None


async def _write(request: web.Request, response: web.StreamResponse, chunk: bytes | None) -> None:
    if chunk is None:
        await response.prepare(request)
        await response.write_eof()
    else:
        await response.write(chunk)


# What a write adds to the bytes it is given, at most: a chunk's size line and end; a whole
# answer's status line and the headers aiohttp adds (Date, Server, Content-Length, ...).
_FRAMING = 64
_HEAD_ROOM = 1024


def _cannot_wait(request: web.Request, response: web.StreamResponse, chunk: bytes | None) -> bool:
    """The write stays under the transport's high-water mark, so the transport takes it
    without pausing the connection, and aiohttp's drain (its only wait, with an
    on_response_prepare handler's) returns at once. An answer whose size is not known beforehand
    (a body that is not bytes), or a compressed one (its compressor may run in a thread), may
    wait."""
    transport = request.transport
    if transport is None or request.protocol.writing_paused or response.compression:
        return False
    if chunk is not None:
        size = len(chunk) + _FRAMING
    elif type(response) is not web.Response:
        if not response.prepared:
            return False
        size = _FRAMING  # a stream's end: its chunks went as they came
    elif isinstance(body := response.body, bytes):
        if request.app.on_response_prepare:
            return False
        # A header's characters take at most 4 bytes each in UTF-8, and ": " and CRLF.
        headers = response.headers
        head = sum(map(len, headers.keys())) + sum(map(len, headers.values()))
        size = len(body) + 4 * head + 4 * len(headers) + _HEAD_ROOM
    else:
        return False
    return transport.get_write_buffer_size() + size <= transport.get_write_buffer_limits()[1]
