"""One attempt at one upstream: send, read (whole, or relayed as a stream), record.

:func:`attempt` returns what happened, never raises for anything the upstream does:

- :class:`Answered`: a complete answer for the client (a success, or the client's own 4xx).
- :class:`Streamed`: a stream was committed at its first byte; the request is over (a failure
  after that is recorded and ends the stream with an SSE error event).
- :class:`Failed`: try another candidate; ``reply`` is what the upstream said (a 429, a 5xx),
  if it said anything, or the proxy's own answer when no other upstream would do better
  (``final``: the proxy ran out of file descriptors, the answer was over its size limit).

Every attempt's outcome goes to the breakers, the metrics and the request's log record once
(:class:`_Recorder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from sluice.core import (
    ErrorKind,
    Outcome,
    OutcomeKind,
    classify_error,
    classify_status,
)
from sluice.providers.base import StreamFailure
from sluice.providers.openai import ask_for_usage
from sluice.providers.translation import TranslationError, UpstreamFormatError
from sluice.proxy.answers import write_bounded
from sluice.proxy.breakers import Breakers
from sluice.proxy.client import Response, UpstreamClient, UpstreamError, request_head
from sluice.proxy.codecs import Codec, StreamReader
from sluice.proxy.limits import Limits
from sluice.proxy.load import UpstreamLoad
from sluice.proxy.metrics import ProxyMetrics
from sluice.proxy.picking import Pick
from sluice.proxy.quotas import RateLimits
from sluice.proxy.table import Target
from sluice.proxy.usage import UsageLedger

log = logging.getLogger("sluice.proxy")

__all__ = ["Answered", "Attempt", "Call", "Failed", "Reply", "Result", "Streamed", "attempt"]

# At most 15 digits: a count beyond that is nonsense, and int() of thousands of digits raises.
_USAGE = re.compile(
    rb'"prompt_tokens"\s*:\s*(\d{1,15})\s*,\s*"completion_tokens"\s*:\s*(\d{1,15})\b'
)
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d{1,15})\b')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d{1,15})\b')
# The Responses API's names.
_INPUT_TOKENS = re.compile(rb'"input_tokens"\s*:\s*(\d{1,15})\b')
_OUTPUT_TOKENS = re.compile(rb'"output_tokens"\s*:\s*(\d{1,15})\b')

# Chat streams report usage only when asked (stream_options); the Responses API always does.
_ASKS_FOR_USAGE = frozenset({"/v1/chat/completions", "/v1/completions"})

# Attempts that end in the proxy's own trouble: the client's answer, at once (no failover).
_LOCAL_ANSWERS = {
    ErrorKind.LOCAL: (
        503, "overloaded", "this proxy replica is out of resources (file descriptors or "
        "memory); retry shortly",
    ),
    ErrorKind.ANSWER_TOO_LARGE: (
        502, "answer_too_large", "the upstream's answer is larger than this proxy's limit of "
        "{limit} bytes",
    ),
}  # fmt: skip


def usage_tokens(body: bytes) -> dict[str, int | None] | None:
    """``{"input", "output"}`` token counts from an OpenAI-style body's ``usage`` object, chat's
    or the Responses API's (None without one). It comes last: search from there, rather than
    parse the whole body."""
    start = body.rfind(b'"usage"')
    if start < 0:
        return None
    if both := _USAGE.search(body, start):
        return {"input": int(both.group(1)), "output": int(both.group(2))}
    prompt = _PROMPT_TOKENS.search(body, start) or _INPUT_TOKENS.search(body, start)
    completion = _COMPLETION_TOKENS.search(body, start) or _OUTPUT_TOKENS.search(body, start)
    return {
        "input": int(prompt.group(1)) if prompt else None,
        "output": int(completion.group(1)) if completion else None,
    }


@dataclass(slots=True)
class Attempt:
    """One attempt as the access log (and, in general terms, the client) sees it."""

    upstream: str
    outcome: str = ""
    status: int | None = None
    error: str | None = None
    ms: float = 0.0
    summary: str | None = None  # what a client may be told: no addresses, no upstream text

    def as_dict(self, *, public: bool = False) -> dict[str, Any]:
        """For the access log; ``public``: for the client, without the error's details (an
        upstream's host and port, its own message)."""
        record: dict[str, Any] = {"upstream": self.upstream, "outcome": self.outcome,
                                  "ms": round(self.ms, 1)}  # fmt: skip
        if self.status is not None:
            record["status"] = self.status
        error = self.summary if public else self.error
        if error:
            record["error"] = error
        return record


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete (non-streamed) answer: the upstream's, or the proxy's own."""

    status: int
    body: bytes
    headers: dict[str, str]  # lower-case names


@dataclass(frozen=True, slots=True)
class Answered:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Streamed:
    response: web.StreamResponse


@dataclass(frozen=True, slots=True)
class Failed:
    reply: Reply | None = None  # what the upstream said, if anything
    final: bool = False  # the proxy's own trouble: answer ``reply`` at once
    refused: bool = False  # the request cannot be said to this upstream: ``reply`` is the 400


Result = Answered | Streamed | Failed


@dataclass(slots=True)
class Call:
    """What every attempt of one client request shares."""

    request: web.Request
    body: dict[str, Any]
    raw: bytes  # the body as the client sent it
    stream: bool
    record: dict[str, Any]  # the access log's record of this request
    client: UpstreamClient
    breakers: Breakers
    load: UpstreamLoad
    metrics: ProxyMetrics
    limits: Limits
    clock: Callable[[], float]
    usage: UsageLedger
    rate_limits: RateLimits
    attempts: list[Attempt] = field(default_factory=list)
    cost: float | None = None  # what the answer cost (for x-sluice-cost), once known
    # A stream asks the upstream for its usage; whether the client had asked too.
    usage_asked: bool = field(init=False)
    _upstream_body: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        if self.stream and self.request.path in _ASKS_FOR_USAGE:
            self._upstream_body, self.usage_asked = ask_for_usage(self.body)
        else:
            self._upstream_body, self.usage_asked = self.body, False

    def data_for(self, model: str) -> bytes:
        """The client's bytes as they came, unless the upstream knows the model by another
        name or a stream must ask for its usage."""
        body = self._upstream_body
        if body is self.body and model == body["model"]:
            return self.raw
        return orjson.dumps({**body, "model": model})

    def headers_for(self, target: Target) -> list[tuple[str, str]]:
        """The client headers the upstream may see (FORWARDED, spec.forwardHeaders), then ours."""
        client = self.request.headers
        headers = [(name, value) for name in target.forwarded for value in client.getall(name, ())]
        if target.forwarded_prefixes:
            prefixes = target.forwarded_prefixes
            headers += [(k, v) for k, v in client.items() if k.lower().startswith(prefixes)]
        headers += target.headers
        return headers


async def attempt(call: Call, pick: Pick, per_try: float | None) -> Result:
    """Try ``pick``'s upstream once (``per_try``: the route's cap on its total time)."""
    target = pick.candidate.target
    codec = pick.codec
    recorder = _Recorder(call, pick, per_try)
    call.load.started(target.key)
    try:
        request = _request(call, pick, codec, recorder)
        if isinstance(request, Failed):
            return request
        head, data = request
        try:
            upstream = await call.client.post(
                target.endpoint, head, data, connect_timeout=target.timeouts.connect,
                timeout=recorder.head_timeout(call.stream),
            )  # fmt: skip
        except TimeoutError:
            return recorder.timed_out(before_head=True)
        except UpstreamError as e:
            return recorder.failed(e)
        async with upstream:
            recorder.headers_at = time.perf_counter()
            said = target.provider.rate_limits(upstream.headers, call.clock())
            if said is not None:  # the provider's own count: route away before it says 429
                call.rate_limits.heed(target, said, call.clock())
            if upstream.status >= 300 or not call.stream:
                return await _buffered(call, upstream, recorder, codec)
            return await _streamed(call, upstream, recorder, codec)
    finally:
        call.load.ended(target.key)
        if not recorder.finished:  # a bug, or a cancellation: never the upstream's fault, and
            recorder.finish(_PROXY_FAULT)  # its permit (a HalfOpen trial's slot) goes back


def _request(
    call: Call, pick: Pick, codec: Codec, recorder: _Recorder
) -> tuple[bytes, bytes] | Failed:
    """The request head and body for the upstream, or why there is none."""
    target, model = pick.candidate.target, pick.candidate.model
    try:
        if codec.passes_bytes:
            data = call.data_for(model)
        else:
            data = codec.body(call.body, target, pick.candidate.requested, model)
    except TranslationError as e:  # the client asked what this upstream cannot do
        return recorder.refused(e)
    path = codec.path(target, call.request.path.removeprefix("/v1"), model)
    headers = codec.headers(call.headers_for(target), call.request.headers)
    try:
        return request_head(target.endpoint, path, headers, len(data)), data
    except ValueError as e:  # a header that cannot be sent
        return recorder.failed(UpstreamError(ErrorKind.PROTOCOL, str(e)))


async def _buffered(call: Call, upstream: Response, recorder: _Recorder, codec: Codec) -> Result:
    try:
        body = await upstream.read(recorder.time_left())
    except TimeoutError:
        return recorder.timed_out(before_head=False)
    except UpstreamError as e:
        return recorder.failed(e)
    target, status = recorder.pick.candidate.target, upstream.status
    retry_after = target.provider.retry_after(upstream.headers)
    outcome = classify_status(status, target.policy, retry_after=retry_after, now=time.time())
    if status in _GATEWAY_CREDENTIALS_REFUSED:  # never the client's: its key is not forwarded
        outcome = Outcome(
            OutcomeKind.FAILURE, f"HTTP {status}: the upstream refused the gateway's credentials",
            status=status,
        )  # fmt: skip
    headers = upstream.headers
    if codec.translates:
        try:
            body = codec.answer(status, body, headers, recorder.pick.candidate.model)
        except UpstreamFormatError as e:
            return recorder.failed(UpstreamError(ErrorKind.PROTOCOL, str(e)))
        headers = {**headers, "content-type": "application/json"}
    if outcome.kind is OutcomeKind.SUCCESS:
        _count_tokens(call, recorder, body)
    recorder.finish(outcome, first_byte=recorder.headers_at)
    reply = Reply(status, body, headers)
    if outcome.kind in (OutcomeKind.SUCCESS, OutcomeKind.IGNORED):
        return Answered(reply)
    return Failed(reply)


def _count_tokens(call: Call, recorder: _Recorder, body: bytes) -> None:
    """Token usage (see usage_tokens) into the log record and the metric."""
    tokens = usage_tokens(body)
    if tokens is not None:
        _count(call, recorder, tokens)


def _count(call: Call, recorder: _Recorder, tokens: dict[str, int | None]) -> None:
    """An answer's usage: the log record, the metrics, the ledger, and its cost at the model
    entry's prices (the access log's ``cost``, x-sluice-cost)."""
    candidate = recorder.pick.candidate
    target = candidate.target
    namespace, name = target.key
    metrics = call.metrics
    input_tokens, output_tokens = tokens.get("input") or 0, tokens.get("output") or 0
    model, input_price, output_price = target.priced(candidate.requested, candidate.model)
    cost = (input_tokens * input_price + output_tokens * output_price) / 1_000_000
    call.record["tokens"] = tokens
    call.record["cost"] = call.cost = round(cost, 9)
    recorder.tokens_used = input_tokens + output_tokens
    for kind, count in (("input", input_tokens), ("output", output_tokens)):
        if count:
            metrics.child(metrics.tokens, namespace, name, model, kind).inc(count)
    if cost:
        metrics.child(metrics.cost, namespace, name, model).inc(cost)
    call.usage.tokens(
        target.key, model, input_tokens=input_tokens, output_tokens=output_tokens, cost=cost,
        now=call.clock(),
    )  # fmt: skip


async def _streamed(call: Call, upstream: Response, recorder: _Recorder, codec: Codec) -> Result:
    """Relay a stream. Failed only if it failed before its first byte (nothing was sent, so
    the next candidate may still answer); else it is committed: Streamed."""
    try:
        first = await upstream.readany(recorder.first_token_left())
    except TimeoutError:
        return recorder.failed(UpstreamError(ErrorKind.FIRST_TOKEN_TIMEOUT, ""))
    except UpstreamError as e:
        return recorder.failed(e)
    if not first:
        return recorder.failed(UpstreamError(ErrorKind.STREAM_CUT, "closed before the first byte"))
    first_byte = recorder.first_byte_at = time.perf_counter()
    call.record["ttft_ms"] = round((first_byte - recorder.started) * 1000, 1)
    response = web.StreamResponse(status=200, headers=_stream_headers(call, upstream, recorder))
    try:
        await response.prepare(call.request)
        outcome, event = await _relay(call, upstream, response, recorder, first, codec=codec)
    except (ConnectionError, asyncio.CancelledError) as e:  # our client left: not the upstream's
        recorder.finish(classify_error(ErrorKind.CLIENT_DISCONNECT), first_byte=first_byte)
        if isinstance(e, asyncio.CancelledError):
            raise
        return Streamed(response)
    except Exception:  # a bug after the stream was committed: end it, never a second answer
        log.exception(
            "relaying the stream of %s failed inside the proxy", recorder.attempt.upstream
        )
        recorder.finish(_PROXY_FAULT, first_byte=first_byte)
        if call.request.transport is not None:
            call.request.transport.abort()
        return Streamed(response)
    recorder.finish(outcome, first_byte=first_byte)  # before the client may fail us below
    wait = call.limits.client_write_timeout
    with contextlib.suppress(ConnectionError):
        if event:
            await write_bounded(call.request, response, event, wait)
        await write_bounded(call.request, response, None, wait)
    return Streamed(response)


def _stream_headers(call: Call, upstream: Response, recorder: _Recorder) -> dict[str, str]:
    return {
        "Content-Type": upstream.headers.get("content-type", "text/event-stream"),
        "Cache-Control": "no-cache",
        "x-sluice-upstream": recorder.pick.candidate.target.name,
        "x-sluice-attempts": str(len(call.attempts)),
    }


async def _write(
    call: Call, response: web.StreamResponse, chunk: bytes, recorder: _Recorder
) -> None:
    """A chunk to the client, within the client write timeout and the attempt's total: a
    client that stops reading must not hold the upstream connection (ConnectionError)."""
    timeout = min(call.limits.client_write_timeout, recorder.time_left())
    await write_bounded(call.request, response, chunk, timeout)


async def _relay(
    call: Call,
    upstream: Response,
    response: web.StreamResponse,
    recorder: _Recorder,
    first: bytes,
    *,
    codec: Codec,
) -> tuple[Outcome, bytes]:
    """Chunks from the upstream to the client, through the codec's reader (translation,
    usage, its end), until the stream ends: its outcome, and the error event that must end
    the client's stream (b"" if none, or if the reader already wrote one)."""
    target = recorder.pick.candidate.target
    stream = codec.stream(model=recorder.pick.candidate.model, include_usage=call.usage_asked)
    ended, outcome = await _pump(call, upstream, response, recorder, first, stream=stream)
    if outcome is None:
        if ended and (rest := stream.finish()):
            await _write(call, response, rest, recorder)
        if stream.usage is not None:
            _count(call, recorder, stream.usage)
            recorder.stream_rate(stream.usage.get("output"))
        outcome = _stream_end(stream.error, target, first, codec)
    failure = stream.error
    # A translating reader wrote its own error event; an upstream's in-band error (with its
    # status) went to the client as it came.
    written = failure is not None and (codec.translates or failure.status is not None)
    if outcome.kind is OutcomeKind.SUCCESS or written:
        return outcome, b""
    name = target.name
    return outcome, codec.error_event(f"upstream {name} failed mid-stream: {outcome.detail}")


