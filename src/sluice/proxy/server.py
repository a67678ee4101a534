"""The OpenAI-compatible gateway's HTTP side: the app, its endpoints and shared state.

``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` go through an
:class:`~sluice.proxy.exchange.Exchange` (routing, breakers, failover, streaming);
``/v1/models``, ``/health``, ``/metrics`` and ``/admin/breakers`` answer from the table and the
breakers. Every API request writes one JSON line to the :class:`AccessLog`.

Before a request reaches the Exchange it is checked here, cheapest first (docs/security.md):
the Host (and a browser's Origin) against the allowlist, the client's key, the replica's
concurrency limit, the content type, the body (size, time to arrive, valid JSON without
duplicate keys) and the model name's length. Every wait on the client is bounded: the request
head and idle keep-alive by the server's keep-alive timeout, the body by
``Limits.request_body_timeout``, each write of the answer by ``Limits.client_write_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.core import State, Transition
from sluice.proxy.access import AccessError, ClientKeys, HostAllowlist, presented_key
from sluice.proxy.breakers import Breakers
from sluice.proxy.client import Endpoint, UpstreamClient
from sluice.proxy.exchange import Exchange, Wire, error_response, write_bounded
from sluice.proxy.limits import Limits
from sluice.proxy.metrics import ProxyMetrics
from sluice.proxy.table import Candidate, Key, RouteEntry, Table, Target, order_candidates

__all__ = ["PROXY", "AccessLog", "Limits", "Proxy", "Serving", "create_app", "serve"]

log = logging.getLogger("sluice.proxy")

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


@dataclass(frozen=True)
class Serving:
    """How a proxy serves, the same in both modes: who may call, its limits, the admin port."""

    client_keys: ClientKeys | None = None
    allowed_hosts: HostAllowlist = field(default_factory=HostAllowlist)
    limits: Limits = field(default_factory=Limits)
    admin_port: int | None = None  # None: /admin on the main port
    admin_host: str = "127.0.0.1"

    def proxy(
        self, table: Table, *, admin_token: str | None, access_log: AccessLog | None
    ) -> Proxy:
        return Proxy(
            table=table,
            admin_token=admin_token,
            access_log=access_log,
            limits=self.limits,
            client_keys=self.client_keys,
            allowed_hosts=self.allowed_hosts,
        )

    def app(self, proxy: Proxy, *, admin: AdminActions | None) -> web.Application:
        return create_app(
            proxy, admin=admin, admin_port=self.admin_port, admin_host=self.admin_host
        )


@dataclass
class Proxy:
    """Everything a request needs: the table, the breakers, the client session, metrics."""

    table: Table
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    admin_token: str | None = None
    access_log: AccessLog | None = None
    limits: Limits = field(default_factory=Limits)
    client_keys: ClientKeys | None = None  # None: no client key is asked for
    allowed_hosts: HostAllowlist = field(default_factory=HostAllowlist)
    # When the table's source last confirmed it reflects its resources (time.monotonic());
    # /readyz fails once that is older than stale_after seconds (None: never stale).
    fresh_at: float = field(default_factory=time.monotonic)
    stale_after: float | None = None
    active_requests: int = 0
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
        self.metrics.table_age.set_function(lambda: time.monotonic() - self.fresh_at)
        self.set_table(self.table)

    def table_age(self) -> float:
        """Seconds since the table's source last confirmed it is current."""
        return time.monotonic() - self.fresh_at

    def set_table(self, table: Table) -> None:
        self.table = table
        self._wires.clear()
        if self._client is not None:  # connections to upstreams that are gone
            self._client.prune({Endpoint.parse(t.spec.base_url) for t in table.targets.values()})
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
CLIENT = web.RequestKey("sluice_client", str)  # the calling client's name (with client keys)


def _host_refusal(request: web.Request) -> web.Response | None:
    """A Host (or a browser's Origin) the proxy does not answer to: DNS rebinding, or a web
    page reaching for a proxy on a developer's machine."""
    hosts = request.app[PROXY].allowed_hosts
    if not hosts.patterns:
        return None
    if not hosts.allows_host(request.headers.get("Host")):
        return error_response(
            421, "this proxy does not answer to that Host name (see --allowed-hosts)",
            "misdirected_request",
        )  # fmt: skip
    if not hosts.allows_origin(request.headers.get("Origin")):
        return error_response(
            403, "requests from that web origin are refused (see --allowed-hosts)", "forbidden"
        )
    return None


