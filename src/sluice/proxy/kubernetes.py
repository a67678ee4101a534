"""``sluice proxy --kubernetes``: the routing table from a watch on the API server.

Upstreams, BreakerPolicies and ModelRoutes are listed, then watched (a
:class:`~sluice.kube.Informer` for each); every change rebuilds the
table (a status change too: that is how the operator's breaker reaches every replica, within a
second). Secrets are read with ``get``, only those Upstreams name, and again every minute, so
the proxy needs no list or watch on Secrets. If the API server goes away the last table stays
in force and the watches retry with back-off. Admin actions patch the Upstream (override,
reset annotation), so every replica and the operator see them and they survive restarts.

Nothing stops the source but cancellation: a watch, the rebuild or a Secret read that fails is
logged and tried again with back-off, and the last table serves meanwhile. While every watch is
synced and the last rebuild succeeded the source sets ``proxy.fresh_at`` every
``fresh_every`` seconds; when it stops, readiness fails ``stale_after`` seconds later.

An Upstream is served only with its credentials: one whose Secret or key was never found, or
whose value is not usable text, is left out of the table (with a problem saying why), so its
models fail over to the others instead of going out unauthenticated. Once read, a value is
kept when a later read fails or finds the Secret gone (a rotation in progress, an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydantic
from aiohttp import web

from sluice.kube import Backoff, Informer, Kube, KubeError, NotFound, ObjectSource
from sluice.proxy.accesslog import AccessLog
from sluice.proxy.admin import AdminAction
from sluice.proxy.console import CLUSTER
from sluice.proxy.reporting import (
    OPERATOR_LINK,
    OperatorLink,
    ProxyReplica,
    ReporterOptions,
    reporting,
)
from sluice.proxy.server import Serving
from sluice.proxy.state import Proxy
from sluice.proxy.table import Key, Table, build_table
from sluice.resources import RESET_ANNOTATION, parse
from sluice.resources.models import GROUP, VERSION, BreakerPolicy, ModelRoute, Upstream
from sluice.resources.status import breaker_view

__all__ = ["Backoff", "ClusterApi", "KubernetesOptions", "KubernetesSource", "build"]

log = logging.getLogger("sluice.proxy.kubernetes")

PLURALS = {"upstreams": "Upstream", "breakerpolicies": "BreakerPolicy", "modelroutes": "ModelRoute"}


@dataclass(frozen=True)
class KubernetesOptions:
    kubeconfig: Path | None = None
    namespace: str | None = None  # None: all namespaces
    host: str = "0.0.0.0"  # noqa: S104 - a Pod serves on its own IP
    port: int = 8080
    admin_token: str | None = None
    secret_ttl: float = 60.0
    secret_timeout: float = 10.0  # one Secret read; past it the last value stays
    default_policy: str = "default"
    access_log: AccessLog | None = None  # None: no access log
    backoff: float = 0.5  # the first retry after a failure, doubling up to max_backoff
    max_backoff: float = 30.0
    fresh_every: float = 1.0  # how often a healthy source confirms the table is current
    stale_after: float | None = 120.0  # readiness fails past it without confirmation
    serving: Serving = field(default_factory=Serving)  # who may call, limits, the admin port
    report: ReporterOptions | None = None  # None: no reports to the operator


class ClusterApi(ObjectSource, Protocol):
    """The calls the source makes (:class:`~sluice.kube.Kube` has them): its informers' list
    and watch, and Secret reads."""

    async def secret_data(self, namespace: str, name: str) -> dict[str, str | bytes]: ...


@dataclass
class SecretState:
    """What the source knows of one Secret an Upstream names."""

    retry: Backoff
    values: dict[str, str] = field(default_factory=dict)  # each key's last text value read
    not_text: set[str] = field(default_factory=set)  # keys whose value, last read, is bytes
    keys: frozenset[str] | None = None  # keys the last answer had (404: none); None: no answer
    error: str | None = None  # why the last read failed, if it did
    due: float = -math.inf  # when to read it again


def _describe(e: BaseException) -> str:
    """``TimeoutError()`` says nothing by itself: the type always leads. The API server's
    refusals read ``KubeError: 410: ...`` whatever their subclass: the status says which."""
    name = KubeError.__name__ if isinstance(e, KubeError) and e.status else type(e).__name__
    text = str(e)
    return f"{name}: {text}" if text else name


def _status(key: Key, obj: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """An Upstream's status for the table, or none if the lenient reader would ignore its
    breaker for a reason worth a problem (an openUntil that is not a time: the schema says
    only "string"; one bad value must not stop every rebuild)."""
    status: dict[str, Any] = obj.get("status") or {}
    ignored: list[str] = []
    breaker_view(status, ignored)
    problems.extend(f"Upstream {key[0]}/{key[1]}: {problem}" for problem in ignored)
    return {} if ignored else status


def _watch_failed(plural: str, error: BaseException, delay: float) -> None:
    log.warning(
        "watching %s failed (%s); serving the last known table; retrying in %.1fs",
        plural,
        _describe(error),
        delay,
    )


@dataclass
class KubernetesSource:
    kube: ClusterApi
    proxy: Proxy
    options: KubernetesOptions
    secrets: dict[Key, SecretState] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)  # the first table is in
    informers: dict[str, Informer] = field(init=False)  # by plural, in PLURALS' order
    _built: bool = False  # the last rebuild succeeded
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.informers = {
            plural: Informer(
                self.kube,
                GROUP,
                VERSION,
                plural,
                namespace=self.options.namespace,
                backoff=self.options.backoff,
                max_backoff=self.options.max_backoff,
                on_change=self._changed.set,
                on_failure=functools.partial(_watch_failed, plural),
            )
            for plural in PLURALS
        }

    async def run(self) -> None:
        tasks = [asyncio.create_task(informer.run()) for informer in self.informers.values()]
        tasks.append(asyncio.create_task(self._rebuild_forever()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _backoff(self) -> Backoff:
        return Backoff(self.options.backoff, self.options.max_backoff)

    @property
    def healthy(self) -> bool:
        """Every watch is synced and the last rebuild succeeded: the table is current."""
        return self._built and all(i.synced for i in self.informers.values())

    def _confirm_fresh(self) -> None:
        if self.healthy:
            self.proxy.fresh_at = time.monotonic()

    def _secrets_due(self) -> float:
        return min((secret.due for secret in self.secrets.values()), default=math.inf)

    async def _rebuild_forever(self) -> None:
        retry = self._backoff()
        failing = False
        while True:
            if failing:  # events that arrive meanwhile are in the next attempt
                await asyncio.sleep(retry.delay())
            else:
                now = time.monotonic()
                wake = min(now + self.options.fresh_every, self._secrets_due())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, wake - now))
                if not self._changed.is_set() and time.monotonic() < self._secrets_due():
                    self._confirm_fresh()  # nothing changed: the table is still current
                    continue
            self._changed.clear()
            await asyncio.sleep(0.02)  # let a burst of events land: one rebuild for all
            if not all(i.listed for i in self.informers.values()):
                continue
            try:
                table = await self.build()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._built = False
                failing = True
                log.warning(
                    "rebuilding the routing table failed (%s); serving the last known table",
                    _describe(e),
                    exc_info=True,
                )
                continue
            if failing:
                log.info("rebuilding the routing table works again")
            failing = False
            retry.reset()
            self._built = True
            if table != self.proxy.table:  # a Secret refresh often changes nothing
                self.proxy.set_table(table)
            self.synced.set()
            self._confirm_fresh()

    async def build(self) -> Table:
        resources: list[Upstream | BreakerPolicy | ModelRoute] = []
        statuses: dict[Key, dict[str, Any]] = {}
        problems: list[str] = []
        for plural, informer in self.informers.items():
            for key, obj in sorted(informer.objects.items()):
                document = {k: v for k, v in obj.items() if k != "status"}
                try:
                    resources.append(parse(document))
                except (pydantic.ValidationError, ValueError) as e:
                    problems.append(f"{PLURALS[plural]} {key[0]}/{key[1]} is not usable: {e}")
                    continue
                if plural == "upstreams":
                    statuses[key] = _status(key, obj, problems)
        secrets, unserved = await self._credentials(
            [r for r in resources if isinstance(r, Upstream)], problems
        )
        served = [
            r
            for r in resources
            if not isinstance(r, Upstream)
            or (r.metadata.namespace or "default", r.metadata.name) not in unserved
        ]
        table = build_table(
            served, secrets, statuses=statuses, default_policy=self.options.default_policy
        )
        table.problems[:0] = problems
        return table

    async def _credentials(
        self, upstreams: Iterable[Upstream], problems: list[str]
    ) -> tuple[dict[Key, dict[str, str]], set[Key]]:
        """Secrets' text values by (namespace, name), and the Upstreams not to serve: their
        credentials were never found, or are not text a header can carry. A Secret is read
        again after secret_ttl; sooner, with back-off, while it fails or lacks what an Upstream
        needs (so an Upstream joins soon after its Secret is created or fixed)."""
        now = time.monotonic()
        named = [
            (u, u.metadata.namespace or "default", u.spec.credentials.secret_ref)
            for u in upstreams
            if u.spec.credentials is not None
        ]
        read: set[Key] = set()
        for _, namespace, ref in named:
            secret = self.secrets.setdefault((namespace, ref.name), SecretState(self._backoff()))
            if now >= secret.due:
                read.add((namespace, ref.name))
        # At once: a slow API server costs one secret_timeout, not one per Secret.
        await asyncio.gather(*(self._read(key, self.secrets[key]) for key in read))
        found: dict[Key, dict[str, str]] = {}
        unserved: set[Key] = set()
        lacking: set[Key] = set()
        for upstream, namespace, ref in named:
            secret_key = (namespace, ref.name)
            secret = self.secrets[secret_key]
            found[secret_key] = secret.values
            problem = _credentials_problem(secret, ref.key)
            where = (
                f'Upstream {namespace}/{upstream.metadata.name}: credentials secret "{ref.name}" '
                f'key "{ref.key}"'
            )
            if problem is not None:
                problems.append(f"{where} {problem}")
                lacking.add(secret_key)
                unserved.add((namespace, upstream.metadata.name))
            elif secret.keys is not None and ref.key not in secret.keys:
                problems.append(f"{where} not found; using the last value read")
        for gone in set(self.secrets) - set(found):  # no Upstream names it any more
            del self.secrets[gone]
        for secret_key in read:
            secret = self.secrets[secret_key]
            if secret.error is None and secret_key not in lacking:
                secret.retry.reset()
                secret.due = now + self.options.secret_ttl
                continue
            delay = min(secret.retry.delay(), self.options.secret_ttl)
            secret.due = now + delay
            if secret.error is not None:
                log.warning(
                    "reading secret %s/%s failed (%s); keeping the last value read; "
                    "retrying in %.1fs",
                    secret_key[0],
                    secret_key[1],
                    secret.error,
                    delay,
                )
        return found, unserved

    async def _read(self, key: Key, secret: SecretState) -> None:
        """Read the Secret into ``secret``; on a failure keep what it had and say why."""
        data: dict[str, str | bytes]
        try:
            data = await asyncio.wait_for(
                self.kube.secret_data(*key), timeout=self.options.secret_timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not isinstance(e, NotFound):
                secret.error = _describe(e)
                return
            data = {}  # no such Secret: an answer, not a failure
        for name, value in data.items():
            if isinstance(value, bytes):
                secret.values.pop(name, None)
                secret.not_text.add(name)
            else:
                secret.values[name] = value
                secret.not_text.discard(name)
        secret.not_text &= set(data)
        secret.keys = frozenset(data)
        secret.error = None


def _credentials_problem(secret: SecretState, key: str) -> str | None:
    """Why an Upstream naming this Secret's ``key`` cannot be served, if it cannot."""
    if key in secret.not_text:
        return "is not UTF-8 text; the upstream is not served until it is"
    value = secret.values.get(key)
    if value is not None:
        if any(c in value.strip() for c in "\r\n"):  # `echo key | base64` is stripped
            return "contains a line break; the upstream is not served until it does not"
        return None
    if secret.keys is not None:
        return "not found; the upstream is not served until it exists"
    return f"could not be read ({secret.error}); the upstream is not served until it is"


