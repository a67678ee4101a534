"""The request path's HTTP/1.1 client against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from sluice.core import ErrorKind
from sluice.proxy.attempt import usage_tokens
from sluice.proxy.client import (
    HIGH_WATER,
    MAX_ANSWER_BYTES,
    Endpoint,
    UpstreamClient,
    UpstreamError,
    request_head,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[Endpoint, list[int]]]:
    """A raw server; yields its endpoint and a list that grows by one per connection."""
    connections: list[int] = []
    handlers: set[asyncio.Task[None] | None] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        handlers.add(asyncio.current_task())
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Ended below: a cancelled handler task makes asyncio log an error (3.11).
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with listener:
            yield Endpoint.parse(f"http://127.0.0.1:{port}/v1"), connections
    finally:
        # Handlers still waiting end here, not when the loop closes under them.
        running = [task for task in handlers if task is not None and not task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


async def answer_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()


async def post(
    client: UpstreamClient, endpoint: Endpoint, *, wait: float = 2.0, body: bytes = b"{}"
) -> tuple[int, bytes]:
    head = request_head(endpoint, "/chat/completions", [("X-Request-Id", "r1")], len(body))
    async with await client.post(
        endpoint, head, body, connect_timeout=1.0, timeout=wait
    ) as response:
        return response.status, await response.read(2.0)


async def test_connections_are_kept_alive_and_reused() -> None:
    client = UpstreamClient()
    async with server(answer_forever) as (endpoint, connections):
        answers = [await post(client, endpoint) for _ in range(5)]
    await client.close()

    assert answers == [(200, b"{}")] * 5
    assert len(connections) == 1


async def test_the_request_has_the_path_host_headers_and_body() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()

    client = UpstreamClient()
    async with server(record) as (endpoint, _):
        await post(client, endpoint, body=b'{"model":"m1"}')
    await client.close()

    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"Host: 127.0.0.1:{endpoint.port}".encode() in lines
    assert b"X-Request-Id: r1" in lines
    assert b"Content-Length: 14" in lines
    assert body == b'{"model":"m1"}'


async def test_a_connection_the_upstream_closed_while_idle_is_not_used() -> None:
    async def one_answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()

    client = UpstreamClient()
    async with server(one_answer_then_close) as (endpoint, connections):
        first = await post(client, endpoint)
        await asyncio.sleep(0.05)  # the close arrives while the connection idles
        second = await post(client, endpoint)
    await client.close()

    assert (first, second) == ((200, b"{}"), (200, b"{}"))
    assert len(connections) == 2


async def test_a_reused_connection_closed_as_the_request_went_out_is_retried_once() -> None:
    """The keep-alive race: the upstream closes an idle connection just as a request is sent
    on it. Nothing was answered, so the request goes again on a new connection."""
    served = 0

    async def answer_once_then_drop_the_next(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(OK)
        await writer.drain()
        await read_request(reader)  # the second request on this connection: dropped unanswered

    client = UpstreamClient()
    async with server(answer_once_then_drop_the_next) as (endpoint, connections):
        first = await post(client, endpoint)
        second = await post(client, endpoint)
    await client.close()

    assert (first, second) == ((200, b"{}"), (200, b"{}"))
    assert len(connections) == 2
    assert served == 2


async def test_a_new_connection_closed_unanswered_is_a_reset_not_retried() -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    client = UpstreamClient()
    async with server(drop) as (endpoint, connections):
        with pytest.raises(UpstreamError) as caught:
            await post(client, endpoint)
    await client.close()

    assert caught.value.kind is ErrorKind.CONNECT_RESET
    assert len(connections) == 1


async def test_a_body_cut_short_is_a_stream_cut_and_the_connection_is_not_reused() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await writer.drain()

    client = UpstreamClient()
    async with server(short) as (endpoint, _):
        with pytest.raises(UpstreamError) as caught:
            await post(client, endpoint)
    await client.close()

    assert caught.value.kind is ErrorKind.STREAM_CUT
    assert not caught.value.before_response


async def test_chunked_and_until_close_bodies_are_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"2\r\nde\r\n0\r\n\r\n")
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    client = UpstreamClient()
    async with server(chunked) as (endpoint, _):
        assert await post(client, endpoint) == (200, b"abcde")
    async with server(until_close) as (endpoint, _):
        assert await post(client, endpoint) == (200, b"all of it")
    await client.close()


async def test_headers_are_lower_case_and_repeated_ones_joined() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-A: 1\r\nX-A: 2\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        await writer.drain()

    client = UpstreamClient()
    async with server(answer) as (endpoint, _):
        head = request_head(endpoint, "/x", [], 0)
        async with await client.post(endpoint, head, b"", connect_timeout=1, timeout=2) as response:
            await response.read(1)
    await client.close()

    assert response.status == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["x-a"] == "1, 2"


async def test_not_http_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    client = UpstreamClient()
    async with server(garbage) as (endpoint, _):
        with pytest.raises(UpstreamError) as caught:
            await post(client, endpoint)
    await client.close()

    assert caught.value.kind is ErrorKind.PROTOCOL


async def test_nothing_listening_is_connect_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = UpstreamClient()

    with pytest.raises(UpstreamError) as caught:
        await post(client, Endpoint.parse(f"http://127.0.0.1:{port}"))

    assert caught.value.kind is ErrorKind.CONNECT_REFUSED
    assert str(port) in caught.value.detail


async def test_no_headers_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.5)
        writer.write(OK)
        await writer.drain()
        await answer_forever(reader, writer)

    client = UpstreamClient()
    async with server(slow) as (endpoint, connections):
        with pytest.raises(TimeoutError):
            await post(client, endpoint, wait=0.1)
        await asyncio.sleep(0.6)
        late = await post(client, endpoint)
    await client.close()

    assert late == (200, b"{}")
    assert len(connections) == 2  # the late answer was never taken for the next request's


async def test_a_stream_is_read_as_it_comes_and_a_silent_one_times_out() -> None:
    gate = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata 1\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"6\r\ndata 2\r\n0\r\n\r\n")
        await writer.drain()

    client = UpstreamClient()
    async with server(stream) as (endpoint, _):
        head = request_head(endpoint, "/x", [], 0)
        async with await client.post(endpoint, head, b"", connect_timeout=1, timeout=2) as response:
            first = await response.readany(1)
            with pytest.raises(TimeoutError):
                await response.readany(0.05)
            gate.set()
            second = await response.readany(1)
            end = await response.readany(1)
    await client.close()

    assert (first, second, end) == (b"data 1", b"data 2", b"")


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_everything() -> None:
    chunk = b"x" * 65536
    total = HIGH_WATER * 8

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    client = UpstreamClient()
    async with server(firehose) as (endpoint, _):
        head = request_head(endpoint, "/x", [], 0)
        async with await client.post(endpoint, head, b"", connect_timeout=1, timeout=2) as response:
            await asyncio.sleep(0.2)  # the upstream writes as fast as it may
            buffered = response._buffered
            received = 0
            while data := await response.readany(2):
                received += len(data)

    await client.close()
    assert buffered < HIGH_WATER * 2
    assert received == total


# -- informational answers -------------------------------------------------------------------


async def test_informational_answers_are_skipped_for_the_final_one() -> None:
    """100, 102 and 103 are not the answer: their headers are dropped and the final status
    line that follows on the same connection is the one that counts."""

    async def hints_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(
                b"HTTP/1.1 102 Processing\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            )
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(OK)
            await writer.drain()

    client = UpstreamClient()
    async with server(hints_first) as (endpoint, connections):
        head = request_head(endpoint, "/x", [], 0)
        async with await client.post(endpoint, head, b"", connect_timeout=1, timeout=2) as response:
            body = await response.read(1)
        again = await post(client, endpoint)
    await client.close()

    assert (response.status, body) == (200, b"{}")
    assert "link" not in response.headers
    assert response.headers["content-type"] == "application/json"
    assert again == (200, b"{}")
    assert len(connections) == 1  # the connection stayed good for the next request


async def test_an_unasked_protocol_switch_is_a_protocol_error_and_the_connection_closes() -> None:
    closed = asyncio.Event()

    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"\r\n\x81\x05hello"
        )
        await writer.drain()
        await reader.read()  # until the client closes
        closed.set()

    loop = asyncio.get_running_loop()
    crashes: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: crashes.append(context))
    client = UpstreamClient()
    try:
        async with server(switch) as (endpoint, _):
            with pytest.raises(UpstreamError) as caught:
                await post(client, endpoint)
            await asyncio.wait_for(closed.wait(), 2)
    finally:
        loop.set_exception_handler(None)
        await client.close()

    assert caught.value.kind is ErrorKind.PROTOCOL
    assert caught.value.detail == "the upstream switched protocols (101) unasked"
    assert crashes == []


# -- what comes after an answer ----------------------------------------------------------------


async def test_bytes_after_a_complete_answer_never_join_it_and_the_connection_is_dropped() -> None:
    async def two_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            OK + b"HTTP/1.1 500 Oops\r\nContent-Type: text/html\r\nX-Smuggled: 1\r\n"
            b"Content-Length: 5\r\n\r\nabcde"
        )
        await writer.drain()
        await answer_forever(reader, writer)

    client = UpstreamClient()
    async with server(two_answers) as (endpoint, connections):
        head = request_head(endpoint, "/x", [], 0)
        async with await client.post(endpoint, head, b"", connect_timeout=1, timeout=2) as response:
            body = await response.read(1)
        second = await post(client, endpoint)
    await client.close()

    assert (response.status, body) == (200, b"{}")
    assert response.headers["content-type"] == "application/json"
    assert "x-smuggled" not in response.headers
    assert second == (200, b"{}")
    assert len(connections) == 2  # the first connection was not trusted again


async def test_a_reset_during_a_body_without_length_is_a_stream_cut() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"partial')
        await writer.drain()
        await asyncio.sleep(0.1)  # the client has the bytes before the reset
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN

    client = UpstreamClient()
    async with server(reset) as (endpoint, _):
        with pytest.raises(UpstreamError) as caught:
            await post(client, endpoint)
    await client.close()

    assert caught.value.kind is ErrorKind.STREAM_CUT
    assert not caught.value.before_response


# -- the size of an answer read whole ---------------------------------------------------------


def test_answers_read_whole_are_limited_to_64_mib_by_default() -> None:
    assert MAX_ANSWER_BYTES == 64 * 1024 * 1024
    assert UpstreamClient().max_answer_bytes == MAX_ANSWER_BYTES


async def test_a_declared_length_over_the_limit_fails_at_once() -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)  # the body never comes: the answer must not wait for it

    client = UpstreamClient(max_answer_bytes=1000)
    async with server(huge) as (endpoint, _):
        with pytest.raises(UpstreamError) as caught:
            await post(client, endpoint, wait=3)
    await client.close()

    assert caught.value.kind is ErrorKind.ANSWER_TOO_LARGE
    assert caught.value.detail == "the upstream's answer is over the proxy's limit of 1000 bytes"


async def test_a_chunked_answer_over_the_limit_stops_being_buffered() -> None:
    sent = 0
    stopped = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
                await writer.drain()
                sent += 4096
                await asyncio.sleep(0)
        except ConnectionError:
            stopped.set()
            raise

    client = UpstreamClient(max_answer_bytes=64 * 1024)
    async with server(endless) as (endpoint, _):
        head = request_head(endpoint, "/x", [], 0)
        response = await client.post(endpoint, head, b"", connect_timeout=1, timeout=2)
        with pytest.raises(UpstreamError) as caught:
            await response.read(5)
        buffered = response._buffered, len(response._chunks)
        await asyncio.wait_for(stopped.wait(), 5)  # the proxy closed the connection
        response.release()
    await client.close()

    assert caught.value.kind is ErrorKind.ANSWER_TOO_LARGE
    assert buffered == (0, 0)  # what had come was dropped


async def test_a_streamed_answer_is_not_limited_by_the_size_for_whole_answers() -> None:
    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    client = UpstreamClient(max_answer_bytes=1000)
    async with server(stream) as (endpoint, _):
        head = request_head(endpoint, "/x", [], 0)
        async with await client.post(endpoint, head, b"", connect_timeout=1, timeout=2) as response:
            received = 0
            while data := await response.readany(2):
                received += len(data)
    await client.close()

    assert received == 10 * 1024


# -- the proxy's own trouble -------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_the_proxys_own_shortage_is_not_the_upstreams_fault(
    code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def exhausted(*_: object, **__: object) -> None:
        raise OSError(code, "no resources")

    monkeypatch.setattr(asyncio.get_running_loop(), "create_connection", exhausted)
    client = UpstreamClient()

    with pytest.raises(UpstreamError) as caught:
        await post(client, Endpoint.parse("http://127.0.0.1:9"))

    assert caught.value.kind is ErrorKind.LOCAL


# -- idle connections --------------------------------------------------------------------------


async def test_idle_connections_are_closed_after_the_idle_timeout_without_a_new_request() -> None:
    closed = asyncio.Event()

    async def answer_until_closed(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        assert await reader.read() == b""  # the proxy closed it
        closed.set()

    client = UpstreamClient(idle_timeout=0.1)
    async with server(answer_until_closed) as (endpoint, _):
        await post(client, endpoint)
        assert len(client._pools[endpoint].idle) == 1
        await asyncio.wait_for(closed.wait(), 2)
        assert client._pools[endpoint].idle == []
    await client.close()


async def test_the_reaper_is_disarmed_on_close() -> None:
    client = UpstreamClient(idle_timeout=60)
    async with server(answer_forever) as (endpoint, _):
        await post(client, endpoint)
        reaper = client._reaper
        assert reaper is not None
        await client.close()

    assert reaper.cancelled()
    assert client._reaper is None


async def test_prune_closes_the_pools_of_upstreams_no_longer_routed_to() -> None:
    dropped: asyncio.Queue[None] = asyncio.Queue()

    async def answer_until_closed(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                dropped.put_nowait(None)
                raise
            writer.write(OK)
            await writer.drain()

    client = UpstreamClient()
    async with (
        server(answer_forever) as (kept, kept_connections),
        server(answer_until_closed) as (gone, gone_connections),
    ):
        await post(client, kept)
        head = request_head(gone, "/x", [], 0)
        in_flight = await client.post(gone, head, b"", connect_timeout=1, timeout=2)
        await post(client, gone)  # a second connection, idle now
        assert len(gone_connections) == 2

        client.prune([kept])

        await asyncio.wait_for(dropped.get(), 2)  # the idle one closed at once
        assert set(client._pools) == {kept}
        assert await in_flight.read(1) == b"{}"
        in_flight.release()  # an answer read after the prune: closed, not pooled
        await asyncio.wait_for(dropped.get(), 2)
        assert await post(client, kept) == (200, b"{}")
    await client.close()

    assert len(kept_connections) == 1


def test_a_header_with_a_line_break_is_refused() -> None:
    endpoint = Endpoint.parse("https://api.openai.com/v1")

    with pytest.raises(ValueError, match="Authorization"):
        request_head(endpoint, "/chat/completions", [("Authorization", "Bearer k\n")], 0)


@pytest.mark.parametrize(
    ("url", "host", "port", "prefix", "header"),
    [
        ("https://api.openai.com/v1", "api.openai.com", 443, "/v1", "Host: api.openai.com"),
        ("http://vllm:8000/v1/", "vllm", 8000, "/v1", "Host: vllm:8000"),
        ("http://[::1]:9000", "::1", 9000, "", "Host: [::1]:9000"),
    ],
)
def test_endpoints_parse_from_base_urls(
    url: str, host: str, port: int, prefix: str, header: str
) -> None:
    endpoint = Endpoint.parse(url)

    assert (endpoint.host, endpoint.port, endpoint.prefix, endpoint.host_header) == (
        host,
        port,
        prefix,
        header,
    )


def test_a_base_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        Endpoint.parse("ftp://x")


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (b'{"usage": {"prompt_tokens": 12, "completion_tokens": 3}}', {"input": 12, "output": 3}),
        (b'{"usage":{"completion_tokens":3,"prompt_tokens":12}}', {"input": 12, "output": 3}),
        (b'{"usage": {"prompt_tokens": 7, "total_tokens": 7}}', {"input": 7, "output": None}),
        (b'{"choices": []}', None),
        # A count of thousands of digits: int() would raise (and it was a 500).
        (b'{"usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}", {"input": None, "output": None}),
    ],
)
def test_token_usage_is_read_from_the_tail_of_the_body(
    body: bytes, tokens: dict[str, int | None] | None
) -> None:
    assert usage_tokens(body) == tokens