async def _pump(
    call: Call,
    upstream: Response,
    response: web.StreamResponse,
    recorder: _Recorder,
    chunk: bytes,
    *,
    stream: StreamReader,
) -> tuple[bool, Outcome | None]:
    """Feed the reader and write what it gives until the upstream's body ends (True), the
    reader gives up or sees the end, or a read fails (its outcome)."""
    idle = recorder.pick.candidate.target.timeouts.stream_idle
    while chunk and stream.error is None:
        if out := stream.feed(chunk):
            await _write(call, response, out, recorder)
        if stream.done:  # its last event came: an upstream that keeps the body open is done
            return True, None
        left = recorder.time_left()
        try:
            chunk = await upstream.readany(min(idle, left))
        except TimeoutError:
            kind = ErrorKind.STREAM_IDLE_TIMEOUT if idle < left else ErrorKind.TOTAL_TIMEOUT
            return False, classify_error(kind)
        except UpstreamError as e:
            return False, classify_error(ErrorKind.STREAM_CUT, e.detail)
    return not chunk, None


def _stream_end(
    failure: StreamFailure | None, target: Target, first: bytes, codec: Codec
) -> Outcome:
    """What a stream that ended (or whose reader gave up) means for the upstream."""
    if failure is None or not (codec.judges_end or first.lstrip().startswith(_SSE_STARTS)):
        return _STREAM_COMPLETE
    if failure.status is not None:  # the upstream said so in the stream (Anthropic's error event)
        return classify_status(failure.status, target.policy)
    return classify_error(failure.error or ErrorKind.STREAM_CUT, failure.message)


