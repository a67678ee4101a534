"""The OpenAI-compatible gateway's HTTP side: the app, its endpoints and shared state.

``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` go through an
:class:`~sluice.proxy.exchange.Exchange` (routing, breakers, failover, streaming);
``/v1/models``, ``/health``, ``/metrics`` and ``/admin/breakers`` answer from the table and the
breakers. Every API request writes one JSON line to the :class:`AccessLog`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.core import State, Transition
from sluice.proxy.breakers import Breakers
from sluice.proxy.client import UpstreamClient
from sluice.proxy.exchange import Exchange, Wire, error_response
from sluice.proxy.metrics import ProxyMetrics
from sluice.proxy.table import Candidate, Key, RouteEntry, Table, Target, order_candidates

__all__ = ["PROXY", "AccessLog", "Proxy", "create_app"]

log = logging.getLogger("sluice.proxy")

MAX_BODY_BYTES = 16 * 1024 * 1024
STREAMABLE = frozenset({"/v1/chat/completions", "/v1/completions"})


class AccessLog:
    """One JSON object per API request, a line each, written to ``stream`` in batches: when
    ``batch`` lines are waiting, and at least every half second while the app runs (and at
    exit). Not a ``logging`` logger: its record machinery took about 6% of the proxy's
    profile samples, and log collectors want the bare JSON lines anyway."""

    def __init__(self, stream: TextIO, *, batch: int = 512) -> None:
        self.stream = stream
        self.batch = batch
        self._lines: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        lines = self._lines
        lines.append(orjson.dumps(record).decode())
        if len(lines) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError) as e:  # a closed or broken stream: say so once
                log.warning("access log lost %d line(s): %s", text.count("\n"), e)


@dataclass
class Proxy:
    """Everything a request needs: the table, the breakers, the client session, metrics."""

    table: Table
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    admin_token: str | None = None
    access_log: AccessLog | None = None
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    breakers: Breakers = field(init=False)
    latency_ms: dict[Key, float] = field(default_factory=dict)
    in_flight: dict[Key, int] = field(default_factory=dict)
    round_robin: dict[Key, int] = field(default_factory=dict)
    sticky: dict[tuple[Key, str], tuple[Key, float]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None
    _client: UpstreamClient | None = None
    _wires: dict[Key, Wire] = field(default_factory=dict)

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp's client session, for probes; exists while the app runs (see create_app)."""
        if self._session is None:
            raise RuntimeError("the proxy is not running: no client session")
        return self._session

    @property
    def client(self) -> UpstreamClient:
        """The request path's client to upstreams; exists while the app runs."""
        if self._client is None:
            raise RuntimeError("the proxy is not running: no upstream client")
        return self._client

    def wire(self, target: Target) -> Wire:
        """Target's endpoint and fixed headers, built again when the Target changes."""
        wire = self._wires.get(target.key)
        if wire is None or wire.target is not target:
            wire = self._wires[target.key] = Wire.of(target)
        return wire

    def __post_init__(self) -> None:
        self.breakers = Breakers(on_transition=self._transition)
        self.set_table(self.table)

    def set_table(self, table: Table) -> None:
        self.table = table
        self._wires.clear()
        self.breakers.sync(table, self.clock())
        for problem in table.problems:
            log.warning("%s", problem)
        for key, breaker in self.breakers.items():
            self.metrics.breakers.set_state(key[0], key[1], breaker.state)
        # Per-route counters start at zero, so the first rejection is a visible increase
        # (a series born at 1 has no rate until it moves again).
        for entry in table.routes:
            route = f"{entry.key[0]}/{entry.key[1]}"
            self.metrics.rejections.labels(route)
            self.metrics.failovers.labels(route)

    def _transition(self, key: Key, transition: Transition) -> None:
        self.metrics.breakers.transition(key[0], key[1], transition)
        self.metrics.breakers.set_state(key[0], key[1], self.breakers.get(key).state)
        log.info(
            "breaker %s/%s: %s -> %s (%s): %s",
            key[0],
            key[1],
            transition.from_state,
            transition.to_state,
            transition.reason,
            transition.message,
        )

    def order(self, route: RouteEntry | None, candidates: list[Candidate]) -> list[Candidate]:
        def counter(key: Key) -> int:
            value = self.round_robin.get(key, 0)
            self.round_robin[key] = value + 1
            return value

        return order_candidates(
            route,
            candidates,
            latency_ms=lambda key: self.latency_ms.get(key, 0.0),
            in_flight=lambda key: self.in_flight.get(key, 0),
            rng=self.rng,
            counter=counter,
        )


PROXY = web.AppKey("sluice_proxy", Proxy)


async def handle_models(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "sluice"}
                for name in proxy.table.models()
            ],
        }
    )


