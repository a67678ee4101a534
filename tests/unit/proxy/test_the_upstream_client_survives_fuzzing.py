"""Property tests of the upstream client's answer parsing: generated answers, split anyhow
across reads, cut at any byte, ended by a clean close, a reset or not at all.

A fake transport drives ``_Connection`` directly (no sockets: fast and deterministic). The
oracle knows what each generated answer must come to: a well-formed one is read back exactly
(status, headers, body), a malformed one ends in UpstreamError (TimeoutError only on a
connection left open), and nothing else ever escapes.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.core import ErrorKind
from sluice.proxy.client import (
    MAX_HEAD_BYTES,
    Endpoint,
    Response,
    UpstreamClient,
    UpstreamError,
    _Connection,
    _expire,
    _Pool,
    request_head,
)

ENDPOINT = Endpoint.parse("http://upstream.test/v1")
HEAD = request_head(ENDPOINT, "/chat/completions", [], 2)
LIMIT = 4096  # max_answer_bytes of the fuzzed client: some generated bodies are over it
PATIENCE = 5.0  # never reached: an open connection's silence is simulated, see FakeTransport

FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class End(enum.Enum):
    EOF = "a clean close"
    RESET = "a reset"
    OPEN = "left open"


class FakeTransport(asyncio.Transport):
    """Delivers scripted bytes, one piece per loop iteration once the request is written,
    honouring pause_reading, then ends as told. Left open, it then stands for time passing
    with nothing arriving: whatever the client waits for expires at once (what its timer
    would do, only sooner)."""

    def __init__(self, conn: _Connection, pieces: list[bytes], end: End) -> None:
        super().__init__()
        self.conn = conn
        self.pieces = deque(pieces)
        self.end = end
        self.loop = asyncio.get_running_loop()
        self.paused = False
        self.closing = False
        self.started = False
        self.stopped = False
        self.delivered = asyncio.Event()  # everything sent, or the client closed first
        self.crashes: list[BaseException] = []

    # -- what _Connection uses -----------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._start()

    def writelines(self, list_of_data: object) -> None:
        self._start()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.delivered.set()
            self.loop.call_soon(self._guarded, self.conn.connection_lost, None)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self.loop.call_soon(self._step)

    # -- the script ----------------------------------------------------------------------------

    def _start(self) -> None:
        if not self.started:
            self.started = True
            self.loop.call_soon(self._step)

    def _guarded(self, callback: object, *args: object) -> None:
        try:
            callback(*args)  # type: ignore[operator]
        except BaseException as e:  # a crash is what the test looks for
            self.crashes.append(e)

    def _step(self) -> None:
        if self.closing or self.paused:
            return
        if self.pieces:
            self._guarded(self.conn.data_received, self.pieces.popleft())
            self.loop.call_soon(self._step)
            return
        self.delivered.set()
        if self.end is End.OPEN:
            self.loop.call_soon(self._silence)
            return
        self.closing = True
        if self.end is End.EOF:
            self._guarded(self.conn.eof_received)
            self._guarded(self.conn.connection_lost, None)
        else:
            reset = ConnectionResetError(104, "Connection reset by peer")
            self._guarded(self.conn.connection_lost, reset)

    def _silence(self) -> None:
        if self.stopped or self.closing:
            return
        response = self.conn.response
        if response is not None:
            _expire(response._headers_ready)
            if response._waiter is not None:
                _expire(response._waiter)
        self.loop.call_soon(self._silence)


@dataclass
class Result:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    error: UpstreamError | TimeoutError | None = None
    pooled: bool = False


async def _exchange(pieces: list[bytes], end: End, *, stream: bool) -> Result:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    client = UpstreamClient(max_answer_bytes=LIMIT)
    pool = client._pools[ENDPOINT] = _Pool(client, ENDPOINT)
    conn = _Connection(pool)
    transport = FakeTransport(conn, pieces, end)
    conn.connection_made(transport)
    result = Result()
    response: Response | None = None
    try:
        response = await client._exchange(loop, conn, HEAD, b"{}", loop.time() + PATIENCE)
        result.status, result.headers = response.status, response.headers
        if stream:
            parts = []
            while part := await response.readany(PATIENCE):
                parts.append(part)
            result.body = b"".join(parts)
        else:
            result.body = await response.read(PATIENCE)
    except (UpstreamError, TimeoutError) as e:  # anything else escapes: the test fails
        result.error = e
    finally:
        if response is not None:
            response.release()
    await asyncio.wait_for(transport.delivered.wait(), PATIENCE)
    for _ in range(3):  # a close the client asked for arrives on the next iterations
        await asyncio.sleep(0)
    transport.stopped = True
    result.pooled = conn in pool.idle
    await client.close()
    assert transport.crashes == []
    assert reported == []
    return result


def run(pieces: list[bytes], end: End, *, stream: bool = False) -> Result:
    return asyncio.run(_exchange(pieces, end, stream=stream))


def split(data: bytes, draw: st.DrawFn) -> list[bytes]:
    """The bytes as some reads would bring them: whole, a byte at a time, or cut anywhere."""
    how = draw(st.sampled_from(["whole", "bytes", "random", "random"]))
    if how == "whole" or len(data) < 2:
        return [data] if data else []
    if how == "bytes" and len(data) <= 1500:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# -- generated answers ---------------------------------------------------------------------

TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
# Names llhttp gives a meaning to, or the informational answers use: never random.
RESERVED = {"content-length", "transfer-encoding", "connection", "proxy-connection", "upgrade",
            "keep-alive", "link"}  # fmt: skip
NAMES = st.text(TCHAR, min_size=1, max_size=12).filter(lambda n: n.lower() not in RESERVED)
# Visible ASCII and obs-text (0x80-0xFF, which llhttp allows); DEL is refused.
VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0xFF).filter(lambda c: c != "\x7f")
VALUES = st.one_of(
    st.text(VALUE_CHARS | st.sampled_from(" \t"), max_size=40).map(lambda v: v.strip(" \t")),
    st.integers(10_000, 200_000).map(lambda n: "v" * n),  # huge, yet under MAX_HEAD_BYTES
)
REASONS = st.sampled_from(["OK", "", "Whatever It Is", "\xe9t\xe9", "Too Many Requests"])
PATTERN = bytes(range(256)) * 32  # 8 KiB


def bodies(max_size: int) -> st.SearchStrategy[bytes]:
    sizes = st.integers(0, max_size) | st.integers(LIMIT - 64, LIMIT + 64)  # around the limit
    return st.one_of(
        st.binary(max_size=300),
        sizes.filter(lambda n: n <= max_size).map(
            lambda n: (PATTERN * (1 + n // len(PATTERN)))[:n]
        ),
    )


@dataclass
class Answer:
    """What the upstream sends, and what the client must make of it."""

    data: bytes = b""
    head_end: int = 0  # where the final status line and headers are complete
    end: int | None = None  # where the final answer is complete (None: at the close only)
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    segments: list[tuple[int, int]] = field(default_factory=list)  # body bytes: offset, length
    keep_alive: bool = False
    junk: bool = False  # bytes after the complete answer

    def body_at(self, offset: int) -> bytes:
        """The body bytes among the first ``offset`` bytes sent."""
        return b"".join(
            self.data[start : min(start + length, offset)]
            for start, length in self.segments
            if offset > start
        )


def _lines(status_line: str, headers: list[tuple[str, str]]) -> bytes:
    return "".join([f"{status_line}\r\n", *(f"{n}: {v}\r\n" for n, v in headers), "\r\n"]).encode(
        "latin-1"
    )


@st.composite
def informational(draw: st.DrawFn) -> bytes:
    """100 Continue, 102 Processing, 103 Early Hints and other 1xx, before the answer."""
    out = b""
    for status in draw(st.lists(st.integers(100, 199).filter(lambda s: s != 101), max_size=3)):
        links = draw(st.lists(st.just("</style.css>; rel=preload"), max_size=2))
        out += _lines(f"HTTP/1.1 {status} {draw(REASONS)}", [("Link", v) for v in links])
    return out


def _chunked(body: bytes, draw: st.DrawFn, start: int) -> tuple[bytes, list[tuple[int, int]]]:
    """``body`` in chunks of random sizes (hex in either case, leading zeros, extensions),
    the last chunk and maybe trailers; the offsets of the data, ``start`` being the first."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=6))))
    bounds = [0, *[c for c in cuts if c < len(body)], len(body)] if body else [0]
    out, segments = b"", []
    for a, b in itertools.pairwise(bounds):
        size = format(b - a, draw(st.sampled_from(["x", "X"]))).zfill(draw(st.integers(1, 4)))
        ext = draw(st.sampled_from(["", ";a=b", ";x", ';q="v"']))
        out += f"{size}{ext}\r\n".encode()
        segments.append((start + len(out), b - a))
        out += body[a:b] + b"\r\n"
    trailers = draw(st.lists(st.tuples(NAMES, st.just("t")), max_size=2))
    last = "0" * draw(st.integers(1, 3)) + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in trailers)
    return out + last.encode() + b"\r\n", segments