def build(options: KubernetesOptions) -> web.Application:
    """The proxy's app, fed by the watch; it starts serving once the first table is built."""
    proxy = options.serving.proxy(
        Table(), admin_token=options.admin_token, access_log=options.access_log
    )
    proxy.stale_after = options.stale_after
    state: dict[str, Any] = {}  # the client and the source, once watching has started

    async def admin(key: Key, action: AdminAction) -> None:
        """Patch the Upstream, so every replica and the operator follow (and it lasts)."""
        if action is AdminAction.RESET:
            patch: dict[str, Any] = {
                "metadata": {"annotations": {RESET_ANNOTATION: str(time.time())}}
            }
        else:
            override = action.override
            patch = {"spec": {"breaker": {"override": override and override.value}}}
        await state["kube"].patch_object(
            GROUP, VERSION, "upstreams", namespace=key[0], name=key[1], patch=patch
        )
        if action is AdminAction.RESET:  # the watch will not reset the local breaker: here too
            proxy.breakers.get(key).reset(proxy.clock(), message="reset by the admin endpoint")

    async def watching(app: web.Application) -> AsyncIterator[None]:
        kube = await Kube.connect(options.kubeconfig)
        state["kube"] = kube
        source = state["source"] = KubernetesSource(kube, proxy, options)
        task = asyncio.create_task(source.run())
        synced = asyncio.create_task(source.synced.wait())
        await asyncio.wait({task, synced}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raise what stopped it
        log.info(
            "watching %s: %d upstreams",
            options.namespace or "all namespaces",
            len(proxy.table.targets),
        )
        yield
        task.cancel()
        synced.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kube.close()

    app = options.serving.app(proxy, admin=admin)
    app[CLUSTER] = _ConsoleView(state)
    app.cleanup_ctx.append(watching)
    if options.report is not None:
        link = app[OPERATOR_LINK] = OperatorLink()
        app.cleanup_ctx.append(reporting(ProxyReplica(proxy), options.report, proxy.metrics, link))
    return app


@dataclass
class _ConsoleView:
    """What the console reads from the cluster: status from the watch, Events on request."""

    state: dict[str, Any]  # "kube" and "source", once watching has started

    def status(self, key: Key) -> dict[str, Any] | None:
        source = self.state.get("source")
        found = source.informers["upstreams"].objects.get(key) if source else None
        return None if found is None else found.get("status")

    async def events(self, key: Key) -> list[dict[str, Any]]:
        kube: Kube = self.state["kube"]
        return await kube.list_events(key[0], kind="Upstream", name=key[1])
