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
- Idle connections are closed after ``idle_timeout`` (15 s, as aiohttp's default) by a timer
  that runs only while some are idle; :meth:`UpstreamClient.prune` closes the pools of upstreams
  no longer routed to.
- Responses buffer at most ``HIGH_WATER`` bytes while streamed before reading pauses. An answer
  read whole (:meth:`Response.read`) may be at most ``max_answer_bytes`` (``MAX_ANSWER_BYTES``,
  64 MiB): a declared length or a body over it fails at once with ``answer_too_large``, and what
  had come is dropped with the connection.
- Informational answers (``100 Continue``, ``102``, ``103 Early Hints``) are skipped: the
  final status line that follows is the answer. ``101 Switching Protocols`` was never asked
  for and is a protocol error, and so is a status below 100, a ``Transfer-Encoding`` other
  than ``chunked`` (the request never offers one), or a status line and headers still not
  complete after ``MAX_HEAD_BYTES`` (1 MiB, checked after each read).
- Anything the upstream sends after a complete answer and before the next request (a second
  answer, stray bytes) is never taken for part of it: the connection is closed, not pooled.
- A body without length or chunking ends at a clean close only; a reset cuts it
  (``stream_cut``).
- Trailers after a chunked body are ignored, never merged into the headers.
- The proxy's own shortage on connect (out of file descriptors, buffers or memory) is
  ``local``, never held against the upstream.
- Every wait has a deadline: :meth:`UpstreamClient.post` its ``timeout`` (connecting
  included), :meth:`Response.read` and :meth:`Response.readany` theirs. Timer handles do it,
  not ``asyncio.timeout()`` (a new connection is the exception), and no task is started.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
import ssl
import time
from collections.abc import Collection
from typing import Self

import httptools

from sluice.core import ErrorKind
from sluice.errors import SluiceError
from sluice.proxy.endpoint import Endpoint

__all__ = ["Endpoint", "Response", "UpstreamClient", "UpstreamError"]

HIGH_WATER = 256 * 1024
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # the default limit for an answer read whole
MAX_HEAD_BYTES = 1024 * 1024  # status line and headers, informational answers included

# The proxy's own shortage, not the upstream's fault.
_LOCAL_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)  # out of descriptors, buffers, memory, or ephemeral ports


