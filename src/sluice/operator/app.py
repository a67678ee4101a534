"""``sluice operator``: win the leader Lease, then let kopf watch Upstreams and BreakerPolicies
and run a worker per Upstream.

Kopf does the watching (list, watch, reconnects, back-off), logs in with the same credentials
as our own client, and calls :class:`Operator` with every event. Kopf's own Event posting and
peering are off: the workers post Events themselves, and the Lease decides who works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.kube import Kube
from sluice.operator.leader import LeadershipLost, LeaseElector
from sluice.operator.metrics import OperatorMetrics
from sluice.operator.reports import (
    ADDRESS_ANNOTATION,
    ReportBook,
    ReportEndpoint,
    TokenCheck,
    serve_reports,
)
from sluice.operator.worker import Context, PolicyBook, UpstreamWorker
from sluice.resources import Ref
from sluice.resources.models import GROUP, VERSION

__all__ = ["Operator", "OperatorOptions", "run"]

log = logging.getLogger("sluice.operator")


@dataclass(frozen=True)
class OperatorOptions:
    kubeconfig: Path | None = None
    namespace: str | None = None  # None: all namespaces
    metrics_address: str = "0.0.0.0"  # noqa: S104 - a Pod serves its metrics on its own IP
    metrics_port: int = 9090
    lease_namespace: str = "default"
    lease_name: str = "sluice-operator"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = f"{socket.gethostname()}-{os.getpid()}"
    default_policy: str = "default"
    secret_ttl: float = 60.0
    # The report endpoint (None: off). Its address as proxies reach this pod (host:port),
    # written on the Lease while leading, so a standby can send a replica there.
    report_port: int | None = 9091
    report_host: str = "0.0.0.0"  # noqa: S104 - the proxies reach it on the Pod's IP
    report_address: str | None = None
    report_interval: float = 1.0
    # Who may report: the proxy's ServiceAccount, as TokenReview names it.
    report_users: frozenset[str] = frozenset({"system:serviceaccount:default:sluice-proxy"})


class Operator:
    """Keeps one worker per Upstream and the book of BreakerPolicies in step with events."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.workers: dict[Ref, UpstreamWorker] = {}

    async def upstream_event(self, kind: str | None, obj: dict[str, Any]) -> None:
        key = Ref.of(obj)  # Upstreams are namespaced: the API server always says which
        if kind == "DELETED":
            worker = self.workers.pop(key, None)
            if worker is not None:
                await worker.stop()
        elif key in self.workers:
            self.workers[key].observe(obj)
        else:
            worker = UpstreamWorker(self.ctx, key.namespace, key.name, obj)
            self.workers[key] = worker
            worker.start()
        self.ctx.metrics.upstreams.set(len(self.workers))

    def policy_event(self, kind: str | None, obj: dict[str, Any]) -> None:
        namespace, name = Ref.of(obj)
        if kind == "DELETED":
            self.ctx.policies.remove(namespace, name)
        else:
            self.ctx.policies.put(namespace, name, obj.get("spec") or {})
        for (worker_namespace, _), worker in self.workers.items():
            if worker_namespace == namespace:
                worker.policies_changed()

    async def stop_all(self) -> None:
        workers, self.workers = list(self.workers.values()), {}
        await asyncio.gather(*(w.stop() for w in workers))


def registry_for(operator: Operator, kube: Kube) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        c = await kube.connection()
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_path,
            certificate_path=c.certificate_path,
            private_key_path=c.private_key_path,
            scheme=c.scheme,
            token=c.token,
            insecure=c.insecure,
        )

    @kopf.on.event(GROUP, VERSION, "upstreams", registry=registry)
    async def upstreams(event: kopf.RawEvent, **_: Any) -> None:
        await operator.upstream_event(event.get("type"), dict(event["object"]))

    @kopf.on.event(GROUP, VERSION, "breakerpolicies", registry=registry)
    async def policies(event: kopf.RawEvent, **_: Any) -> None:
        operator.policy_event(event.get("type"), dict(event["object"]))

    return registry


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # workers post their own Events, one per transition
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace listing: least privilege
    settings.watching.server_timeout = 300
    return settings


async def _metrics_server(metrics: OperatorMetrics, address: str, port: int) -> web.AppRunner:
    async def serve_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    return runner


def _handle_signals(shutdown: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)