JUNK = st.one_of(
    st.just(b"HTTP/1.1 500 Oops\r\nX-Smuggled: 1\r\nContent-Length: 3\r\n\r\nbad"),
    st.just(b"HTTP/1.1 200 OK\r\n"),
    st.binary(min_size=1, max_size=40).filter(lambda b: b[:1] not in (b"\r", b"\n")),
)


@st.composite
def answers(draw: st.DrawFn, *, body_size: int = 6000) -> Answer:
    """A well-formed answer, maybe after informational ones, maybe with bytes after it."""
    prelude = draw(informational())
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    status = draw(
        st.sampled_from([200, 201, 204, 304, 400, 404, 429, 500, 503]) | st.integers(200, 599)
    )
    framing = (
        "none" if status in (204, 304) else draw(st.sampled_from(["length", "chunked", "close"]))
    )
    connection = draw(st.sampled_from([None, None, "close", "keep-alive"]))
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=5))
    body = b"" if framing == "none" else draw(bodies(body_size))
    if framing == "length":
        headers.insert(draw(st.integers(0, len(headers))), ("Content-Length", str(len(body))))
    elif framing == "chunked":
        coding = draw(st.sampled_from(["chunked", "Chunked", "CHUNKED"]))
        headers.insert(draw(st.integers(0, len(headers))), ("Transfer-Encoding", coding))
    if connection is not None:
        headers.insert(draw(st.integers(0, len(headers))), ("Connection", connection))

    answer = Answer(status=status)
    for name, value in headers:
        key = name.lower()
        previous = answer.headers.get(key)
        answer.headers[key] = value if previous is None else f"{previous}, {value}"
    head = prelude + _lines(f"{version} {status} {draw(REASONS)}", headers)
    answer.head_end = len(head)
    if framing == "chunked":
        encoded, answer.segments = _chunked(body, draw, len(head))
    else:
        encoded = body
        answer.segments = [(len(head), len(body))]
    answer.data = head + encoded
    answer.body = body
    if framing != "close":
        answer.end = len(answer.data)
        if draw(st.booleans()):
            answer.data += draw(JUNK)
            answer.junk = True
    persistent = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    answer.keep_alive = persistent and framing != "close"
    return answer


