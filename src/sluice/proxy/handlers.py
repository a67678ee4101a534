"""The proxy's endpoints: the API (through intake, the picker and an Exchange), health,
readiness, metrics and the admin actions. The request path, top to bottom:

1. :func:`handle_api`: accounting and the access log around everything below; the replica's
   concurrency limit.
2. ``intake``: Host and client key, content type, body, model name.
3. ``picking``: the plan, who may be tried in which order.
4. ``exchange``: attempts (``attempt``), failover, the answer.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.core import BreakerSnapshot, State
from sluice.proxy.admin import AdminAction, AdminActionError, AdminActions
from sluice.proxy.answers import error_response, in_client_shape, write_bounded
from sluice.proxy.attempt import Call
from sluice.proxy.exchange import Exchange
from sluice.proxy.intake import client_refusal, host_refusal, parse_body, read_body
from sluice.proxy.quotas import estimate_tokens
from sluice.proxy.reporting import OPERATOR_LINK
from sluice.proxy.state import Proxy
from sluice.resources import Ref

__all__ = ["ADMIN_ACTIONS", "PROXY", "admin_routes", "api_routes"]

log = logging.getLogger("sluice.proxy")

PROXY = web.AppKey("sluice_proxy", Proxy)
ADMIN_ACTIONS: web.AppKey[AdminActions] = web.AppKey("sluice_admin_actions")
STREAMABLE = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _hosts_only(handler: Handler) -> Handler:
    """``handler`` behind the Host allowlist."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = host_refusal(request, request.app[PROXY].allowed_hosts)
        return refused if refused is not None else await handler(request)

    return guarded


def _clients_only(handler: Handler) -> Handler:
    """``handler`` behind the Host allowlist and the client keys."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        proxy = request.app[PROXY]
        refused = host_refusal(request, proxy.allowed_hosts)
        if refused is None:
            refused, _ = client_refusal(request, proxy.client_keys)
        return refused if refused is not None else await handler(request)

    return guarded


async def handle_api(request: web.Request) -> web.StreamResponse:
    """Every API request: served, counted and written to the access log, whatever happens."""
    proxy = request.app[PROXY]
    started = time.perf_counter()
    record: dict[str, Any] = {"method": request.method, "path": request.path}
    route = "none"
    response: web.StreamResponse | None = None
    try:
        response = _refusal(request, proxy, record)
        if response is not None:
            response = in_client_shape(request.path, response)
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


def _refusal(request: web.Request, proxy: Proxy, record: dict[str, Any]) -> web.Response | None:
    """Who may call (the client's name goes in the record), and the replica's concurrency
    limit: the refusal, or None."""
    refused = host_refusal(request, proxy.allowed_hosts)
    if refused is None:
        refused, client = client_refusal(request, proxy.client_keys)
        if client is not None:
            record["client"] = client
    if refused is None and proxy.active_requests >= proxy.limits.max_concurrent_requests:
        refused = error_response(
            503, "this proxy replica is at its limit of concurrent requests; retry shortly",
            "overloaded", headers={"Retry-After": "1"},
        )  # fmt: skip
    return refused


async def _serve(
    request: web.Request, proxy: Proxy, record: dict[str, Any]
) -> tuple[web.StreamResponse, str]:
    """Read and check the body, plan, exchange; a complete answer is written here, in the shape
    of the client's API and within the client write timeout. The response and the route."""
    raw = await read_body(request, proxy.limits)
    route = "none"
    if not isinstance(raw, bytes):  # (not isinstance(.., web.Response): an ABC, and slow)
        response: web.StreamResponse = raw
    elif not isinstance(body := parse_body(raw, proxy.limits), dict):
        response = body
    else:
        stream = bool(body.get("stream")) and request.path in STREAMABLE
        record.update(model=body["model"], stream=stream)
        tokens = estimate_tokens(body, raw) if proxy.rate_limits.has_token_limits else 0
        plan = proxy.picker.plan(
            proxy.table, body["model"], request.headers, api=request.path, tokens=tokens
        )
        call = Call(
            request, body, raw, stream, record, proxy.client, proxy.breakers, proxy.load,
            proxy.metrics, proxy.limits, proxy.clock, proxy.usage, proxy.rate_limits,
        )  # fmt: skip
        response, route = await Exchange(call, plan).run(), plan.route
    if not response.prepared:
        response = in_client_shape(request.path, response)
        await write_bounded(request, response, None, proxy.limits.client_write_timeout)
    return response, route


async def handle_models(request: web.Request) -> web.Response:
    """The model names clients can ask for, in the shape of the client's SDK: Anthropic's for a
    request naming an ``anthropic-version`` (every model reaches ``/v1/messages``: translated
    where its upstream speaks OpenAI's format), else OpenAI's."""
    names = request.app[PROXY].table.models()
    if request.headers.get("anthropic-version"):
        data = [{"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}
                for n in names]  # fmt: skip
        first, last = (names[0], names[-1]) if names else (None, None)
        return web.json_response(
            {"data": data, "has_more": False, "first_id": first, "last_id": last}
        )
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "sluice"}
                for name in names
            ],
        }
    )


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


