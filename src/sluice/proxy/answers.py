"""What the proxy says to clients in its own name, and how it writes to them.

Every error body is OpenAI's shape (``{"error": {"message", "type", "code", ...}}``), built by
:func:`error_response`; every write to a client is bounded in time (:func:`write_bounded`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

__all__ = ["error_response", "write_bounded"]


def error_response(
    status: int, message: str, kind: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An OpenAI-style error body: ``{"error": {"message", "type", "code", ...}}``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind, **extra}}
    return web.json_response(body, status=status, headers=headers)


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