async def run(options: OperatorOptions) -> int:
    """Run until SIGTERM/SIGINT (0) or until leadership is lost (1)."""
    metrics = OperatorMetrics()
    metrics_runner = await _metrics_server(metrics, options.metrics_address, options.metrics_port)
    shutdown = asyncio.Event()
    _handle_signals(shutdown)
    try:
        async with await Kube.connect(options.kubeconfig) as kube:
            elector = LeaseElector(
                kube,
                options.lease_namespace,
                options.lease_name,
                options.identity,
                lease_duration=options.lease_duration,
                renew_deadline=options.renew_deadline,
                retry_period=options.retry_period,
                annotations={ADDRESS_ANNOTATION: options.report_address}
                if options.report_address
                else {},
            )
            reports = ReportEndpoint(TokenCheck(kube, options.report_users), elector, metrics)
            async with _reports_served(reports, options):
                return await _elect_and_lead(
                    options, kube, elector, metrics, reports=reports, shutdown=shutdown
                )
    finally:
        await metrics_runner.cleanup()


@contextlib.asynccontextmanager
async def _reports_served(reports: ReportEndpoint, options: OperatorOptions) -> AsyncIterator[None]:
    """The report endpoint, on every replica (a standby says who leads), while inside."""
    if options.report_port is None:
        yield
        return
    runner = await serve_reports(reports, options.report_host, options.report_port)
    try:
        yield
    finally:
        await runner.cleanup()


async def _elect_and_lead(
    options: OperatorOptions,
    kube: Kube,
    elector: LeaseElector,
    metrics: OperatorMetrics,
    *,
    reports: ReportEndpoint,
    shutdown: asyncio.Event,
) -> int:
    """Wait for the Lease (0 if shut down first), then lead until the end."""
    acquiring = asyncio.create_task(elector.acquire())
    stopping = asyncio.create_task(shutdown.wait())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not acquiring.done():
        acquiring.cancel()
        return 0
    stopping.cancel()
    acquiring.result()
    metrics.leader.set(1)
    try:
        return await _lead(options, kube, elector, metrics, reports=reports, shutdown=shutdown)
    finally:
        reports.book = None
        metrics.leader.set(0)
        await elector.release()


async def _lead(
    options: OperatorOptions,
    kube: Kube,
    elector: LeaseElector,
    metrics: OperatorMetrics,
    *,
    reports: ReportEndpoint,
    shutdown: asyncio.Event,
) -> int:
    async with aiohttp.ClientSession() as session:
        ctx = Context(
            kube=kube,
            session=session,
            metrics=metrics,
            policies=PolicyBook(),
            identity=options.identity,
            default_policy=options.default_policy,
            secret_ttl=options.secret_ttl,
        )
        # Policies first, so no Upstream is judged "policy not found" for a moment at start.
        for policy in await kube.list_objects(GROUP, VERSION, "breakerpolicies", options.namespace):
            namespace, name = Ref.of(policy)
            ctx.policies.put(namespace, name, policy.get("spec") or {})
        operator = Operator(ctx)
        reports.book = ReportBook(
            operator.workers, options.identity, interval=options.report_interval
        )
        stop_flag = asyncio.Event()
        kopf_task = await _start_kopf(operator, kube, options, stop_flag)
        _handle_signals(shutdown)
        holding = asyncio.create_task(elector.hold())
        stopping = asyncio.create_task(shutdown.wait())
        done, _ = await asyncio.wait(
            {kopf_task, holding, stopping}, return_when=asyncio.FIRST_COMPLETED
        )
        stop_flag.set()
        for task in (holding, stopping):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await kopf_task
        await operator.stop_all()
        return _exit_code(done, kopf_task=kopf_task, holding=holding, shutdown=shutdown)


async def _start_kopf(
    operator: Operator, kube: Kube, options: OperatorOptions, stop_flag: asyncio.Event
) -> asyncio.Task[None]:
    """Kopf running (ready, or already stopped), until ``stop_flag``."""
    ready_flag = asyncio.Event()
    kopf_task = asyncio.create_task(
        kopf.operator(
            registry=registry_for(operator, kube),
            settings=kopf_settings(),
            standalone=True,
            clusterwide=options.namespace is None,
            namespaces=[options.namespace] if options.namespace else (),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    )
    # kopf installs its own SIGINT/SIGTERM handlers (and then SIGKILLs itself after a
    # timeout); the caller takes them back once it is ready, so a signal stops kopf through
    # stop_flag and we can still release the Lease.
    ready = asyncio.create_task(ready_flag.wait())
    await asyncio.wait({ready, kopf_task}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    return kopf_task


def _exit_code(
    done: set[asyncio.Task[Any]],
    *,
    kopf_task: asyncio.Task[None],
    holding: asyncio.Task[None],
    shutdown: asyncio.Event,
) -> int:
    """0 after a shutdown; 1 when leadership was lost or kopf stopped on its own."""
    if holding in done:
        error = holding.exception()
        log.error("stepping down: %s", error)
        if isinstance(error, LeadershipLost):
            return 1
        raise error if error is not None else RuntimeError("lease renewal stopped")
    if kopf_task in done and not shutdown.is_set():
        log.error("kopf stopped unexpectedly")
        return 1
    return 0
