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
answer is kept for a minute (a refusal for 5 s), by the token's SHA-256, at most 1,024.

A report's attempts go to the Upstream's worker (cluster breaker, usage); its windows and
demands to the share books, one per kind of limit (:mod:`sluice.core.shares`).
"""

from __future__ import annotations

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


@dataclass
class TokenCheck:
    """Who a bearer token belongs to, by TokenReview, cached; only ``allowed`` users pass."""

    reviewer: Reviewer
    allowed: frozenset[str]
    audience: str = AUDIENCE
    ttl: float = 60.0
    refusal_ttl: float = 5.0
    max_entries: int = 1024
    clock: Callable[[], float] = time.monotonic
    _cache: dict[bytes, tuple[str | None, float]] = field(default_factory=dict)

    async def user(self, header: str | None) -> str:
        """The allowed user the ``Authorization`` header proves, or :class:`Refused`."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "a bearer token is required")
        digest = hashlib.sha256(token.strip().encode()).digest()
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is None or cached[1] <= now:
            cached = await self._review(token.strip(), now)
            if len(self._cache) >= self.max_entries:
                self._cache.pop(next(iter(self._cache)))  # the oldest
            self._cache[digest] = cached
        username = cached[0]
        if username is None:
            raise Refused(401, f"the token is not valid for audience {self.audience}")
        if username not in self.allowed:
            raise Refused(403, f"{username} may not report")
        return username

    async def _review(self, token: str, now: float) -> tuple[str | None, float]:
        try:
            review = await self.reviewer.review_token(token, [self.audience])
        except (KubeError, OSError, TimeoutError) as e:
            log.warning("TokenReview failed: %s", e)
            raise Refused(503, "cannot check the token now") from e
        if not review.authenticated or not review.username or self.audience not in review.audiences:
            return None, now + self.refusal_ttl
        return review.username, now + self.ttl


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
        await self.check.user(request.headers.get("Authorization"))
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
        return book.take(report)


def _result(refused: Refused) -> str:
    if refused.body["error"] == "not leader":
        return "not_leader"
    return {400: "invalid", 401: "unauthenticated", 403: "forbidden", 413: "invalid"}.get(
        refused.status, "unavailable"
    )


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