def _expect_error(result: Result, kind: ErrorKind) -> UpstreamError:
    assert isinstance(result.error, UpstreamError), result
    assert result.error.kind is kind, result.error.detail
    assert not result.pooled
    return result.error


def check(answer: Answer, sent: int, end: End, stream: bool, result: Result) -> None:
    """What the client must have made of the first ``sent`` bytes of ``answer``, then ``end``."""
    headers_in = sent >= answer.head_end
    complete = answer.end is not None and sent >= answer.end
    if not stream and headers_in:
        declared = answer.end is not None and "content-length" in answer.headers
        if (declared and len(answer.body) > LIMIT) or len(answer.body_at(sent)) > LIMIT:
            _expect_error(result, ErrorKind.ANSWER_TOO_LARGE)
            return
    closed_after_headers = answer.end is None and headers_in and end is End.EOF
    if complete or closed_after_headers:
        assert result.error is None, result.error
        assert result.status == answer.status
        assert result.headers == answer.headers
        assert result.body == (answer.body if complete else answer.body_at(sent))
        if end is End.OPEN:
            assert result.pooled is (answer.keep_alive and not answer.junk)
        return
    if end is End.OPEN:
        assert isinstance(result.error, TimeoutError), result
        assert not result.pooled
        return
    kind = ErrorKind.STREAM_CUT if headers_in else ErrorKind.CONNECT_RESET
    error = _expect_error(result, kind)
    assert error.before_response is (sent == 0)


