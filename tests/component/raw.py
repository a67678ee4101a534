"""Raw HTTP/1.1 to the proxy under test: what a hand-written (or hostile) client sends."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from tests.component.conftest import Gateway


def address(gateway: Gateway) -> tuple[str, int]:
    server = gateway.client.server
    return str(server.host), int(server.port or 0)


async def exchange(gateway: Gateway, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send ``data`` on a new connection and read until the proxy closes it (or ``wait``)."""
    host, port = address(gateway)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        try:
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    received += chunk
        except TimeoutError:
            pass
        return received
    finally:
        writer.close()
        await writer.wait_closed()


def chat_request(
    *, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None, close: bool = True
) -> bytes:
    payload = json.dumps(
        body or {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def statuses(received: bytes) -> list[int]:
    """The status codes of every response in ``received``, 1xx included, in order."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", received)]
