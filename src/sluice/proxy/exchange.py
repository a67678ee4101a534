"""One client request's journey through the candidates: admit, attempt, fail over, stream.

1. The route's candidates are tried in order within the retry budget (``retry.maxAttempts``
   attempts in all). Each is tried once a round; when a round has failed and budget is left,
   another round starts after a back-off (``retry.backoff``). A candidate whose breakers give
   no permit is skipped, never contacted.
2. A failure or a 429 moves on to the next candidate while nothing has been sent to the client;
   another 4xx is the client's own and goes back as is.
3. A stream is committed at its first byte: the client gets 200 and the chunks as they come. A
   later failure is recorded and ends the stream with an SSE error event.
4. Nobody admitted: ``503`` ``circuit_open`` at once, with ``Retry-After``. Everybody tried and
   failed: ``502`` ``upstream_error`` with the attempt history (``429`` if all were rate limited).

Every attempt's outcome goes to the breakers, and the request's story to one log record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from sluice.core import (
    ADMITTED,
    ErrorKind,
    Outcome,
    OutcomeKind,
    Permit,
    classify_error,
    classify_status,
)
from sluice.core.policy import parse_duration
from sluice.probe import auth_headers
from sluice.proxy.breakers import Breakers
from sluice.proxy.client import Endpoint, Response, UpstreamError, request_head
from sluice.proxy.table import Candidate, Key, RouteEntry, Target

if TYPE_CHECKING:
    from sluice.proxy.server import Proxy

__all__ = ["Exchange", "error_response"]

# Client headers passed on to every upstream; an Upstream adds its own (spec.forwardHeaders).
# Everything else stays here: the client's credentials, hop-by-hop and framing headers (the
# proxy frames its own request), Expect (an upstream's 100 Continue is not the answer), and
# headers such as OpenAI-Organization that would let a client choose whom the gateway's key
# bills. An allowlist, because a denylist misses the next such header.
FORWARDED = ("accept", "user-agent")
PASSED_BACK = ("content-type", "retry-after", "x-request-id", "openai-processing-ms",
               "openai-version")  # fmt: skip


# OpenAI's order; the two patterns after it cover any other.
# At most 15 digits: a count beyond that is nonsense, and int() of thousands of digits raises.
_USAGE = re.compile(
    rb'"prompt_tokens"\s*:\s*(\d{1,15})\s*,\s*"completion_tokens"\s*:\s*(\d{1,15})\b'
)
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d{1,15})\b')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d{1,15})\b')


@dataclass(frozen=True, slots=True)
class Wire:
    """What every request to one upstream shares, built once per Target."""

    target: Target
    endpoint: Endpoint
    headers: list[tuple[str, str]]  # Content-Type, Accept-Encoding, the provider's auth
    forwarded: tuple[str, ...]  # the client headers passed on (lower case)
    prefixes: tuple[str, ...]  # ... and those starting with one of these

    @classmethod
    def of(cls, target: Target) -> Wire:
        headers = [("Content-Type", "application/json"), ("Accept-Encoding", "identity")]
        headers += auth_headers(target.spec.provider, target.api_key).items()
        names = [h.lower() for h in target.spec.forward_headers]
        exact = tuple(h for h in names if not h.endswith("*") and h not in FORWARDED)
        prefixes = tuple(h[:-1] for h in names if h.endswith("*"))
        endpoint = Endpoint.parse(target.spec.base_url)
        return cls(target, endpoint, headers, FORWARDED + exact, prefixes)


def usage_tokens(body: bytes) -> dict[str, int | None] | None:
    """``{"input", "output"}`` token counts from an OpenAI-style body's ``usage`` object (None
    without one). It comes last: search from there, rather than parse the whole body."""
    start = body.rfind(b'"usage"')
    if start < 0:
        return None
    if both := _USAGE.search(body, start):
        return {"input": int(both.group(1)), "output": int(both.group(2))}
    prompt = _PROMPT_TOKENS.search(body, start)
    completion = _COMPLETION_TOKENS.search(body, start)
    return {
        "input": int(prompt.group(1)) if prompt else None,
        "output": int(completion.group(1)) if completion else None,
    }


def error_response(
    status: int, message: str, kind: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An OpenAI-style error body: ``{"error": {"message", "type", "code", ...}}``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind, **extra}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class Attempt:
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


@dataclass
class _Reply:
    """An upstream's complete (non-streamed) answer."""

    status: int
    body: bytes
    headers: dict[str, str]  # lower-case names
    final: bool  # give it to the client (success, or the client's own error)


