"""The operator's report endpoint: every proxy replica tells the leader what it saw, about once
a second, and hears back its share of each rate limit (as Envoy's load-reporting service does).

::

    POST /v1/reports   Authorization: Bearer <the proxy's projected token, audience sluice-operator>
      200  the Answer (sluice.core.wire): this replica's shares, when to report next
      400  {"error": ...}   not a valid report; the message names the field
      401  {"error": ...}   no token, or one the API server does not accept for this audience
      403  {"error": ...}   a valid token, but not the proxy's ServiceAccount
      503  {"error": "not leader", "leader": <Lease holder>, "address": <its host:port or null>}
      503  {"error": "cannot check the token now"}   the API server did not answer the review

Every replica of the operator serves the port; only the Lease holder takes reports. A standby
answers with who leads and where (the leader writes its address on the Lease, annotation
``sluice.dev/report-address``), so a replica that came in through the Service posts there
next. Tokens are checked with a TokenReview for the ``sluice-operator`` audience: such a token
is worth nothing to the API server or anyone else, and the kubelet rotates it. A review's
answer is kept for a minute (a refusal for 5 s), by the token's SHA-256, at most 1,024 of each
(so tokens that fail cannot push out those that pass); one review at a time per token, within
5 s; tokens not seen before are reviewed at most 20 a second (beyond: 429), so a flood of
made-up tokens cannot turn into a flood of TokenReviews. A token bound to a pod (the kubelet's
projected tokens are) may report only under that pod's name.

A report's attempts go to the Upstream's worker (cluster breaker, usage); its windows and
demands to the share books, one per kind of limit (:mod:`sluice.core.shares`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sluice.core.reports import Answer, Report, Share, UpstreamUsage
from sluice.core.shares import Claim, ShareBook
from sluice.core.wire import MAX_BODY_BYTES, WireError, decode_report, encode_answer
from sluice.kube import KubeError, TokenReview
from sluice.operator.metrics import OperatorMetrics
from sluice.resources import Ref
from sluice.resources.models import Limits

__all__ = [
    "ADDRESS_ANNOTATION",
    "AUDIENCE",
    "ReportBook",
    "ReportEndpoint",
    "TokenCheck",
    "serve_reports",
]

log = logging.getLogger("sluice.operator.reports")

ADDRESS_ANNOTATION = "sluice.dev/report-address"
AUDIENCE = "sluice-operator"
_JSON = "application/json"


class Reviewer(Protocol):
    async def review_token(self, token: str, audiences: list[str]) -> TokenReview: ...


class Refused(Exception):
    """A report that is not taken: the HTTP status and why."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


@dataclass(frozen=True, slots=True)
class _Reviewed:
    username: str | None  # None: not valid for the audience
    pod_name: str | None
    until: float


