"""What every fake's streams share: the stream steering headers, and server-sent events.

A stream sends its content in pieces ("chunks": text deltas, or pieces of a tool call's JSON);
the steering counts those pieces, whatever the provider wraps them in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["StreamSteering", "event", "open_stream", "split"]


@dataclass(frozen=True)
class StreamSteering:
    """``x-fake-chunks``, ``x-fake-chunk-delay``, ``x-fake-stall-after``, ``x-fake-cut-after``
    and ``x-fake-stream-error`` as one fake reads them for one request."""

    chunks: int
    pause: float
    stall_after: int | None
    cut_after: int | None
    error_after: int | None

    @classmethod
    def read(cls, steer: Callable[[str], str | None]) -> StreamSteering:
        def number(name: str) -> int | None:
            value = steer(name)
            return None if value is None else int(value)

        return cls(
            chunks=int(steer("x-fake-chunks") or 3),
            pause=float(steer("x-fake-chunk-delay") or 0),
            stall_after=number("x-fake-stall-after"),
            cut_after=number("x-fake-cut-after"),
            error_after=number("x-fake-stream-error"),
        )

    async def before(self, request: web.Request, index: int) -> str | None:
        """Called before piece ``index`` is sent: stalls for good at ``stall_after``; returns
        ``"cut"`` (the connection is gone) at ``cut_after``, ``"error"`` (send the provider's
        error event and end) at ``error_after``, else None."""
        if self.stall_after is not None and index == self.stall_after:
            await asyncio.sleep(3600)
        if self.cut_after is not None and index == self.cut_after:
            if request.transport is not None:
                request.transport.abort()
            return "cut"
        if self.error_after is not None and index == self.error_after:
            return "error"
        return None

    def error_at_end(self, pieces: int) -> bool:
        """An error asked for after more pieces than there are comes after the last one."""
        return self.error_after is not None and self.error_after >= pieces


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


def event(name: str | None, data: Any) -> bytes:
    """One server-sent event: ``event: <name>`` (when named) and ``data: <json>``."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {payload}\n\n".encode()


def split(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` consecutive parts (the last ones empty when it is short)."""
    pieces = max(pieces, 1)
    size = -(-len(text) // pieces) or 1
    return [text[i * size : (i + 1) * size] for i in range(pieces)]
