"""``sluice proxy --manifests PATH``: the proxy with no cluster.

The routing table comes from the same manifests you would ``kubectl apply``; the breakers and
the probes run in-process (each Upstream's probe feeds its breaker, as the operator's would).

Reloading: the files are checked every ``reload_interval`` and read again once a change has
held still for one check (the same names, sizes and modification times twice in a row), so a
file caught while an editor or ``cp`` is writing it is never served half-way; if they change
while being read, they are read again at a later check. A change that does not load is
logged and the last good table stays in force.

Admin actions (``POST /admin/breakers/{namespace}/{name}/{open|close|auto}``) work as
patching ``spec.breaker.override`` does in a cluster: the admin's override replaces the one
in the files, in the routing table itself, so admission, ``/health`` and the metrics agree.
It lasts until the next admin action for that upstream, a restart, or a reload in which that
upstream's ``spec.breaker.override`` in the files differs from what it was at the admin's
action (whoever spoke last wins); other changes to the files leave it in force. An upstream
removed from the files forgets it. ``reset`` is a one-off: it clears the breaker's counters
and is not remembered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from sluice.core import State
from sluice.core.policy import parse_duration
from sluice.probe import probe
from sluice.proxy import manifests
from sluice.proxy.accesslog import AccessLog
from sluice.proxy.admin import AdminAction
from sluice.proxy.server import Serving
from sluice.proxy.state import Proxy
from sluice.proxy.table import Key, Table, Target

__all__ = ["StandaloneOptions", "build"]

log = logging.getLogger("sluice.proxy")

Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class StandaloneOptions:
    paths: tuple[Path, ...]
    admin_token: str | None = None
    reload_interval: float = 2.0
    default_policy: str = "default"
    access_log: AccessLog | None = None  # None: no access log
    serving: Serving = field(default_factory=Serving)  # who may call, limits, the admin port


def _with_override(target: Target, override: State | None) -> Target:
    spec = target.spec
    value = None if override is None else override.value
    breaker = spec.breaker.model_copy(update={"override": value})
    return dataclasses.replace(target, spec=spec.model_copy(update={"breaker": breaker}))


class _Configuration:
    """The last good table from the files, and the admin's overrides laid over it: what the
    proxy serves is always ``effective()``, the one place the override is decided."""

    def __init__(self, proxy: Proxy, files: Table) -> None:
        self.proxy = proxy
        self.files = files
        # Per upstream: the admin's override, and the files' override when it was given.
        self.admin: dict[Key, tuple[State | None, State | None]] = {}

    def effective(self) -> Table:
        targets = dict(self.files.targets)
        for key, (override, _) in self.admin.items():
            targets[key] = _with_override(targets[key], override)
        # A new table: its plans hold Targets, so they must not be shared with the old one.
        return dataclasses.replace(self.files, targets=targets, _plans={})

    def reloaded(self, files: Table) -> None:
        for key, (_, when_given) in list(self.admin.items()):
            target = files.targets.get(key)
            if target is None or target.override is not when_given:
                del self.admin[key]  # removed, or the files changed it since: they win
                if target is not None:
                    log.info(
                        "breaker %s/%s: spec.breaker.override changed in the files; "
                        "it replaces the admin's override",
                        *key,
                    )
        self.files = files
        self.proxy.set_table(self.effective())

    async def admin_action(self, key: Key, action: AdminAction) -> None:
        if action is AdminAction.RESET:
            self.proxy.breakers.get(key).reset(
                self.proxy.clock(), message="reset by the admin endpoint"
            )
            return
        self.admin[key] = (action.override, self.files.targets[key].override)
        table = self.effective()
        table.problems = []  # logged when the files were loaded; nothing new to say
        self.proxy.set_table(table)


async def _probe_forever(proxy: Proxy, key: Key) -> None:
    while True:
        target = proxy.table.targets.get(key)
        if target is None or target.spec.probe is None:
            return
        try:
            result = await probe(
                proxy.session, target.spec, api_key=target.api_key, policy=target.policy
            )
            with contextlib.suppress(KeyError):  # removed while probing
                proxy.breakers.get(key).record_probe(result.outcome, proxy.clock())
        except Exception:  # a bug here must not end this upstream's probes for good
            log.exception("probe of %s/%s failed unexpectedly; probing again later", *key)
        await asyncio.sleep(parse_duration(target.spec.probe.interval))


class _Probes:
    """One probe task per probed upstream, restarted when the table changes."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.tasks: dict[Key, asyncio.Task[None]] = {}

    def sync(self) -> None:
        wanted = {k for k, t in self.proxy.table.targets.items() if t.spec.probe is not None}
        for key in set(self.tasks) - wanted:
            self.tasks.pop(key).cancel()
        for key in wanted:
            task = self.tasks.get(key)
            if task is None or task.done():
                self.tasks[key] = asyncio.create_task(_probe_forever(self.proxy, key))

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()


async def _reload_forever(
    configuration: _Configuration, probes: _Probes, options: StandaloneOptions, loaded: Signature
) -> None:
    """Reload once a change has been seen at two checks in a row (see the module's doc)."""
    pending: Signature | None = None  # a change seen once: maybe still being written
    while True:
        await asyncio.sleep(options.reload_interval)
        try:
            current = manifests.signature(options.paths)
            if current == loaded:
                pending = None
                configuration.proxy.fresh_at = time.monotonic()  # served what the files say
                continue
            if current != pending:
                pending = current
                continue
            try:
                table = manifests.load(options.paths, default_policy=options.default_policy)
            except (manifests.ManifestError, OSError):
                if manifests.signature(options.paths) != current:
                    continue  # written while being read: not an error yet
                loaded, pending = current, None  # said once; the next change is tried again
                raise
            if manifests.signature(options.paths) != current:
                continue  # written while being read: wait for it to hold still again
            loaded, pending = current, None
            configuration.reloaded(table)
            configuration.proxy.fresh_at = time.monotonic()
            probes.sync()
            log.info("reloaded %d upstreams, %d routes", len(table.targets), len(table.routes))
        except (manifests.ManifestError, OSError) as e:
            log.error("manifests changed but cannot be loaded; keeping the last good ones: %s", e)
        except Exception:  # a bug here must not end reloading for good
            log.exception("reloading the manifests failed; keeping the last good ones")


def build(options: StandaloneOptions) -> web.Application:
    """The app: the proxy, plus in-process probes and reloading while it runs. Raises
    ManifestError if the files cannot be served."""
    loaded = manifests.signature(options.paths)  # before reading: a change meanwhile reloads
    table = manifests.load(options.paths, default_policy=options.default_policy)
    proxy = options.serving.proxy(
        table, admin_token=options.admin_token, access_log=options.access_log
    )
    configuration = _Configuration(proxy, table)

    async def background(app: web.Application) -> AsyncIterator[None]:
        probes = _Probes(proxy)
        probes.sync()
        reloading = asyncio.create_task(_reload_forever(configuration, probes, options, loaded))
        yield
        reloading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloading
        await probes.stop()

    app = options.serving.app(proxy, admin=configuration.admin_action)
    app.cleanup_ctx.append(background)  # after the client session the probes use
    return app