_STATE_NAMES = {State.CLOSED: "closed", State.OPEN: "open", State.HALF_OPEN: "half_open"}


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
                "state": _STATE_NAMES[state],
                "failures": breaker.failures,
                "forced": target.override is not None,
                "usage": proxy.usage.view(key, now),
                **proxy.rate_limits.view(key, now),
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
    body: dict[str, Any] = {"status": status, "upstreams": upstreams}
    link = request.app.get(OPERATOR_LINK)
    if link is not None:  # --report-to: is the operator answering, or is this fail-static?
        body["operator"] = link.view(time.monotonic())
    return web.json_response(body, status=503 if status == "unhealthy" else 200)


async def handle_alive(_: web.Request) -> web.Response:
    """Liveness: the process serves. (/readyz is the table, /health the upstreams.)"""
    return web.Response(text="ok")


async def handle_metrics(request: web.Request) -> web.Response:
    proxy = request.app[PROXY]
    return web.Response(
        body=generate_latest(proxy.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _admin_guard(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        proxy = request.app[PROXY]
        token = proxy.admin_token
        if not token:
            return error_response(
                403, "admin endpoints are disabled (no admin token configured)", "forbidden"
            )
        refused = host_refusal(request, proxy.allowed_hosts)
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


def _snapshot_json(snapshot: BreakerSnapshot) -> dict[str, Any]:
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
    key = Ref(request.match_info["namespace"], request.match_info["name"])
    if key not in proxy.table.targets:
        return error_response(404, f"no upstream {key}", "not_found")
    admin = request.app.get(ADMIN_ACTIONS)
    if admin is None:
        return error_response(501, "this proxy cannot change breakers", "not_implemented")
    try:
        action = AdminAction.parse(request.match_info["action"])
    except AdminActionError as e:
        return error_response(400, str(e), "invalid_request_error")
    await admin(key, action)
    breaker = proxy.breakers.get(key)
    return web.json_response(
        {
            "namespace": key.namespace,
            "name": key.name,
            "action": str(action),
            **_snapshot_json(breaker.snapshot()),
            "effective": str(breaker.state),
        }
    )


def api_routes(app: web.Application) -> None:
    for path in (
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
        "/v1/messages",
    ):  # fmt: skip
        app.router.add_post(path, handle_api)
    app.router.add_get("/v1/models", _clients_only(handle_models))
    app.router.add_get("/health", _hosts_only(handle_health))
    app.router.add_get("/healthz", handle_alive)
    app.router.add_get("/readyz", handle_ready)
    app.router.add_get("/metrics", handle_metrics)


def admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/breakers", _admin_guard(handle_admin_list))
    app.router.add_post(
        "/admin/breakers/{namespace}/{name}/{action}", _admin_guard(handle_admin_action)
    )
