"""``sluice proxy --kubernetes``: the routing table from a watch on the API server.

Upstreams, BreakerPolicies and ModelRoutes are listed, then watched; every change rebuilds the
table (a status change too: that is how the operator's breaker reaches every replica, within a
second). Secrets are read with ``get``, only those Upstreams name, and again every minute, so
the proxy needs no list or watch on Secrets. If the API server goes away the last table stays
in force and the watches retry with back-off. Admin actions patch the Upstream (override,
reset annotation), so every replica and the operator see them and they survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from aiohttp import web

from sluice.kube import Kube, KubeError
from sluice.proxy.server import AccessLog, Proxy, create_app
from sluice.proxy.table import Key, Table, build_table
from sluice.resources import parse
from sluice.resources.models import GROUP, VERSION, BreakerPolicy, ModelRoute, Upstream

__all__ = ["KubernetesOptions", "KubernetesSource", "build"]

log = logging.getLogger("sluice.proxy.kubernetes")

PLURALS = {"upstreams": "Upstream", "breakerpolicies": "BreakerPolicy", "modelroutes": "ModelRoute"}
RESET_ANNOTATION = "sluice.dev/reset"


@dataclass(frozen=True)
class KubernetesOptions:
    kubeconfig: Path | None = None
    namespace: str | None = None  # None: all namespaces
    host: str = "0.0.0.0"  # noqa: S104 - a Pod serves on its own IP
    port: int = 8080
    admin_token: str | None = None
    secret_ttl: float = 60.0
    default_policy: str = "default"
    access_log: AccessLog | None = None  # None: no access log


def _key(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or "default"), str(metadata.get("name"))


@dataclass
class KubernetesSource:
    kube: Kube
    proxy: Proxy
    options: KubernetesOptions
    objects: dict[str, dict[Key, dict[str, Any]]] = field(
        default_factory=lambda: {plural: {} for plural in PLURALS}
    )
    secrets: dict[Key, tuple[dict[str, str] | None, float]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _listed: set[str] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._watch(plural)) for plural in PLURALS]
        tasks.append(asyncio.create_task(self._rebuild_forever()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, plural: str) -> None:
        backoff = 0.5
        namespace = self.options.namespace
        while True:
            try:
                items, version = await self.kube.list_with_version(
                    GROUP, VERSION, plural, namespace
                )
                self.objects[plural] = {_key(item): item for item in items}
                self._listed.add(plural)
                self._changed.set()
                while True:  # watch from the list's version until it expires
                    async for kind, obj in self.kube.watch_objects(
                        GROUP, VERSION, plural, namespace, resource_version=version
                    ):
                        version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            self.objects[plural].pop(_key(obj), None)
                        else:
                            self.objects[plural][_key(obj)] = obj
                        self._changed.set()
                    backoff = 0.5
            except asyncio.CancelledError:
                raise
            except KubeError as e:
                if e.status != 410:  # 410: the version expired; list again at once
                    log.warning("watching %s failed (%s); serving the last known table", plural, e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            except Exception as e:  # the connection dropped, the server went away, ...
                log.warning("watching %s failed (%s); serving the last known table", plural, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _rebuild_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self.options.secret_ttl)
            self._changed.clear()
            await asyncio.sleep(0.02)  # let a burst of events land: one rebuild for all
            if self._listed != set(PLURALS):
                continue
            self.proxy.set_table(await self.build())
            self.synced.set()

    async def build(self) -> Table:
        resources: list[Upstream | BreakerPolicy | ModelRoute] = []
        statuses: dict[Key, dict[str, Any]] = {}
        problems: list[str] = []
        for plural, objects in self.objects.items():
            for key, obj in sorted(objects.items()):
                document = {k: v for k, v in obj.items() if k != "status"}
                try:
                    resources.append(parse(document))
                except (pydantic.ValidationError, ValueError) as e:
                    problems.append(f"{PLURALS[plural]} {key[0]}/{key[1]} is not usable: {e}")
                    continue
                if plural == "upstreams":
                    statuses[key] = obj.get("status") or {}
        secrets = await self._secrets(r for r in resources if isinstance(r, Upstream))
        table = build_table(
            resources, secrets, statuses=statuses, default_policy=self.options.default_policy
        )
        table.problems[:0] = problems
        return table

    async def _secrets(self, upstreams: Iterable[Upstream]) -> dict[Key, dict[str, str]]:
        now = time.monotonic()
        found: dict[Key, dict[str, str]] = {}
        for upstream in upstreams:
            credentials = upstream.spec.credentials
            if credentials is None:
                continue
            key = (upstream.metadata.namespace or "default", credentials.secret_ref.name)
            data, fetched = self.secrets.get(key, (None, -math.inf))
            if now - fetched >= self.options.secret_ttl:
                try:
                    data = await self.kube.secret_data(*key)
                except KubeError as e:
                    if e.status == 404:
                        data = None
                    else:  # keep the last value we had
                        log.warning("reading secret %s/%s: %s", key[0], key[1], e)
                self.secrets[key] = (data, now)
            if data is not None:
                found[key] = data
        return found


def build(options: KubernetesOptions) -> web.Application:
    """The proxy's app, fed by the watch; it starts serving once the first table is built."""
    proxy = Proxy(table=Table(), admin_token=options.admin_token, access_log=options.access_log)
    state: dict[str, Kube] = {}

    async def admin(key: Key, action: str) -> None:
        patches: dict[str, dict[str, Any]] = {
            "open": {"spec": {"breaker": {"override": "Open"}}},
            "close": {"spec": {"breaker": {"override": "Closed"}}},
            "auto": {"spec": {"breaker": {"override": None}}},
            "reset": {"metadata": {"annotations": {RESET_ANNOTATION: str(time.time())}}},
        }
        if action not in patches:
            raise ValueError(f"unknown action {action!r}: use open, close, auto or reset")
        await state["kube"].patch_object(
            GROUP, VERSION, "upstreams", namespace=key[0], name=key[1], patch=patches[action]
        )
        if action == "reset":  # the watch will not reset the local breaker: do it here too
            proxy.breakers.get(key).reset(proxy.clock(), message="reset by the admin endpoint")

    async def watching(app: web.Application) -> AsyncIterator[None]:
        kube = await Kube.connect(options.kubeconfig)
        state["kube"] = kube
        source = KubernetesSource(kube, proxy, options)
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

    app = create_app(proxy, admin=admin)
    app.cleanup_ctx.append(watching)
    return app
