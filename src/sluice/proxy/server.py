"""The proxy's app and its server: what runs, and for how long.

:func:`create_app` builds the aiohttp app (the endpoints are in ``handlers``; the request path
is drawn there) with the start/stop pairs around it: the client to upstreams, the access log's
flushing, the client keys' reloading, the admin port. :func:`serve` runs it with a cap on
client connections. :class:`Serving` is what both modes share about serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from sluice.proxy.access import AccessError, ClientKeys, HostAllowlist
from sluice.proxy.accesslog import AccessLog
from sluice.proxy.admin import AdminActions
from sluice.proxy.client import UpstreamClient
from sluice.proxy.console import CLUSTER, console_routes
from sluice.proxy.handlers import ADMIN_ACTIONS, PROXY, admin_routes, api_routes
from sluice.proxy.limits import Limits
from sluice.proxy.state import Proxy
from sluice.proxy.table import Table

__all__ = ["Serving", "create_app", "serve", "tune_gc"]

log = logging.getLogger("sluice.proxy")


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


def _admin_site(
    proxy: Proxy, admin: AdminActions | None, host: str, port: int
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context serving only the admin endpoints on their own port."""

    async def serve(main: web.Application) -> AsyncIterator[None]:
        app = web.Application()
        app[PROXY] = proxy
        if admin is not None:
            app[ADMIN_ACTIONS] = admin
        if CLUSTER in main:  # what the console reads from the cluster, in --kubernetes mode
            app[CLUSTER] = main[CLUSTER]
        admin_routes(app)
        console_routes(app)
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
    yours after it (they run in order). With ``admin_port`` the /admin endpoints and the
    console (/ui) are served on that port only, not on the app's."""
    app = web.Application(client_max_size=proxy.limits.max_request_bytes)
    app[PROXY] = proxy
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_flush_access_log)
    app.cleanup_ctx.append(_reload_client_keys)
    api_routes(app)
    if admin_port is None:
        if admin is not None:
            app[ADMIN_ACTIONS] = admin
        admin_routes(app)
        console_routes(app)  # the console goes where /admin goes
    else:
        app.cleanup_ctx.append(_admin_site(proxy, admin, admin_host, admin_port))
    return app


# Objects a request holds across its awaits, times the requests in flight, easily pass
# CPython's default 700: it then collected the young generation every ~50 requests and the
# whole heap every few thousand (45 ms each, in a process whose modules and table are large and
# live for ever). Measured with bench/gateways.py --scenarios before-after.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Once the app is set up: what exists now lives as long as the process, so full
    collections stop scanning it (gc.freeze), and the young generation is collected every
    GC_YOUNG_THRESHOLD allocations instead of 700."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


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
    tune: bool = False,
) -> None:
    """Serve ``app`` on host:port until SIGINT or SIGTERM (or cancellation), then shut down
    gracefully. Like aiohttp's run_app, but with at most ``limits.max_connections`` client
    connections at once; ``ready`` is set once it listens. ``tune``: the process is the proxy's
    own, so its garbage collector is tuned for it (:func:`tune_gc`)."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.idle_timeout)
    await runner.setup()
    if tune:
        tune_gc()
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
