"""A fast fake OpenAI-compatible upstream for load: raw asyncio and llhttp, no framework.

    python bench/loadfake.py PORT [--delay-ms 0] [--chunks 20] [--chunk-interval-ms 10]

``POST`` anything: a body with ``"stream": true`` gets an SSE stream of ``--chunks`` chat
completion chunks, ``--chunk-interval-ms`` apart, then ``data: [DONE]``; any other body gets
one chat completion after ``--delay-ms``. Keep-alive, pipelining-safe, one process, uvloop if
installed. Separate from the proxy's processes so it can be pinned to the load core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

import httptools

import harness

COMPLETION = harness.COMPLETION.encode()  # the same answer nginx gives in the throughput runs
CHUNK = (
    b"data: "
    + json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m1",
            "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}],
        }
    ).encode()
    + b"\n\n"
)
STREAMING = re.compile(rb'"stream"\s*:\s*true')


class Settings:
    delay = 0.0
    chunks = 20
    interval = 0.01


class Fake(asyncio.Protocol):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.body: list[bytes] = []
        self.queue: list[tuple[bool, bool]] = []  # (stream, keep_alive) per request, in order
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body.clear()
        self.queue.append((bool(STREAMING.search(body)), bool(self.parser.should_keep_alive())))
        if not self.busy:
            self.next()

    def next(self) -> None:
        if not self.queue or self.transport is None:
            self.busy = False
            return
        self.busy = True
        stream, keep_alive = self.queue.pop(0)
        loop = asyncio.get_running_loop()
        if stream:
            self.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            self.chunk(self.settings.chunks, keep_alive)
        elif self.settings.delay:
            loop.call_later(self.settings.delay, self.answer, keep_alive)
        else:
            self.answer(keep_alive)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def answer(self, keep_alive: bool) -> None:
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(COMPLETION)).encode()
            + b"\r\n\r\n"
            + COMPLETION
        )
        self.done(keep_alive)

    def chunk(self, left: int, keep_alive: bool) -> None:
        if left == 0:
            done = b"data: [DONE]\n\n"
            self.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            self.done(keep_alive)
            return
        self.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        asyncio.get_running_loop().call_later(
            self.settings.interval, self.chunk, left - 1, keep_alive
        )

    def done(self, keep_alive: bool) -> None:
        if not keep_alive and self.transport is not None:
            self.transport.close()
        self.next()


async def serve(port: int, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Fake(settings), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-interval-ms", type=float, default=10.0)
    args = parser.parse_args()
    settings = Settings()
    settings.delay = args.delay_ms / 1000
    settings.chunks = args.chunks
    settings.interval = args.chunk_interval_ms / 1000
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        asyncio.run(serve(args.port, settings))
    else:
        uvloop.run(serve(args.port, settings))


if __name__ == "__main__":
    main()
