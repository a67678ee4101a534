"""A lean HTTP/1.1 client for the request path: pooled keep-alive connections, one write per
request, responses parsed by llhttp (through httptools), bodies read whole or as they come.

Why not aiohttp's ClientSession, which the probes still use: on the request path it cost about
as much CPU as the whole server side (a ClientTimeout, a request and a response object, a
StreamReader, header multidicts and cookie handling per request). This client does only what
a gateway needs: ``POST`` a body the proxy already holds, read the answer, and tell the breaker
precisely how an attempt failed (:class:`UpstreamError` carries the breaker's
:class:`~sluice.core.ErrorKind`).

Behaviour worth knowing:

- ``Accept-Encoding: identity`` is sent: bodies pass through unchanged and the proxy never has
  to decompress or re-label them.
- A pooled connection the upstream closed while idle is dropped as soon as the close arrives.
  If the close races with a request (the upstream's keep-alive timeout, often 5 s), the request
  fails before a single response byte arrived; it is then sent once more on a new connection,
  as browsers do, and the breaker never hears of it.
- Idle connections are closed after ``idle_timeout`` (15 s, as aiohttp's default).
- Responses buffer at most ``HIGH_WATER`` bytes while streamed before reading pauses.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlsplit

import httptools

from sluice.core import ErrorKind

__all__ = ["Endpoint", "Response", "UpstreamClient", "UpstreamError"]

HIGH_WATER = 256 * 1024


class UpstreamError(Exception):
    """An attempt failed before or while reading the answer; ``kind`` is the breaker's name."""

    def __init__(self, kind: ErrorKind, detail: str, *, before_response: bool = False) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        # Nothing of a response arrived: safe to send again on another connection.
        self.before_response = before_response


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an upstream's base URL points, parsed once."""

    scheme: str
    host: str
    port: int
    prefix: str  # the base URL's path, without a trailing slash
    host_header: str  # the whole "Host: ..." line

    @classmethod
    def parse(cls, base_url: str) -> Endpoint:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"baseURL {base_url!r} is not an http(s) URL with a host")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        ascii_header = header.encode("idna").decode("ascii")
        return cls(parts.scheme, host, port, parts.path.rstrip("/"), f"Host: {ascii_header}")