_STREAM_COMPLETE = Outcome(OutcomeKind.SUCCESS, "stream complete", status=200)
_SSE_STARTS = (b"data:", b"event:", b":")  # an SSE stream, whose end can be judged
# The gateway's own key was refused: a failure of that upstream (fail over, count it), and its
# body (which may echo part of the key) is not passed back.
_GATEWAY_CREDENTIALS_REFUSED = frozenset({401, 403})
_PROXY_FAULT = Outcome(
    OutcomeKind.IGNORED, "the attempt ended inside the proxy", error=ErrorKind.LOCAL
)


class _Recorder:
    """Times one attempt and records its outcome (breaker, metrics, the log record) once."""

    def __init__(self, call: Call, pick: Pick, per_try: float | None) -> None:
        self.call = call
        self.pick = pick
        self.started = time.perf_counter()
        self.headers_at: float | None = None
        self.finished = False
        self.first_byte_at = 0.0  # a stream's first byte (time.perf_counter())
        self.tokens_per_second: float | None = None  # a stream's output rate after it
        self.tokens_used: int | None = None  # what the upstream's usage said, if it did
        self.attempt = Attempt(upstream=pick.candidate.target.name)
        call.attempts.append(self.attempt)
        timeouts = pick.candidate.target.timeouts
        self.first_token = timeouts.first_token
        # The route's perTryTimeout caps the upstream's own total timeout.
        self.total = timeouts.total if per_try is None else min(timeouts.total, per_try)

    def stream_rate(self, output_tokens: int | None) -> None:
        """A stream ended with ``output_tokens``: its output rate after its first byte."""
        if output_tokens and self.first_byte_at:
            elapsed = max(0.001, time.perf_counter() - self.first_byte_at)
            self.tokens_per_second = output_tokens / elapsed

    def head_timeout(self, stream: bool) -> float:
        """A non-streamed answer's head comes when it is complete: only the total bounds it. A
        stream's head is its first token."""
        return min(self.first_token, self.total) if stream else self.total

    def time_left(self) -> float:
        return max(0.001, self.total - (time.perf_counter() - self.started))

    def first_token_left(self) -> float:
        """Until the first token is late, or the attempt's total (perTryTimeout) is spent."""
        return max(0.001, min(self.first_token, self.total) - (time.perf_counter() - self.started))

    def timed_out(self, *, before_head: bool) -> Failed:
        stream = self.call.stream
        late = before_head and stream and self.first_token <= self.total
        kind = ErrorKind.FIRST_TOKEN_TIMEOUT if late else ErrorKind.TOTAL_TIMEOUT
        self.finish(classify_error(kind))
        return Failed()

    def refused(self, error: TranslationError) -> Failed:
        """The request cannot be said in this upstream's format: not the upstream's fault; the
        next candidate may take it, else the client gets this 400 naming the parameter."""
        self.finish(Outcome(OutcomeKind.IGNORED, f"not translated: {error}", status=400))
        anthropic = self.call.request.path == "/v1/messages"
        body = orjson.dumps(error.anthropic_body() if anthropic else error.openai_body())
        return Failed(Reply(400, body, {"content-type": "application/json"}), refused=True)

    def failed(self, error: UpstreamError) -> Failed:
        """Record a failed attempt: try the next candidate, unless it is the proxy's own
        trouble (no other upstream would do better), which is answered at once."""
        self.finish(classify_error(error.kind, error.detail))
        local = _LOCAL_ANSWERS.get(error.kind)
        if local is None:
            return Failed()
        status, kind, message = local
        limit = self.call.limits.max_answer_bytes
        body = {"error": {"message": message.format(limit=limit), "type": kind, "param": None,
                          "code": kind}}  # fmt: skip
        headers = {"content-type": "application/json", "retry-after": "1"}
        return Failed(Reply(status, orjson.dumps(body), headers), final=True)

    def _account(self, outcome: Outcome, ttft: float | None, now: float) -> None:
        """The ledger's count for the operator, and the rate-limit reservation settled: to
        the usage if the upstream said it, else the estimate for an answer (a stream cut
        before its usage still used tokens) and nothing for a failure."""
        target, kind = self.pick.candidate.target, outcome.kind
        slow_calls = target.policy.slow_calls
        duration = ttft if ttft is not None else self.attempt.ms / 1000
        slow = slow_calls is not None and slow_calls.is_slow(duration, self.tokens_per_second)
        self.call.usage.attempt(target.key, kind, slow=slow, detail=outcome.detail, now=now)
        reservation = self.pick.reservation
        if reservation is not None:
            used = self.tokens_used
            if used is None:
                used = reservation.tokens if kind is OutcomeKind.SUCCESS else 0
            self.call.rate_limits.settle(target.key, reservation, used, now)

    def finish(self, outcome: Outcome, *, first_byte: float | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        call, target = self.call, self.pick.candidate.target
        ttft = None if first_byte is None else first_byte - self.started
        attempt = self.attempt
        attempt.outcome = str(outcome.kind)
        attempt.status = outcome.status
        attempt.ms = (time.perf_counter() - self.started) * 1000
        if outcome.kind is not OutcomeKind.SUCCESS:
            attempt.error = outcome.detail
            generic = outcome.error
            attempt.summary = outcome.detail if generic is None else classify_error(generic).detail
        now = call.clock()
        call.breakers.record(
            target, self.pick.permit, outcome, now, ttft,
            tokens_per_second=self.tokens_per_second,
        )  # fmt: skip
        self._account(outcome, ttft, now)
        namespace, name = target.key
        metrics = call.metrics
        metrics.child(metrics.attempts, namespace, name, outcome.kind.value).inc()
        if ttft is not None:
            metrics.child(metrics.ttft, namespace, name).observe(ttft)
        if outcome.kind is OutcomeKind.SUCCESS:
            call.load.answered(target.key, (ttft if ttft is not None else attempt.ms / 1000) * 1000)