def _refusal(request: web.Request, proxy: Proxy) -> web.Response | None:
    """Why this API request may not be served at all, or None: the Host, or a missing or wrong
    client key (the client's name goes on the request)."""
    refused = _host_refusal(request)
    if refused is not None:
        return refused
    keys = proxy.client_keys
    if keys is not None:
        client = keys.client(presented_key(request.headers))
        if client is None:
            return error_response(
                401,
                "a valid client API key is required: 'Authorization: Bearer <key>' "
                "(the SDK's api_key) or 'x-api-key'",
                "invalid_api_key",
            )
        request[CLIENT] = client
    return None


def _hosts_only(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` behind the Host allowlist."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = _host_refusal(request)
        return refused if refused is not None else await handler(request)

    return guarded


def _guarded(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` behind the Host allowlist and the client keys."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = _refusal(request, request.app[PROXY])
        return refused if refused is not None else await handler(request)

    return guarded


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


def _parse(raw: bytes, limits: Limits) -> dict[str, Any] | web.Response:
    """The request body as JSON with a model name, or the 400 that says what is wrong. A key
    given twice at the top level is refused: the proxy routes by the value it parsed while the
    upstream gets the raw bytes, and parsers disagree on which of two values wins."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error_response(400, "the request body is not valid JSON", "invalid_request_error")
    if not isinstance(body, dict):
        return error_response(
            400, "the request body must be a JSON object", "invalid_request_error"
        )
    if b"\\" in raw or raw.count(b'"model"') != 1:  # escapes can spell a key twice, too
        try:
            pairs = json.loads(raw, object_pairs_hook=list)
        except (ValueError, RecursionError):  # what orjson took and json does not (deep nesting)
            return error_response(
                400, "the request body is not JSON this proxy can check", "invalid_request_error"
            )
        names = [name for name, _ in pairs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            return error_response(
                400, f"the request body has duplicate keys: {', '.join(twice)[:200]}",
                "invalid_request_error",
            )  # fmt: skip
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_response(400, "the request needs a 'model' string", "invalid_request_error")
    if len(model) > limits.max_model_length:
        return error_response(
            400,
            f"the model name is {len(model)} characters long; the limit is "
            f"{limits.max_model_length}",
            "invalid_request_error",
        )
    return body


async def _read_body(request: web.Request, limits: Limits) -> bytes | web.Response:
    """The whole body, within the size limit (413) and the time limit (408)."""
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        return error_response(
            415, "the request body must be JSON, sent with 'Content-Type: application/json'",
            "invalid_request_error",
        )  # fmt: skip
    try:
        async with asyncio.timeout(limits.request_body_timeout):
            return await request.read()
    except TimeoutError:
        response = error_response(
            408, f"the request body did not arrive within {limits.request_body_timeout:g}s",
            "request_timeout",
        )  # fmt: skip
        # Answer, then close: aiohttp would otherwise linger reading the rest of the body.
        response.force_close()
        with contextlib.suppress(ConnectionError):
            await write_bounded(request, response, None, limits.client_write_timeout)
        if request.transport is not None:
            request.transport.close()
        return response
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            413, f"the request body is over the limit of {limits.max_request_bytes} bytes",
            "request_too_large",
        )  # fmt: skip
    except RequestPayloadError as e:  # e.g. a Content-Encoding the body does not have
        return error_response(
            400,
            f"the request body cannot be read: {str(e).splitlines()[-1].strip()}",
            "invalid_request_error",
        )


async def handle_api(request: web.Request) -> web.StreamResponse:
    proxy = request.app[PROXY]
    started = time.perf_counter()
    record: dict[str, Any] = {"method": request.method, "path": request.path}
    route = "none"
    response: web.StreamResponse | None = None
    try:
        response = _refusal(request, proxy)
        if response is not None:
            return response
        if CLIENT in request:
            record["client"] = request[CLIENT]
        if proxy.active_requests >= proxy.limits.max_concurrent_requests:
            response = error_response(
                503, "this proxy replica is at its limit of concurrent requests; retry shortly",
                "overloaded", headers={"Retry-After": "1"},
            )  # fmt: skip
            return response
        proxy.active_requests += 1
        try:
            response, route = await _serve(request, proxy, record)
        finally:
            proxy.active_requests -= 1
        return response
    except ConnectionError:  # the client went away (or stopped reading: write_bounded)
        response = None
        return web.Response(status=499)  # never sent: there is nobody to send it to
    except Exception:
        log.exception("request %s %s failed inside the proxy", request.method, request.path)
        response = error_response(500, "the proxy failed on this request", "internal_error")
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


async def _serve(
    request: web.Request, proxy: Proxy, record: dict[str, Any]
) -> tuple[web.StreamResponse, str]:
    """Read and check the body, then the Exchange; a complete answer is written here, within
    the client write timeout. The response and the route label."""
    raw = await _read_body(request, proxy.limits)
    if isinstance(raw, web.Response):
        return raw, "none"
    body = _parse(raw, proxy.limits)
    if isinstance(body, web.Response):
        return body, "none"
    stream = bool(body.get("stream")) and request.path in STREAMABLE
    record.update(model=body["model"], stream=stream)
    response, route = await Exchange(proxy, request, body, raw, stream, record).run()
    if not response.prepared:
        await write_bounded(request, response, None, proxy.limits.client_write_timeout)
    return response, route


async def handle_ready(request: web.Request) -> web.Response:
    """Readiness: the routing table is current (its source confirmed it recently)."""
    proxy = request.app[PROXY]
    age = proxy.table_age()
    if proxy.stale_after is not None and age > proxy.stale_after:
        return web.Response(
            status=503,
            text=f"stale: the routing table was last confirmed {age:.0f}s ago "
            f"(limit {proxy.stale_after:g}s)\n",
        )
    return web.Response(text="ok")


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
    """Liveness: the process serves. (/readyz is the table, /health the upstreams.)"""
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
        refused = _host_refusal(request)
        if refused is not None:
            return refused
        presented = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(presented, f"Bearer {token}".encode()):
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


async def _reload_client_keys(app: web.Application) -> AsyncIterator[None]:
    """Client keys are read again when their file or mounted Secret changes (every 5 s): a
    rotated key works without a restart; keys that cannot be read leave the old ones in force."""
    keys = app[PROXY].client_keys

    async def reload_forever(keys: ClientKeys) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                if keys.reload_if_changed():
                    log.info("client keys reloaded from %s: %d keys", keys.path, len(keys))
            except AccessError as e:
                log.error("client keys changed but cannot be read; keeping the old ones: %s", e)

    if keys is None:
        yield
        return
    task = asyncio.create_task(reload_forever(keys))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    proxy = app[PROXY]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        auto_decompress=False,  # bodies pass through as the upstream encoded them
    ) as session:
        client = UpstreamClient(max_answer_bytes=proxy.limits.max_answer_bytes)
        proxy._session, proxy._client = session, client
        try:
            yield
        finally:
            await client.close()
            proxy._session = None
            proxy._client = None


def _admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/breakers", _admin_guard(handle_admin_list))
    app.router.add_post(
        "/admin/breakers/{namespace}/{name}/{action}", _admin_guard(handle_admin_action)
    )


def _admin_site(
    proxy: Proxy, admin: AdminActions | None, host: str, port: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context serving only the admin endpoints on their own port."""

    async def serve(_: web.Application) -> AsyncIterator[None]:
        app = web.Application()
        app[PROXY] = proxy
        if admin is not None:
            app[ADMIN_ACTIONS] = admin
        _admin_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("admin endpoints on %s:%d", host, port)
        yield
        await runner.cleanup()

    return serve


def create_app(
    proxy: Proxy,
    *,
    admin: AdminActions | None = None,
    admin_port: int | None = None,
    admin_host: str = "127.0.0.1",
) -> web.Application:
    """The proxy's app. Its cleanup context opens and closes the session to upstreams; add
    yours after it (they run in order). With ``admin_port`` the /admin endpoints are served on
    that port only, not on the app's."""
    app = web.Application(client_max_size=proxy.limits.max_request_bytes)
    app[PROXY] = proxy
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_flush_access_log)
    app.cleanup_ctx.append(_reload_client_keys)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, handle_api)
    app.router.add_get("/v1/models", _guarded(handle_models))
    app.router.add_get("/health", _hosts_only(handle_health))
    app.router.add_get("/healthz", handle_alive)
    app.router.add_get("/readyz", handle_ready)
    app.router.add_get("/metrics", handle_metrics)
    if admin_port is None:
        if admin is not None:
            app[ADMIN_ACTIONS] = admin
        _admin_routes(app)
    else:
        app.cleanup_ctx.append(_admin_site(proxy, admin, admin_host, admin_port))
    return app


class _Refused(asyncio.Protocol):
    """A connection over Limits.max_connections: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    limits: Limits,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve ``app`` on host:port until SIGINT or SIGTERM (or cancellation), then shut down
    gracefully. Like aiohttp's run_app, but with at most ``limits.max_connections`` client
    connections at once; ``ready`` is set once it listens."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.idle_timeout)
    await runner.setup()
    server = runner.server
    if server is None:
        raise RuntimeError("the app runner has no server")

    def connection() -> asyncio.Protocol:
        if len(server.connections) >= limits.max_connections:
            return _Refused()
        return server()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    listener = await loop.create_server(connection, host, port, reuse_address=True, backlog=1024)
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signum, stop.set)
    try:
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        listener.close()
        await runner.cleanup()