def request_head(
    endpoint: Endpoint, path: str, headers: list[tuple[str, str]], length: int
) -> bytes:
    """``POST`` request line and headers. A value with a line break is refused (ValueError):
    it would end the header block early (a Secret with a trailing newline does this)."""
    lines = [f"POST {endpoint.prefix}{path} HTTP/1.1", endpoint.host_header]
    for name, value in headers:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} for the upstream contains a line break")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class Response:
    """An upstream's answer: status and headers at once, the body as it arrives."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_headers_ready",
        "_paused",
        "_waiter",
        "_whole",
        "got_bytes",
        "headers",
        "keep_alive",
        "status",
        "until_close",
    )

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names
        self.keep_alive = False
        self.until_close = False  # no length, not chunked: the body ends when the socket does
        self.got_bytes = False
        self._headers_ready: asyncio.Future[None] = loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._whole = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()

    async def read(self, timeout: float) -> bytes:  # noqa: ASYNC109 - a timer, see _wait
        """The whole body; TimeoutError if it has not all come within ``timeout`` seconds."""
        self._whole = True
        self._resume()
        if not self._done and self._error is None:
            deadline = self._headers_ready.get_loop().time() + timeout
            while not self._done and self._error is None:
                await self._wait(deadline)
        if self._error is not None:
            raise self._error
        body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def readany(self, timeout: float) -> bytes:  # noqa: ASYNC109 - see _wait
        """What has arrived since the last call, waiting up to ``timeout`` seconds for something
        (then TimeoutError); b"" at the end of the body."""
        if not self._chunks and not self._done and self._error is None:
            deadline = self._headers_ready.get_loop().time() + timeout
            while not self._chunks and not self._done and self._error is None:
                await self._wait(deadline)
        if not self._chunks:
            if self._error is not None:
                raise self._error
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self._resume()
        return data

    def release(self) -> None:
        """Back to the pool if the answer was read to its end, else the connection closes."""
        conn = self._conn
        if conn.response is not self:
            return
        conn.response = None
        if self._done and self._error is None and self.keep_alive and not self.until_close:
            conn.idle()
        else:
            conn.close()

    async def _wait(self, deadline: float) -> None:
        """Until more arrives or the deadline (TimeoutError). A timer handle is cheaper than
        asyncio.timeout(), which this path would need twice per request."""
        loop = self._headers_ready.get_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._conn.resume_reading()

    # -- from the connection -------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._whole and not self._paused:
            self._paused = True
            self._conn.pause_reading()
        self._wake()

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._done:
            return
        self._error = error
        if not self._headers_ready.done():
            self._headers_ready.set_exception(error)
            self._headers_ready.exception()  # retrieved: nobody may be waiting any more
        self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, parsing what it sends with llhttp."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self._name = b""

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing was asked: not HTTP we can trust
            self.close()
            return
        response.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            response._fail(UpstreamError(ErrorKind.PROTOCOL, f"bad HTTP from the upstream: {e}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.response
        if response is None or response._done:
            return
        if response.until_close and response._headers_ready.done():
            response._complete()  # the end of a body without length
            return
        detail = "the upstream closed the connection"
        if exc is not None:
            detail += f" ({type(exc).__name__}: {exc})" if str(exc) else f" ({type(exc).__name__})"
        before = not response.got_bytes
        answered = response._headers_ready.done()
        kind = ErrorKind.STREAM_CUT if answered else ErrorKind.CONNECT_RESET
        response._fail(UpstreamError(kind, detail, before_response=before))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes | None) -> None:
        response = self.response
        if response is None:
            return
        key = name.decode("latin-1").lower()
        text = (value or b"").decode("latin-1")
        previous = response.headers.get(key)
        response.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response.status = self.parser.get_status_code()
        response.keep_alive = bool(self.parser.should_keep_alive())
        headers = response.headers
        response.until_close = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and response.status not in (204, 304)
        )
        if not response._headers_ready.done():
            response._headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response._complete()

    # -- the pool's side -----------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, response: Response) -> None:
        transport = self.transport
        if transport is None:
            raise RuntimeError("send() before the connection was made")
        self.response = response
        if len(body) < 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))

    def idle(self) -> None:
        self.reused = True
        self.idle_since = time.monotonic()
        self.pool.put(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self.pool.forget(self)


class _Pool:
    def __init__(self, client: UpstreamClient, endpoint: Endpoint) -> None:
        self.client = client
        self.endpoint = endpoint
        self.idle: list[_Connection] = []

    def take(self) -> _Connection | None:
        idle, limit = self.idle, time.monotonic() - self.client.idle_timeout
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.idle_since < limit:
                conn.close()
                continue
            return conn
        return None

    def put(self, conn: _Connection) -> None:
        idle = self.idle
        if len(idle) >= self.client.max_idle:
            conn.close()
            return
        idle.append(conn)
        # The oldest is at the bottom: close it once it has idled too long.
        if idle[0].idle_since < time.monotonic() - self.client.idle_timeout:
            idle.pop(0).close()

    def forget(self, conn: _Connection) -> None:
        if conn.response is None and conn in self.idle:
            self.idle.remove(conn)


class UpstreamClient:
    """Pools of keep-alive connections, one per upstream endpoint."""

    def __init__(
        self,
        *,
        idle_timeout: float = 15.0,
        max_idle: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._ssl = ssl_context
        self._pools: dict[Endpoint, _Pool] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def post(
        self,
        endpoint: Endpoint,
        head: bytes,
        body: bytes,
        *,
        connect_timeout: float,
        timeout: float,  # noqa: ASYNC109 - a timer handle, cheaper than asyncio.timeout
    ) -> Response:
        """Send a request (``head`` from :func:`request_head`) and wait up to ``timeout``
        seconds, connecting included, for the answer's status and headers (then
        TimeoutError). Raises :class:`UpstreamError` for everything else."""
        if self._closed:
            raise RuntimeError("the upstream client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pool = self._pools.get(endpoint)
        if pool is None:
            pool = self._pools[endpoint] = _Pool(self, endpoint)
        conn = pool.take()
        if conn is not None:
            try:
                return await self._exchange(loop, conn, head, body, deadline)
            except UpstreamError as e:
                if not e.before_response:
                    raise
                # The upstream closed the idle connection as we used it: once more, anew.
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError()
        conn = await self._connect(endpoint, connect_timeout, left)
        return await self._exchange(loop, conn, head, body, deadline)

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        head: bytes,
        body: bytes,
        deadline: float,
    ) -> Response:
        response = Response(conn, loop)
        conn.send(head, body, response)
        timer = loop.call_at(deadline, _expire, response._headers_ready)
        try:
            await response._headers_ready
        except BaseException:
            conn.response = None
            conn.close()
            raise
        finally:
            timer.cancel()
        return response

    async def _connect(
        self, endpoint: Endpoint, connect_timeout: float, left: float
    ) -> _Connection:
        """A new connection within ``connect_timeout`` (UpstreamError) and ``left``, the
        request's own budget (TimeoutError)."""
        loop = asyncio.get_running_loop()
        pool = self._pools[endpoint]
        tls = endpoint.scheme == "https"
        where = f"{endpoint.host}:{endpoint.port}"
        try:
            async with asyncio.timeout(min(connect_timeout, left)):
                _, conn = await loop.create_connection(
                    lambda: _Connection(pool),
                    endpoint.host,
                    endpoint.port,
                    ssl=self._ssl_context() if tls else None,
                    server_hostname=endpoint.host if tls else None,
                )
        except TimeoutError:
            if left < connect_timeout:
                raise
            raise UpstreamError(
                ErrorKind.CONNECT_TIMEOUT, f"no connection to {where} within {connect_timeout:g}s"
            ) from None
        except socket.gaierror as e:
            raise UpstreamError(ErrorKind.DNS, f"{endpoint.host}: {e.strerror}") from None
        except ssl.SSLError as e:
            raise UpstreamError(ErrorKind.TLS, f"{where}: {e}") from None
        except OSError as e:
            raise UpstreamError(
                ErrorKind.CONNECT_REFUSED, f"{where}: {e.strerror or type(e).__name__}"
            ) from None
        return conn

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for conn in list(pool.idle):
                conn.close()
        self._pools.clear()