class UpstreamError(SluiceError):
    """An attempt failed before or while reading the answer; ``kind`` is the breaker's name."""

    def __init__(self, kind: ErrorKind, detail: str, *, before_response: bool = False) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        # Nothing of a response arrived: safe to send again on another connection.
        self.before_response = before_response


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
        "_limit",
        "_paused",
        "_waiter",
        "_whole",
        "got_bytes",
        "headers",
        "keep_alive",
        "status",
        "until_close",
    )

    def __init__(
        self, conn: _Connection, loop: asyncio.AbstractEventLoop, limit: int = MAX_ANSWER_BYTES
    ) -> None:
        self._conn = conn
        self.status = 0  # 0 until the final status line and headers are in
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
        self._limit = limit

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()

    async def read(self, timeout: float) -> bytes:  # noqa: ASYNC109 - a timer, see _wait
        """The whole body; TimeoutError if it has not all come within ``timeout`` seconds,
        UpstreamError ``answer_too_large`` once it is declared or found over the limit."""
        if not self._whole:
            self._whole = True
            if self._error is None and (self._buffered > self._limit or self._declared_too_long()):
                self._too_large()
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
        if (
            self._done
            and self._error is None
            and self.keep_alive
            and not self.until_close
            and not conn.closed
        ):
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

    def _declared_too_long(self) -> bool:
        length = self.headers.get("content-length")
        if length is None:
            return False
        try:
            return int(length) > self._limit
        except ValueError:  # llhttp checked it already: digits only
            return False

    def _too_large(self) -> None:
        """Over the limit: fail, drop what came, and close rather than read the rest."""
        self._error = UpstreamError(
            ErrorKind.ANSWER_TOO_LARGE,
            f"the upstream's answer is over the proxy's limit of {self._limit} bytes",
        )
        self._chunks.clear()
        self._buffered = 0
        self._conn.abandon(self)
        self._wake()

    # -- from the connection -------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._whole:
            if self._buffered > self._limit:
                self._too_large()
                return
        elif self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.pause_reading()
        self._wake()

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._done or self._error is not None:
            return  # the first word stands
        self._error = error
        if not self._headers_ready.done():
            self._headers_ready.set_exception(error)
            self._headers_ready.exception()  # retrieved: nobody may be waiting any more
        self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, parsing what it sends with llhttp.

    ``response`` holds the connection from the request until it is released; ``parsing`` is
    the same response while the parser may still add to it, None once it is complete or has
    failed. Bytes that arrive with nothing parsing are not HTTP we can trust: the connection
    closes.
    """

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.parsing: Response | None = None
        self.reused = False
        self.idle_since = 0.0
        self.pooled = False  # in pool.idle
        self.closed = False
        self._informational = False  # the parser is in a 1xx answer
        self._head_bytes = 0  # bytes received before the final headers

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        response = self.parsing
        if response is None:  # nothing asked, or the answer is complete: not HTTP we can trust
            self.close()
            return
        response.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(response, "the upstream switched protocols (101) unasked")
            return
        except httptools.HttpParserError as e:
            self._broken(response, f"bad HTTP from the upstream: {e}")
            return
        if response.status == 0 and self.parsing is response:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._broken(
                    response, f"the upstream's status line and headers are over {MAX_HEAD_BYTES}"
                )

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.parsing
        if response is None:  # complete, failed, or nothing asked
            return
        self.parsing = None
        if exc is None and response.until_close and response.status:
            response._complete()  # a clean close ends a body without length
            return
        detail = "the upstream closed the connection"
        if exc is not None:
            detail += f" ({type(exc).__name__}: {exc})" if str(exc) else f" ({type(exc).__name__})"
        before = not response.got_bytes
        kind = ErrorKind.STREAM_CUT if response.status else ErrorKind.CONNECT_RESET
        response._fail(UpstreamError(kind, detail, before_response=before))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.parsing is None:  # a second answer to one request
            self.close()

    def on_header(self, name: bytes, value: bytes | None) -> None:
        response = self.parsing
        if response is None or response.status:  # nothing to add to, or a chunked trailer
            return
        key = name.decode("latin-1").lower()
        text = (value or b"").decode("latin-1")
        previous = response.headers.get(key)
        response.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        response = self.parsing
        if response is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self._broken(response, "the upstream switched protocols (101) unasked")
            elif status < 100:
                self._broken(response, f"invalid HTTP status {status}")
            else:  # 100 Continue, 102 Processing, 103 Early Hints: the answer is still to come
                self._informational = True
                response.headers.clear()
            return
        headers = response.headers
        coding = headers.get("transfer-encoding")
        if coding is not None and coding != "chunked" and coding.strip().lower() != "chunked":
            self._broken(response, f"unsupported Transfer-Encoding {coding!r}")
            return
        response.status = status
        response.keep_alive = bool(self.parser.should_keep_alive())
        response.until_close = (
            coding is None and "content-length" not in headers and status not in (204, 304)
        )
        response._headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing._feed(body)

    def on_message_complete(self) -> None:
        response = self.parsing
        if response is None:
            return
        if self._informational:
            self._informational = False
            return
        self.parsing = None
        response._complete()

    # -- the response's side -------------------------------------------------------------------

    def _broken(self, response: Response, detail: str) -> None:
        response._fail(UpstreamError(ErrorKind.PROTOCOL, detail))
        self.abandon(response)

    def abandon(self, response: Response) -> None:
        """Nothing more of this answer is wanted: stop parsing into it and close."""
        if self.parsing is response:
            self.parsing = None
        self.close()

    # -- the pool's side -----------------------------------------------------------------------

    def send(self, head: bytes, body: bytes, response: Response) -> None:
        transport = self.transport
        if transport is None:
            raise RuntimeError("send() before the connection was made")
        self.response = self.parsing = response
        self._informational = False
        self._head_bytes = 0
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
    """The idle connections to one endpoint, the most recently used last."""

    def __init__(self, client: UpstreamClient, endpoint: Endpoint) -> None:
        self.client = client
        self.endpoint = endpoint
        self.idle: list[_Connection] = []
        self.retired = False  # pruned or the client closed: nothing goes back in

    def take(self) -> _Connection | None:
        idle, limit = self.idle, time.monotonic() - self.client.idle_timeout
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be stale
            conn.pooled = False
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.idle_since < limit:
                conn.close()
                continue
            return conn
        return None

    def put(self, conn: _Connection) -> None:
        idle, client = self.idle, self.client
        if self.retired or len(idle) >= client.max_idle:
            conn.close()
            return
        idle.append(conn)
        conn.pooled = True
        if client._reaper is None:
            client._arm()

    def forget(self, conn: _Connection) -> None:
        if conn.pooled:
            conn.pooled = False
            self.idle.remove(conn)

    def reap(self, limit: float) -> None:
        """Close the connections idle since before ``limit`` (they are the first ones)."""
        idle = self.idle
        stale = 0
        while stale < len(idle) and idle[stale].idle_since < limit:
            stale += 1
        if stale:
            gone = idle[:stale]
            del idle[:stale]
            for conn in gone:
                conn.pooled = False
                conn.close()

    def retire(self) -> None:
        self.retired = True
        gone = self.idle[:]
        self.idle.clear()
        for conn in gone:
            conn.pooled = False
            conn.close()


class UpstreamClient:
    """Pools of keep-alive connections, one per upstream endpoint."""

    def __init__(
        self,
        *,
        idle_timeout: float = 15.0,
        max_idle: int = 1024,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.max_answer_bytes = max_answer_bytes
        self._ssl = ssl_context
        self._pools: dict[Endpoint, _Pool] = {}
        self._closed = False
        self._reaper: asyncio.TimerHandle | None = None  # armed while a connection idles

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
        conn = await self._connect(pool, connect_timeout, left)
        return await self._exchange(loop, conn, head, body, deadline)

    def prune(self, keep: Collection[Endpoint]) -> None:
        """Close the idle connections to every endpoint not in ``keep`` and forget its pool
        (call it when the routing table changes). Answers still being read to such an
        endpoint close their connection when released."""
        for endpoint in [e for e in self._pools if e not in keep]:
            self._pools.pop(endpoint).retire()

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: _Connection,
        head: bytes,
        body: bytes,
        deadline: float,
    ) -> Response:
        response = Response(conn, loop, self.max_answer_bytes)
        conn.send(head, body, response)
        timer = loop.call_at(deadline, _expire, response._headers_ready)
        try:
            await response._headers_ready
        except BaseException:
            conn.response = conn.parsing = None
            conn.close()
            raise
        finally:
            timer.cancel()
        return response

    async def _connect(self, pool: _Pool, connect_timeout: float, left: float) -> _Connection:
        """A new connection within ``connect_timeout`` (UpstreamError) and ``left``, the
        request's own budget (TimeoutError)."""
        loop = asyncio.get_running_loop()
        endpoint = pool.endpoint
        tls = endpoint.scheme == "https"
        where = f"{endpoint.host}:{endpoint.port}"
        try:
            async with asyncio.timeout(min(connect_timeout, left)):  # per connection, not request
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
            reason = e.strerror or type(e).__name__
            if e.errno in _LOCAL_ERRNOS:
                raise UpstreamError(ErrorKind.LOCAL, f"connecting to {where}: {reason}") from None
            raise UpstreamError(ErrorKind.CONNECT_REFUSED, f"{where}: {reason}") from None
        return conn

    # -- idle connections ----------------------------------------------------------------------

    def _arm(self) -> None:
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # released outside the loop: take() still checks the age
            return
        self._reaper = loop.call_later(self.idle_timeout, self._reap)

    def _reap(self) -> None:
        """Close what idled past ``idle_timeout``; again when the oldest left would have.
        At most a few times a second, however many connections there are."""
        self._reaper = None
        now = time.monotonic()
        timeout = self.idle_timeout
        oldest: float | None = None
        for pool in self._pools.values():
            pool.reap(now - timeout)
            if pool.idle and (oldest is None or pool.idle[0].idle_since < oldest):
                oldest = pool.idle[0].idle_since
        if oldest is not None and not self._closed:
            delay = max(oldest + timeout - now, min(timeout / 4, 0.25))
            self._reaper = asyncio.get_running_loop().call_later(delay, self._reap)

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for pool in self._pools.values():
            pool.retire()
        self._pools.clear()