ENDS = st.sampled_from(list(End))


@FUZZ
@given(answers(), ENDS, st.booleans(), st.data())
def test_a_well_formed_answer_is_read_back_exactly_however_it_is_split(
    answer: Answer, end: End, stream: bool, data: st.DataObject
) -> None:
    result = run(split(answer.data, data.draw), end, stream=stream)

    check(answer, len(answer.data), end, stream, result)


@FUZZ
@given(answers(body_size=600), st.sampled_from([End.EOF, End.RESET]), st.booleans(), st.data())
def test_an_answer_cut_at_any_byte_is_an_error_or_what_came(
    answer: Answer, end: End, stream: bool, data: st.DataObject
) -> None:
    sent = data.draw(st.integers(0, len(answer.data)), label="cut at")
    result = run(split(answer.data[:sent], data.draw), end, stream=stream)

    check(answer, sent, end, stream, result)


# -- malformed answers ---------------------------------------------------------------------

# Each is refused by llhttp or by the client as soon as it is seen: a protocol error.
BAD_VERSIONS = ["HTTP/1.2", "HTTP/9.9", "HTTP/11", "HTTX/1.1", "http/1.1", "HTTP/1"]
BAD_STATUSES = ["20", "2000", "abc", "2x0", " 200", "099", "000", "101"]
BAD_CODINGS = [
    "chunked, identity", "identity", "gzip, chunked", "gzip", "chunked, chunked", "chunked,",
    "xchunked", "",
]  # fmt: skip
BAD_LINES = ["X : a", ": a", "X", "X: a\x00b", "X: a\x7f", " X: a", "\tX: a"]
MUTATIONS = [
    "version", "status", "cl+te", "dup-cl", "coding", "bare-lf", "obs-fold", "line",
    "chunk-size", "chunk-crlf", "no-last-chunk", "cl-long",
]  # fmt: skip
BAD_SIZES = ["zz", "-1", "0x10", " 5", "5 ", "", "g", "1" + "0" * 16]


@dataclass
class Malformed:
    data: bytes
    what: str
    incomplete: bool  # well-formed so far, but never complete: a cut, or a timeout if left open


@st.composite
def malformed(draw: st.DrawFn) -> Malformed:  # noqa: PLR0912 - a branch per mutation
    what = draw(st.sampled_from(MUTATIONS))
    prelude = draw(informational())
    version, status, reason = "HTTP/1.1", str(draw(st.sampled_from([200, 400, 500]))), "OK"
    headers = [f"{n}: {v}" for n, v in draw(st.lists(st.tuples(NAMES, VALUES), max_size=3))]
    body = draw(st.binary(min_size=1, max_size=200))
    chunked = what in ("cl+te", "coding", "chunk-size", "chunk-crlf", "no-last-chunk") or (
        what not in ("dup-cl", "cl-long") and draw(st.booleans())
    )

    def anywhere(line: str) -> None:
        headers.insert(draw(st.integers(0, len(headers))), line)

    anywhere("Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}")
    if chunked:
        encoded, _ = _chunked(body, draw, 0)
    else:
        encoded = body

    if what == "version":
        version = draw(st.sampled_from(BAD_VERSIONS))
    elif what == "status":
        status = draw(st.sampled_from(BAD_STATUSES))
    elif what == "cl+te":
        anywhere(f"Content-Length: {len(encoded)}")
    elif what == "dup-cl":
        anywhere(f"Content-Length: {draw(st.sampled_from([len(body), len(body) + 1]))}")
    elif what == "coding":
        headers.remove("Transfer-Encoding: chunked")
        codings = draw(st.sampled_from([*BAD_CODINGS, "twice"]))
        if codings == "twice":
            anywhere("Transfer-Encoding: chunked")
            anywhere("Transfer-Encoding: chunked")
        else:
            anywhere(f"Transfer-Encoding: {codings}")
    elif what == "obs-fold":
        at = draw(st.integers(0, len(headers)))
        headers[at:at] = ["X-Folded: a", draw(st.sampled_from([" b", "\tb", "  b c"]))]
    elif what == "line":
        anywhere(draw(st.sampled_from(BAD_LINES)))
    elif what == "chunk-size":
        lines = encoded.split(b"\r\n")
        lines[0] = draw(st.sampled_from(BAD_SIZES)).encode()  # the first chunk's size
        encoded = b"\r\n".join(lines)
    elif what == "chunk-crlf":
        size = format(len(body), "x").encode()
        after = draw(st.sampled_from([b"", b"\n", b"xx", b"\r"]))
        encoded = size + b"\r\n" + body + after + b"0\r\n\r\n"
    elif what == "no-last-chunk":
        encoded = encoded[: encoded.rindex(b"0\r\n")]
    elif what == "cl-long":
        headers.remove(f"Content-Length: {len(body)}")
        anywhere(f"Content-Length: {len(body) + draw(st.integers(1, 100))}")

    head = f"{version} {status} {reason}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    data = prelude + head.encode("latin-1") + encoded
    if what == "bare-lf":
        ends = [i for i in range(len(prelude), len(data) - 1) if data[i : i + 2] == b"\r\n"]
        ends = [i for i in ends if i < len(prelude) + len(head)]
        at = draw(st.sampled_from(ends))
        data = data[:at] + data[at + 1 :]
    return Malformed(data, what, what in ("no-last-chunk", "cl-long"))