class _Committed(Exception):
    """A stream was answered, successfully or not: the request is over."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response


class _StreamBroke(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


@dataclass
class Exchange:
    proxy: Proxy
    request: web.Request
    body: dict[str, Any]
    raw: bytes  # the body as the client sent it
    stream: bool
    record: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    _skipped: int = 0  # candidates without a permit in the last round
    _busy: int = 0  # candidates skipped at their maxConcurrent
    _last: _Reply | None = None  # the last non-final answer (a 429, a 5xx)

    async def run(self) -> tuple[web.StreamResponse, str]:
        """The response and the route label."""
        proxy, model = self.proxy, str(self.body["model"])
        resolved = proxy.table.resolve(model, order=proxy.order)
        route, entry = resolved.route, resolved.entry
        if not resolved.candidates:
            return error_response(
                404, f"The model `{model}` does not exist or has no upstream", "model_not_found"
            ), route
        budget = entry.spec.retry.max_attempts if entry else min(3, len(resolved.candidates))
        candidates = self._sticky_first(entry, resolved.candidates)
        try:
            for round_ in range(budget):  # a round tries each candidate once
                if round_:
                    if not self.attempts or len(self.attempts) >= budget:
                        break
                    await asyncio.sleep(self._backoff(entry, round_))
                answered = await self._round(candidates, budget, route, entry)
                if answered is not None:
                    return answered, route
            if not self.attempts:
                if self._busy and not self._skipped:
                    return self._all_busy(), route
                if entry is None or entry.spec.when_all_open != "TryAnyway":
                    return self._circuit_open(route, candidates), route
                reply = await self._attempt(candidates[0], ADMITTED, entry)
                if reply is not None and reply.final:
                    return self._respond(reply, candidates[0]), route
        except _Committed as committed:
            return committed.response, route
        finally:
            self.record["attempts"] = [a.as_dict() for a in self.attempts]
        rate_limited = str(OutcomeKind.RATE_LIMITED)
        if self._last is not None and all(a.outcome == rate_limited for a in self.attempts):
            return self._respond(self._last, None), route
        return self._exhausted(model, self._skipped), route

    async def _round(
        self, candidates: list[Candidate], budget: int, route: str, entry: RouteEntry | None
    ) -> web.Response | None:
        """Try each admitted candidate once; the response if one answered for good."""
        proxy = self.proxy
        self._skipped = 0
        for candidate in candidates:
            if len(self.attempts) >= budget:
                break
            if self._at_capacity(candidate):
                self._busy += 1  # limits.maxConcurrent: skip it rather than overload it
                continue
            permit = proxy.breakers.admit(candidate.target, proxy.clock())
            if permit is None:
                self._skipped += 1
                continue
            if self.attempts:
                proxy.metrics.child(proxy.metrics.failovers, route).inc()
            reply = await self._attempt(candidate, permit, entry)
            if reply is not None and reply.final:
                self._remember_sticky(entry, candidate)
                return self._respond(reply, candidate)
            self._last = reply or self._last
        return None

    def _at_capacity(self, candidate: Candidate) -> bool:
        limits = candidate.target.spec.limits
        if limits is None or limits.max_concurrent is None:
            return False
        return self.proxy.in_flight.get(candidate.target.key, 0) >= limits.max_concurrent

    @staticmethod
    def _backoff(entry: RouteEntry | None, round_: int) -> float:
        """The pause before another round: initial x 2^(round-1), capped at max."""
        if entry is None:
            initial, ceiling = 0.1, 2.0
        else:
            backoff = entry.spec.retry.backoff
            initial, ceiling = parse_duration(backoff.initial), parse_duration(backoff.max)
        return float(min(initial * 2 ** (round_ - 1), ceiling))

    # -- answers -------------------------------------------------------------------------------

    def _circuit_open(self, route: str, candidates: list[Candidate]) -> web.Response:
        proxy = self.proxy
        now = proxy.clock()
        wait = min(proxy.breakers.available_in(c.target, now) for c in candidates)
        retry_after = Breakers.retry_after(wait)
        proxy.metrics.child(proxy.metrics.rejections, route).inc()
        names = ", ".join(sorted({c.target.name for c in candidates}))
        return error_response(
            503,
            f"every circuit for this model is open ({names}); no upstream was contacted; "
            f"retry in {retry_after}s",
            "circuit_open",
            headers={"Retry-After": str(retry_after), "x-sluice-attempts": "0"},
        )

    def _all_busy(self) -> web.Response:
        return error_response(
            503,
            "every upstream for this model is at its maxConcurrent limit; retry shortly",
            "upstreams_busy",
            headers={"Retry-After": "1", "x-sluice-attempts": "0"},
        )

    def _exhausted(self, model: str, skipped: int) -> web.Response:
        also = f", {skipped} skipped with an open circuit" if skipped else ""
        return error_response(
            502,
            f"every upstream tried for `{model}` failed ({len(self.attempts)} attempts{also})",
            "upstream_error",
            attempts=[a.as_dict(public=True) for a in self.attempts],
            headers={"x-sluice-attempts": str(len(self.attempts))},
        )

    def _respond(self, reply: _Reply, candidate: Candidate | None) -> web.Response:
        headers = {k: v for k, v in reply.headers.items() if k in PASSED_BACK}
        headers["x-sluice-attempts"] = str(len(self.attempts))
        if candidate is not None:
            headers["x-sluice-upstream"] = candidate.target.name
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    # -- sticky sessions -----------------------------------------------------------------------

    def _sticky_key(self, entry: RouteEntry | None) -> tuple[Key, str] | None:
        if entry is None or entry.spec.sticky_session is None:
            return None
        value = self.request.headers.get(entry.spec.sticky_session.header)
        return (entry.key, value) if value else None

    def _sticky_first(
        self, entry: RouteEntry | None, candidates: list[Candidate]
    ) -> list[Candidate]:
        key = self._sticky_key(entry)
        remembered = self.proxy.sticky.get(key) if key else None
        if remembered is None or remembered[1] < self.proxy.clock():
            return candidates
        first = [c for c in candidates if c.target.key == remembered[0]]
        return first + [c for c in candidates if c.target.key != remembered[0]]

    def _remember_sticky(self, entry: RouteEntry | None, candidate: Candidate) -> None:
        key = self._sticky_key(entry)
        if key is None or entry is None or entry.spec.sticky_session is None:
            return
        sticky = self.proxy.sticky
        if len(sticky) > 100_000:  # bounded: forget everything rather than grow forever
            sticky.clear()
        ttl = parse_duration(entry.spec.sticky_session.ttl)
        sticky[key] = (candidate.target.key, self.proxy.clock() + ttl)

    # -- one attempt ---------------------------------------------------------------------------

    async def _attempt(
        self, candidate: Candidate, permit: Permit, entry: RouteEntry | None
    ) -> _Reply | None:
        """A complete answer (final or not), None after a failure with nothing to show, or
        _Committed once a stream has been answered."""
        proxy, target = self.proxy, candidate.target
        namespace, name = target.key
        timeouts = target.spec.timeouts
        per_try = entry.spec.retry.per_try_timeout if entry is not None else None
        attempt = _Recorder(self, candidate, permit, per_try)
        proxy.in_flight[target.key] = proxy.in_flight.get(target.key, 0) + 1
        proxy.metrics.child(proxy.metrics.in_flight, namespace, name).inc()
        try:
            # The client's bytes as they came, unless the upstream knows the model by another name.
            data = (
                self.raw
                if candidate.model == self.body["model"]
                else orjson.dumps({**self.body, "model": candidate.model})
            )
            wire = proxy.wire(target)
            try:
                head = request_head(
                    wire.endpoint,
                    self.request.path.removeprefix("/v1"),
                    self._headers(wire),
                    len(data),
                )
            except ValueError as e:  # a header that cannot be sent
                attempt.finish(classify_error(ErrorKind.PROTOCOL, str(e)))
                return None
            try:
                upstream = await proxy.client.post(
                    wire.endpoint,
                    head,
                    data,
                    connect_timeout=parse_duration(timeouts.connect),
                    # A non-streamed answer's head comes when it is complete: only the total
                    # bounds it. A stream's head is its first token.
                    timeout=attempt.head_timeout(self.stream),
                )
            except TimeoutError:
                late = self.stream and attempt.first_token <= attempt.total
                kind = ErrorKind.FIRST_TOKEN_TIMEOUT if late else ErrorKind.TOTAL_TIMEOUT
                attempt.finish(classify_error(kind))
                return None
            except UpstreamError as e:
                return attempt.failed(e)
            async with upstream:
                attempt.headers_at = time.perf_counter()
                if upstream.status >= 300 or not self.stream:
                    return await self._buffered(upstream, attempt)
                await self._streamed(upstream, attempt)
                return None  # failed before its first byte: nothing was sent, fail over
        finally:
            proxy.in_flight[target.key] -= 1
            proxy.metrics.child(proxy.metrics.in_flight, namespace, name).dec()

    def _headers(self, wire: Wire) -> list[tuple[str, str]]:
        """The client headers the upstream may see (FORWARDED, spec.forwardHeaders), then ours."""
        client = self.request.headers
        headers = [(name, value) for name in wire.forwarded for value in client.getall(name, ())]
        if wire.prefixes:
            headers += [(k, v) for k, v in client.items() if k.lower().startswith(wire.prefixes)]
        headers += wire.headers
        return headers

    async def _buffered(self, upstream: Response, attempt: _Recorder) -> _Reply | None:
        try:
            body = await upstream.read(attempt.time_left())
        except TimeoutError:
            attempt.finish(classify_error(ErrorKind.TOTAL_TIMEOUT))
            return None
        except UpstreamError as e:
            return attempt.failed(e)
        outcome = classify_status(
            upstream.status,
            attempt.candidate.target.policy,
            retry_after=upstream.headers.get("retry-after"),
            now=time.time(),
        )
        attempt.finish(outcome, first_byte=attempt.headers_at)
        if outcome.kind is OutcomeKind.SUCCESS:
            self._count_tokens(attempt.candidate, body)
        final = outcome.kind in (OutcomeKind.SUCCESS, OutcomeKind.IGNORED)
        return _Reply(upstream.status, body, upstream.headers, final)

    def _count_tokens(self, candidate: Candidate, body: bytes) -> None:
        """Token usage (see usage_tokens) into the log record and the metric."""
        tokens = usage_tokens(body)
        if tokens is None:
            return
        self.record["tokens"] = tokens
        namespace, name = candidate.target.key
        metrics = self.proxy.metrics
        for kind, count in tokens.items():
            if count:
                metrics.child(metrics.tokens, namespace, name, kind).inc(count)

    async def _streamed(self, upstream: Response, attempt: _Recorder) -> None:
        """Returns only if the stream failed before its first byte; else raises _Committed."""
        try:
            first = await upstream.readany(attempt.first_token_left())
        except TimeoutError:
            attempt.finish(classify_error(ErrorKind.FIRST_TOKEN_TIMEOUT))
            return
        except UpstreamError as e:
            attempt.finish(classify_error(e.kind, e.detail))
            return
        if not first:
            attempt.finish(classify_error(ErrorKind.STREAM_CUT, "closed before the first byte"))
            return
        first_byte = time.perf_counter()
        self.record["ttft_ms"] = round((first_byte - attempt.started) * 1000, 1)
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": upstream.headers.get("content-type", "text/event-stream"),
                "Cache-Control": "no-cache",
                "x-sluice-upstream": attempt.candidate.target.name,
                "x-sluice-attempts": str(len(self.attempts)),
            },
        )
        await response.prepare(self.request)
        try:
            await self._write(response, first, attempt)
            await self._relay(upstream, response, attempt, first)
        except _StreamBroke as broke:
            attempt.finish(broke.outcome, first_byte=first_byte)
            message = (
                f"upstream {attempt.candidate.target.name} failed mid-stream: "
                f"{broke.outcome.detail}"
            )
            error = {"error": {"message": message, "type": "upstream_error",
                               "code": "upstream_error"}}  # fmt: skip
            wait = self.proxy.limits.client_write_timeout
            with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
                event = f"data: {json.dumps(error)}\n\n".encode()
                await write_bounded(self.request, response, event, wait)
                await write_bounded(self.request, response, None, wait)
            raise _Committed(response) from None
        except (ConnectionError, aiohttp.ClientConnectionResetError, asyncio.CancelledError) as e:
            # Our client went away: not the upstream's fault.
            attempt.finish(classify_error(ErrorKind.CLIENT_DISCONNECT), first_byte=first_byte)
            if isinstance(e, asyncio.CancelledError):
                raise
            raise _Committed(response) from None
        attempt.finish(
            Outcome(OutcomeKind.SUCCESS, "stream complete", status=200), first_byte=first_byte
        )
        with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
            wait = self.proxy.limits.client_write_timeout
            await write_bounded(self.request, response, None, wait)
        raise _Committed(response)

    async def _write(self, response: web.StreamResponse, chunk: bytes, attempt: _Recorder) -> None:
        """A chunk to the client, within the client write timeout and the attempt's total: a
        client that stops reading must not hold the upstream connection (ConnectionError)."""
        timeout = min(self.proxy.limits.client_write_timeout, attempt.time_left())
        await write_bounded(self.request, response, chunk, timeout)

    async def _relay(
        self,
        upstream: Response,
        response: web.StreamResponse,
        attempt: _Recorder,
        first: bytes,
    ) -> None:
        idle = parse_duration(attempt.candidate.target.spec.timeouts.stream_idle)
        tail = first[-16:]
        while True:
            left = attempt.time_left()
            try:
                chunk = await upstream.readany(min(idle, left))
            except TimeoutError:
                kind = ErrorKind.STREAM_IDLE_TIMEOUT if idle < left else ErrorKind.TOTAL_TIMEOUT
                raise _StreamBroke(classify_error(kind)) from None
            except UpstreamError as e:
                raise _StreamBroke(classify_error(ErrorKind.STREAM_CUT, e.detail)) from None
            if not chunk:
                # An OpenAI stream ends with [DONE]; a clean close before it is a cut.
                if b"[DONE]" not in tail and first.startswith(b"data:"):
                    raise _StreamBroke(classify_error(ErrorKind.STREAM_CUT, "ended without [DONE]"))
                return
            await self._write(response, chunk, attempt)
            tail = (tail + chunk)[-16:]


class _Recorder:
    """Times one attempt and records its outcome (breaker, metrics, the log record) once."""

    def __init__(
        self, exchange: Exchange, candidate: Candidate, permit: Permit, per_try: str | None
    ) -> None:
        self.exchange = exchange
        self.candidate = candidate
        self.permit = permit
        self.started = time.perf_counter()
        self.headers_at: float | None = None
        self.attempt = Attempt(upstream=candidate.target.name)
        exchange.attempts.append(self.attempt)
        timeouts = candidate.target.spec.timeouts
        self.first_token = parse_duration(timeouts.first_token)
        # The route's perTryTimeout caps the upstream's own total timeout.
        self.total = parse_duration(timeouts.total)
        if per_try is not None:
            self.total = min(self.total, parse_duration(per_try))

    def head_timeout(self, stream: bool) -> float:
        return min(self.first_token, self.total) if stream else self.total

    def time_left(self) -> float:
        return max(0.001, self.total - (time.perf_counter() - self.started))

    def first_token_left(self) -> float:
        return max(0.001, self.first_token - (time.perf_counter() - self.started))

    def failed(self, error: UpstreamError) -> _Reply | None:
        """Record a failed attempt. None: try the next candidate; or, for the proxy's own
        troubles, the answer the client gets at once (no other upstream would do better)."""
        self.finish(classify_error(error.kind, error.detail))
        local = _LOCAL_ANSWERS.get(error.kind)
        if local is None:
            return None
        status, kind, message = local
        limit = self.exchange.proxy.limits.max_answer_bytes
        body = {"error": {"message": message.format(limit=limit), "type": kind, "param": None,
                          "code": kind}}  # fmt: skip
        headers = {"content-type": "application/json", "retry-after": "1"}
        return _Reply(status, orjson.dumps(body), headers, final=True)

    def finish(self, outcome: Outcome, *, first_byte: float | None = None) -> None:
        proxy, target = self.exchange.proxy, self.candidate.target
        ttft = None if first_byte is None else first_byte - self.started
        attempt = self.attempt
        attempt.outcome = str(outcome.kind)
        attempt.status = outcome.status
        if outcome.kind is not OutcomeKind.SUCCESS:
            attempt.error = outcome.detail
            attempt.summary = (
                outcome.detail if outcome.error is None else classify_error(outcome.error).detail
            )
        attempt.ms = (time.perf_counter() - self.started) * 1000
        proxy.breakers.record(target, self.permit, outcome, proxy.clock(), ttft)
        namespace, name = target.key
        proxy.metrics.child(proxy.metrics.attempts, namespace, name, outcome.kind.value).inc()
        if ttft is not None:
            proxy.metrics.child(proxy.metrics.ttft, namespace, name).observe(ttft)
        if outcome.kind is OutcomeKind.SUCCESS:
            sample = (ttft if ttft is not None else attempt.ms / 1000) * 1000
            previous = proxy.latency_ms.get(target.key)
            proxy.latency_ms[target.key] = (
                sample if previous is None else 0.8 * previous + 0.2 * sample
            )
