"""write_bounded: a write that fits goes at once, one that must wait is bounded in time."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from sluice.proxy.answers import write_bounded

BIG = b"x" * (8 * 1024 * 1024)  # far over any transport's high-water mark and socket buffers


@asynccontextmanager
async def serving(body: bytes, outcome: asyncio.Future[str]) -> AsyncIterator[int]:
    """An app answering ``body`` through write_bounded (0.3 s); ``outcome`` says how it went."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.Response(body=body, content_type="application/json")
        try:
            await write_bounded(request, response, None, 0.3)
            outcome.set_result("written")
        except ConnectionResetError as e:
            outcome.set_result(f"reset: {e}")
        return response

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, socket.create_server(("127.0.0.1", 0)))
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def post_and_never_read(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: 2\r\n\r\n{}"
    await asyncio.get_running_loop().sock_sendall(sock, request)
    return sock


async def test_a_small_answer_to_a_client_that_does_not_read_is_written_at_once() -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with serving(b"{}", outcome) as port:
        sock = await post_and_never_read(port)
        try:
            assert await asyncio.wait_for(outcome, 5) == "written"
        finally:
            sock.close()


async def test_a_large_answer_to_a_client_that_does_not_read_is_given_up_in_time() -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with serving(BIG, outcome) as port:
        sock = await post_and_never_read(port)
        try:
            assert await asyncio.wait_for(outcome, 5) == "reset: the client read nothing for 0.3s"
        finally:
            sock.close()