@FUZZ
@given(malformed(), ENDS, st.booleans(), st.data())
def test_a_malformed_answer_is_an_error_never_a_hang_or_a_success(
    answer: Malformed, end: End, stream: bool, data: st.DataObject
) -> None:
    result = run(split(answer.data, data.draw), end, stream=stream)

    assert result.error is not None, (answer.what, result)
    assert not result.pooled
    if answer.incomplete and end is End.OPEN:
        assert isinstance(result.error, TimeoutError)
    elif answer.incomplete:
        assert isinstance(result.error, UpstreamError)
        assert result.error.kind is ErrorKind.STREAM_CUT
    else:
        assert isinstance(result.error, UpstreamError), (answer.what, result.error)
        assert result.error.kind is ErrorKind.PROTOCOL, (answer.what, result.error.detail)


PREFIXES = [
    b"", b"HTTP/1.1 ", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
]  # fmt: skip


@FUZZ
@given(
    st.sampled_from(PREFIXES),
    st.binary(max_size=300),
    ENDS,
    st.booleans(),
    st.data(),
)
def test_arbitrary_bytes_never_escape_as_anything_but_an_upstream_error_or_a_timeout(
    prefix: bytes, noise: bytes, end: End, stream: bool, data: st.DataObject
) -> None:
    result = run(split(prefix + noise, data.draw), end, stream=stream)

    if isinstance(result.error, TimeoutError):
        assert end is End.OPEN  # a close, clean or not, always ends the answer
    if result.error is None:
        assert 200 <= result.status <= 999  # never an informational one, nor below 100


# -- limits that take too many bytes to generate at random ---------------------------------


@pytest.mark.parametrize("end", list(End))
def test_a_status_line_and_headers_over_the_limit_are_a_protocol_error(end: End) -> None:
    """Checked after each read: a head still incomplete past the limit is refused."""
    huge = (
        b"HTTP/1.1 200 OK\r\nX-Huge: "
        + b"v" * 2 * MAX_HEAD_BYTES
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    pieces = [huge[i : i + 65536] for i in range(0, len(huge), 65536)]

    result = run(pieces, end)

    assert isinstance(result.error, UpstreamError)
    assert result.error.kind is ErrorKind.PROTOCOL
    assert "over" in result.error.detail


def test_an_endless_stream_of_informational_answers_is_a_protocol_error() -> None:
    flood = b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_HEAD_BYTES // 25 + 100)
    pieces = [flood[i : i + 65536] for i in range(0, len(flood), 65536)]

    result = run([*pieces, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], End.OPEN)

    assert isinstance(result.error, UpstreamError)
    assert result.error.kind is ErrorKind.PROTOCOL


def test_a_big_streamed_answer_pauses_and_resumes_the_fake_transport_too() -> None:
    body = PATTERN * 100  # 800 KiB, over HIGH_WATER
    data = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]

    result = run(pieces, End.OPEN, stream=True)

    assert result.error is None
    assert result.body == body
    assert result.pooled