@dataclass
class TokenCheck:
    """Who a bearer token belongs to, by TokenReview, cached; only ``allowed`` users pass."""

    reviewer: Reviewer
    allowed: frozenset[str]
    audience: str = AUDIENCE
    ttl: float = 60.0
    refusal_ttl: float = 5.0
    max_entries: int = 1024
    review_timeout: float = 5.0
    reviews_per_second: float = 20.0  # of tokens not in the cache
    clock: Callable[[], float] = time.monotonic
    _accepted: dict[bytes, _Reviewed] = field(default_factory=dict)
    _refused: dict[bytes, _Reviewed] = field(default_factory=dict)
    _pending: dict[bytes, asyncio.Future[_Reviewed]] = field(default_factory=dict)
    _allowance: float = 0.0
    _allowance_at: float = 0.0

    async def user(self, header: str | None) -> _Reviewed:
        """The allowed user (and pod) the ``Authorization`` header proves, or
        :class:`Refused`."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "a bearer token is required")
        digest = hashlib.sha256(token.strip().encode()).digest()
        now = self.clock()
        cached = self._accepted.get(digest) or self._refused.get(digest)
        if cached is None or cached.until <= now:
            cached = await self._review_once(digest, token.strip(), now)
        if cached.username is None:
            raise Refused(401, f"the token is not valid for audience {self.audience}")
        if cached.username not in self.allowed:
            raise Refused(403, f"{cached.username} may not report")
        return cached

    async def _review_once(self, digest: bytes, token: str, now: float) -> _Reviewed:
        """One review per token at a time; new tokens within the rate."""
        pending = self._pending.get(digest)
        if pending is None:
            self._spend(now)
            pending = self._pending[digest] = asyncio.ensure_future(self._review(token, now))
            pending.add_done_callback(lambda _: self._pending.pop(digest, None))
        reviewed = await asyncio.shield(pending)
        cache = self._accepted if reviewed.username is not None else self._refused
        if digest not in cache and len(cache) >= self.max_entries:
            cache.pop(next(iter(cache)))  # the oldest of its kind
        cache[digest] = reviewed
        return reviewed

    def _spend(self, now: float) -> None:
        """A token bucket for reviews of unknown tokens (a burst of two seconds' worth)."""
        rate = self.reviews_per_second
        self._allowance = min(2 * rate, self._allowance + (now - self._allowance_at) * rate)
        self._allowance_at = now
        if self._allowance < 1:
            raise Refused(429, "too many unknown tokens; retry shortly")
        self._allowance -= 1

    async def _review(self, token: str, now: float) -> _Reviewed:
        try:
            async with asyncio.timeout(self.review_timeout):
                review = await self.reviewer.review_token(token, [self.audience])
        except (KubeError, OSError, TimeoutError) as e:
            log.warning("TokenReview failed: %s", e)
            raise Refused(503, "cannot check the token now") from e
        if not review.authenticated or not review.username or self.audience not in review.audiences:
            return _Reviewed(None, None, now + self.refusal_ttl)
        return _Reviewed(review.username, review.pod_name, now + self.ttl)


class Taker(Protocol):
    """What a report needs of an Upstream's worker (``UpstreamWorker`` has it)."""

    @property
    def limits(self) -> Limits | None: ...

    def take_report(self, usage: UpstreamUsage, now: float, *, source: str) -> None: ...


@dataclass
class ReportBook:
    """The leader's side: reports in, breakers fed, shares out."""

    workers: Mapping[Ref, Taker]
    identity: str
    interval: float = 1.0
    clock: Callable[[], float] = time.time
    requests: ShareBook = field(init=False)
    tokens: ShareBook = field(init=False)
    _expired_at: float = 0.0

    def __post_init__(self) -> None:
        # A replica that missed three reports in a row has left; its share returns.
        self.requests = ShareBook(stale_after=3 * self.interval)
        self.tokens = ShareBook(stale_after=3 * self.interval)

    def take(self, report: Report) -> Answer:
        """Fold ``report`` in; this replica's shares of every limited Upstream. One that the
        report leaves out counts as idle there (it still gets a share)."""
        now = self.clock()
        reported = {Ref(u.namespace, u.name): u for u in report.upstreams}
        for key, usage in reported.items():
            worker = self.workers.get(key)
            if worker is not None:  # not one this operator manages: ignored
                worker.take_report(usage, now, source=report.replica)
        shares = []
        for key, worker in self.workers.items():
            share = self._share(key, worker, reported.get(key), report, now)
            if share is not None:
                shares.append(share)
        if now - self._expired_at >= self.interval:
            self._expired_at = now
            self.requests.expire(now)
            self.tokens.expire(now)
        return Answer(leader=self.identity, interval=self.interval, shares=shares)

    def _share(
        self,
        key: Ref,
        worker: Taker,
        usage: UpstreamUsage | None,
        report: Report,
        now: float,
    ) -> Share | None:
        limits = worker.limits
        rpm = None if limits is None else limits.requests_per_minute
        tpm = None if limits is None else limits.tokens_per_minute
        usage = usage or UpstreamUsage(key.namespace, key.name)
        per_minute = 60.0 / report.interval
        found: list[float | None] = []
        for book, limit, window, wanted in (
            (self.requests, rpm, usage.window_requests, usage.wanted_requests),
            (self.tokens, tpm, usage.window_tokens, usage.wanted_tokens),
        ):
            if limit is None:
                book.forget(key)
                found.append(None)
                continue
            book.claim(key, report.replica, Claim(window, wanted * per_minute), now)
            found.append(book.share(key, report.replica, float(limit), now))
        if found == [None, None]:
            return None
        return Share(key.namespace, key.name, found[0], found[1])


class Leadership(Protocol):
    @property
    def holder(self) -> str | None: ...

    def holder_annotation(self, key: str) -> str | None: ...


@dataclass
class ReportEndpoint:
    """POST /v1/reports on every operator replica; ``book`` is set while this one leads."""

    check: TokenCheck
    leadership: Leadership
    metrics: OperatorMetrics
    book: ReportBook | None = None

    async def handle(self, request: web.Request) -> web.Response:
        try:
            answer = await self._take(request)
        except Refused as e:
            self.metrics.reports.labels(_result(e)).inc()
            return web.json_response(e.body, status=e.status)
        self.metrics.reports.labels("accepted").inc()
        return web.Response(body=encode_answer(answer), content_type=_JSON)

    async def _take(self, request: web.Request) -> Answer:
        who = await self.check.user(request.headers.get("Authorization"))
        book = self.book
        if book is None:
            raise Refused(
                503,
                "not leader",
                leader=self.leadership.holder,
                address=self.leadership.holder_annotation(ADDRESS_ANNOTATION),
            )
        try:
            report = decode_report(await request.read())
        except WireError as e:
            raise Refused(400, str(e)) from e
        if who.pod_name is not None and report.replica != who.pod_name:
            raise Refused(
                403, f"pod {who.pod_name} may report only as itself, not {report.replica!r}"
            )
        return book.take(report)


def _result(refused: Refused) -> str:
    if refused.body["error"] == "not leader":
        return "not_leader"
    return {
        400: "invalid",
        401: "unauthenticated",
        403: "forbidden",
        413: "invalid",
        429: "throttled",
    }.get(refused.status, "unavailable")


async def serve_reports(endpoint: ReportEndpoint, host: str, port: int) -> web.AppRunner:
    """Serve the endpoint on host:port (plain HTTP: see docs/security.md); the caller cleans
    the runner up."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/reports", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("taking reports on %s:%d", host, port)
    return runner