async def handle_api(request: web.Request) -> web.StreamResponse:
    proxy = request.app[PROXY]
    started = time.perf_counter()
    record: dict[str, Any] = {"method": request.method, "path": request.path}
    route = "none"
    response: web.StreamResponse | None = None
    try:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            response = error_response(
                400, "the request body is not valid JSON", "invalid_request_error"
            )
            return response
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            response = error_response(
                400, "the request needs a 'model' string", "invalid_request_error"
            )
            return response
        stream = bool(body.get("stream")) and request.path in STREAMABLE
        record.update(model=body["model"], stream=stream)
        response, route = await Exchange(proxy, request, body, raw, stream, record).run()
        return response
    finally:
        elapsed = time.perf_counter() - started
        status = response.status if response is not None else 499  # the client went away
        record.update(route=route, status=status, latency_ms=round(elapsed * 1000, 1))
        metrics = proxy.metrics
        metrics.child(metrics.requests, route, str(status)).inc()
        metrics.child(metrics.request_duration, route).observe(elapsed)
        if proxy.access_log is not None:
            proxy.access_log.write(record)


async def handle_health(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    now = proxy.clock()
    upstreams = []
    for key, target in sorted(proxy.table.targets.items()):
        state = proxy.breakers.effective_state(target, now)
        breaker = proxy.breakers.get(key)
        upstreams.append(
            {
                "name": key[1],
                "namespace": key[0],
                "state": {State.CLOSED: "closed", State.OPEN: "open", State.HALF_OPEN: "half_open"}[
                    state
                ],
                "failures": max(breaker.consecutive_failures, breaker.consecutive_probe_failures),
                "forced": target.override is not None,
            }
        )
        proxy.metrics.breakers.set_state(key[0], key[1], state)
    open_count = sum(u["state"] == "open" for u in upstreams)
    if open_count == 0:
        status = "ok"
    elif open_count < len(upstreams):
        status = "degraded"
    else:
        status = "unhealthy"
    return web.json_response(
        {"status": status, "upstreams": upstreams}, status=503 if status == "unhealthy" else 200
    )


async def handle_alive(_: web.Request) -> web.Response:
    """Liveness and readiness: the process serves. (/health is about the upstreams.)"""
    return web.Response(text="ok")


async def handle_metrics(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    return web.Response(
        body=generate_latest(proxy.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _admin_guard(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app[PROXY].admin_token
        if not token:
            return error_response(
                403, "admin endpoints are disabled (no admin token configured)", "forbidden"
            )
        if request.headers.get("Authorization") != f"Bearer {token}":
            return error_response(
                401, "admin endpoints need 'Authorization: Bearer <admin token>'", "unauthorized"
            )
        return await handler(request)

    return guarded


async def handle_admin_list(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    return web.json_response(
        {
            "breakers": [
                {
                    "namespace": key[0],
                    "name": key[1],
                    **_snapshot_json(breaker.snapshot()),
                    "effective": str(breaker.state),
                }
                for key, breaker in proxy.breakers.items()
            ]
        }
    )


def _snapshot_json(snapshot: Any) -> dict[str, Any]:
    return {
        "state": str(snapshot.state),
        "forced": None if snapshot.forced is None else str(snapshot.forced),
        "reason": None if snapshot.reason is None else str(snapshot.reason),
        "message": snapshot.message,
        "consecutiveFailures": snapshot.consecutive_failures,
        "openUntil": snapshot.open_until,
    }


async def handle_admin_action(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    key = (request.match_info["namespace"], request.match_info["name"])
    action = request.match_info["action"]
    if key not in proxy.table.targets:
        return error_response(404, f"no upstream {key[0]}/{key[1]}", "not_found")
    admin = request.app.get(ADMIN_ACTIONS)
    if admin is None:
        return error_response(501, "this proxy cannot change breakers", "not_implemented")
    try:
        await admin(key, action)
    except ValueError as e:
        return error_response(400, str(e), "invalid_request_error")
    breaker = proxy.breakers.get(key)
    return web.json_response(
        {
            "namespace": key[0],
            "name": key[1],
            "action": action,
            **_snapshot_json(breaker.snapshot()),
            "effective": str(breaker.state),
        }
    )


AdminActions = Callable[[Key, str], Awaitable[None]]
ADMIN_ACTIONS: web.AppKey[AdminActions] = web.AppKey("sluice_admin_actions")


async def _flush_access_log(app: web.Application) -> AsyncIterator[None]:
    """The access log is flushed at least every half second, and at exit."""
    access_log = app[PROXY].access_log
    if access_log is None:
        yield
        return

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(0.5)
            access_log.flush()

    task = asyncio.create_task(flush_forever())
    yield
    task.cancel()
    access_log.flush()


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    proxy = app[PROXY]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        auto_decompress=False,  # bodies pass through as the upstream encoded them
    ) as session:
        proxy._session = session
        proxy._client = UpstreamClient()
        try:
            yield
        finally:
            await proxy._client.close()
            proxy._session = None
            proxy._client = None


def create_app(proxy: Proxy, *, admin: AdminActions | None = None) -> web.Application:
    """The proxy's app. Its cleanup context opens and closes the session to upstreams; add
    yours after it (they run in order)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[PROXY] = proxy
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_flush_access_log)
    if admin is not None:
        app[ADMIN_ACTIONS] = admin
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, handle_api)
    app.router.add_get("/v1/models", handle_models)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/healthz", handle_alive)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/admin/breakers", _admin_guard(handle_admin_list))
    app.router.add_post(
        "/admin/breakers/{namespace}/{name}/{action}", _admin_guard(handle_admin_action)
    )
    return app
