"""A proxy replica's reports to the operator leader (``--report-to``), and the shares it hears
back: the replica's side of the channel ``sluice.operator.reports`` serves.

Every interval (1 s unless the leader says otherwise), and early (at most every 100 ms) after
an attempt failed so a trip spreads fast, the reporter drains what the replica saw since the
last report, POSTs it with the projected ServiceAccount token (re-read when the kubelet
rotates it), and installs the shares the answer carries. Nothing on the request path waits
for it.

Where to: ``--report-to`` is the operator's Service, which may land on a standby. A standby
answers 503 "not leader" with the leader's address; the reporter posts the same report there
at once (once), and keeps posting there until it fails, then goes back to the Service.

Fail-static: when a report fails (refused, timed out after 2 s, unreachable), its counts are
dropped (a lost report loses counts, never a request), the replica keeps its last shares and
its local breakers, and retries with back-off up to 10 s. Each change between reachable and
not is logged once; ``sluice_operator_reachable`` and ``/health``'s ``operator`` block say
which it is now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from sluice.core.reports import Answer, Report, Share, UpstreamUsage
from sluice.core.wire import MIN_INTERVAL, WireError, decode_answer, encode_report
from sluice.proxy.metrics import ProxyMetrics
from sluice.proxy.state import Proxy

__all__ = [
    "OPERATOR_LINK",
    "OperatorLink",
    "ProxyReplica",
    "Replica",
    "Reporter",
    "ReporterOptions",
    "reporting",
]

log = logging.getLogger("sluice.proxy.reporting")

_EARLY_SECONDS = 0.1  # after a failed attempt, report this soon (and no sooner)
_MAX_BACKOFF_SECONDS = 10.0


class Replica(Protocol):
    """What the reporter needs of the replica (the proxy's usage ledger and rate limits)."""

    def drain(self) -> list[UpstreamUsage]: ...

    def apply(self, shares: list[Share]) -> None: ...

    def lost_leader(self) -> None: ...

    def failures(self) -> int:
        """Failed attempts so far (any monotonic count): a change means report early."""
        ...


@dataclass(frozen=True)
class ReporterOptions:
    url: str  # the operator's Service: http://sluice-operator:9091
    replica: str  # this pod's name
    token_file: Path | None = None  # the projected ServiceAccount token
    interval: float = 1.0  # until the leader's first answer says otherwise
    timeout: float = 2.0


@dataclass
class OperatorLink:
    """What the replica knows of the operator, for /health and the metrics."""

    reachable: bool = False
    leader: str | None = None
    address: str | None = None  # the leader's report address, once a standby named it
    answered_at: float | None = None  # time.monotonic() of the last answer
    failures: int = 0  # reports lost in a row

    def view(self, now: float) -> dict[str, Any]:
        age = None if self.answered_at is None else round(now - self.answered_at, 3)
        return {
            "reachable": self.reachable,
            "leader": self.leader,
            "lastAnswerAgeSeconds": age,
            # Fail-static: the last shares and the local breakers serve until it returns.
            "failStatic": not self.reachable,
        }


OPERATOR_LINK = web.AppKey("operator_link", OperatorLink)


def _host_port(value: object) -> str | None:
    """A standby's ``address`` as ``host:port`` for a URL (an IPv6 host in brackets), or None
    if it is not one."""
    if not isinstance(value, str) or not 0 < len(value) <= 300 or "/" in value or "@" in value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not host:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class Refused(Exception):
    """A report the operator did not take (or could not be asked to)."""


class Reporter:
    def __init__(
        self,
        replica: Replica,
        options: ReporterOptions,
        session: aiohttp.ClientSession,
        *,
        metrics: ProxyMetrics | None = None,
        link: OperatorLink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica = replica
        self.options = options
        self.session = session
        self.metrics = metrics
        self.link = link or OperatorLink()
        self.clock = clock
        self.interval = options.interval
        self._last = clock()
        self._failures_seen = replica.failures()
        self._token: tuple[float, str] | None = None  # (mtime, token)

    async def run(self) -> None:
        while True:
            await self._wait()
            try:
                await self.report_once()
            except Exception as e:  # a bug must not end reporting silently, /health reachable
                log.exception("reporting to the operator failed inside the proxy")
                self._lost(e)

    async def _wait(self) -> None:
        """Until the next report is due: the interval (back-off while failing), or soon after
        a failed attempt."""
        failing = self.link.failures
        delay = min(self.interval * 2**failing, _MAX_BACKOFF_SECONDS) if failing else self.interval
        due = self._last + delay
        while (now := self.clock()) < due:
            early = not failing and self.replica.failures() != self._failures_seen
            if early and now - self._last >= _EARLY_SECONDS:
                return
            await asyncio.sleep(min(_EARLY_SECONDS, due - now))

    async def report_once(self) -> bool:
        """Drain, send, apply the answer; False if the report was lost (its counts with it)."""
        now = self.clock()
        self._failures_seen = self.replica.failures()
        interval = min(max(now - self._last, MIN_INTERVAL), 3600.0)
        self._last = now
        report = Report(self.options.replica, interval, self.replica.drain())
        try:
            answer = await self._send(encode_report(report))
        except (Refused, WireError, OSError, TimeoutError, aiohttp.ClientError) as e:
            self._lost(e)
            return False
        self.replica.apply(answer.shares)
        self.interval = min(max(answer.interval, 0.1), 60.0)
        self._reached(answer)
        return True

    async def _send(self, body: bytes) -> Answer:
        """Post to the leader followed last time, else through the Service. Any failure
        forgets the followed address: a leader that went away is found again through the
        Service, never posted to for ever."""
        try:
            return await self._send_to_leader(body)
        except BaseException:
            self.link.address = None
            raise

    async def _send_to_leader(self, body: bytes) -> Answer:
        address = self.link.address
        url = f"http://{address}/v1/reports" if address else self._service_url
        status, payload = await self._post(url, body)
        address = _host_port(payload.get("address"))
        if status == 503 and payload.get("error") == "not leader" and address:
            self.link.address = address  # follow once, now
            url = f"http://{self.link.address}/v1/reports"
            status, payload = await self._post(url, body)
        if status != 200:
            self.link.address = None  # next time through the Service again
            raise Refused(f"{url}: HTTP {status}: {payload.get('error', payload)}")
        return decode_answer(payload["body"])

    @property
    def _service_url(self) -> str:
        return self.options.url.rstrip("/") + "/v1/reports"

    async def _post(self, url: str, body: bytes) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        token = self._read_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        async with self.session.post(url, data=body, headers=headers, timeout=timeout) as r:
            raw = await r.read()
            if r.status == 200:
                return 200, {"body": raw}
            try:
                payload = await r.json(content_type=None)
            except ValueError:
                payload = None
            return r.status, payload if isinstance(payload, dict) else {"error": raw[:200]}

    def _read_token(self) -> str | None:
        """The projected token, read again whenever the file changes (the kubelet rotates
        it well before it expires)."""
        path = self.options.token_file
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime
            if self._token is None or self._token[0] != mtime:
                self._token = (mtime, path.read_text().strip())
        except OSError as e:
            if self._token is None:
                raise Refused(f"cannot read the report token {path}: {e}") from e
            # A rotation in progress: the last token read is still valid for a while.
        return None if self._token is None else self._token[1]

    def _reached(self, answer: Answer) -> None:
        link = self.link
        if not link.reachable:
            log.info("reporting to the operator leader %s", answer.leader)
        link.reachable, link.leader, link.failures = True, answer.leader, 0
        link.answered_at = self.clock()
        if self.metrics is not None:
            self.metrics.operator_reachable.set(1)

    def _lost(self, error: BaseException) -> None:
        link = self.link
        if link.reachable or link.failures == 0:
            log.warning(
                "the operator is unreachable (%s: %s); serving on the last shares and the "
                "local breakers until it answers again",
                type(error).__name__,
                error,
            )
        if link.reachable or link.failures == 0:  # also a first report that found nobody
            self.replica.lost_leader()
        link.reachable = False
        link.failures += 1
        if self.metrics is not None:
            self.metrics.report_failures.inc()
            self.metrics.operator_reachable.set(0)


def reporting(
    replica: Replica, options: ReporterOptions, metrics: ProxyMetrics, link: OperatorLink
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that reports while the app runs."""

    async def run(_: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            reporter = Reporter(replica, options, session, metrics=metrics, link=link)
            task = asyncio.create_task(reporter.run(), name="reports to the operator")
            log.info("reporting to %s as %s", options.url, options.replica)
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run


class ProxyReplica:
    """A running proxy as the reporter sees it: its usage ledger, its rate limits."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        proxy.rate_limits.follow_leader()
        proxy.show_shares()

    def drain(self) -> list[UpstreamUsage]:
        return self.proxy.usage.drain(self.proxy.clock(), self.proxy.rate_limits)

    def apply(self, shares: list[Share]) -> None:
        self.proxy.rate_limits.apply(shares, self.proxy.clock())
        self.proxy.show_shares()

    def lost_leader(self) -> None:
        """Fail-static: the limiter keeps the last shares it was given, and says so."""
        self.proxy.rate_limits.lost_leader(self.proxy.clock())

    def failures(self) -> int:
        return self.proxy.usage.failures
