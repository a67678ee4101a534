"""`sluice proxy --kubernetes`'s source against a fake API whose calls fail on demand: nothing
but cancellation stops it, it says what failed, and it keeps applying the cluster's changes;
``proxy.fresh_at`` moves only while every watch is synced and the table builds; an Upstream is
never served without its credentials."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sluice.kube import Gone, Kube, KubeError, NotFound, SecretNotText
from sluice.proxy import kubernetes
from sluice.proxy.handlers import PROXY
from sluice.proxy.kubernetes import PLURALS, KubernetesOptions, KubernetesSource
from sluice.proxy.state import Proxy
from sluice.proxy.table import Key, Table

NS = "team"
HANG = object()  # in secret_failures: the read never answers


def upstream(name: str, *, secret: str | None = None, key: str = "apiKey") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "openai-compatible",
        "baseURL": f"http://{name}.invalid",
        "models": [{"name": "m1"}],
    }
    if secret is not None:
        spec["credentials"] = {"secretRef": {"name": secret, "key": key}}
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Upstream",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "1"},
        "spec": spec,
    }


class FakeCluster:
    """The three calls KubernetesSource makes, with failures a test queues or switches on."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {p: {} for p in PLURALS}
        self.secrets: dict[Key, dict[str, str | bytes]] = {}
        self.secret_failures: list[Any] = []  # raised by the next reads, in order
        self.watch_failures: dict[str, list[BaseException]] = defaultdict(list)
        self.down: set[str] = set()  # plurals whose list fails (the server is away)
        self.lists: Counter[str] = Counter()
        self.secret_reads = 0
        self._watchers: dict[str, list[asyncio.Queue[Any]]] = defaultdict(list)
        self._version = 1

    async def list_with_version(
        self, group: str, version: str, plural: str, namespace: str | None
    ) -> tuple[list[dict[str, Any]], str]:
        self.lists[plural] += 1
        if plural in self.down:
            raise aiohttp.ClientConnectionError("Cannot connect to host 127.0.0.1:6443")
        return [copy.deepcopy(o) for o in self.objects[plural].values()], str(self._version)

    async def watch_objects(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        if self.watch_failures[plural]:
            raise self.watch_failures[plural].pop(0)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._watchers[plural].append(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._watchers[plural].remove(queue)

    async def secret_data(self, namespace: str, name: str) -> dict[str, str | bytes]:
        self.secret_reads += 1
        if self.secret_failures:
            failure = self.secret_failures.pop(0)
            if failure is HANG:
                await asyncio.sleep(3600)
            raise failure
        if (namespace, name) not in self.secrets:
            raise NotFound(f'secrets "{name}" not found')
        return dict(self.secrets[namespace, name])

    # -- what a test does to the cluster ---------------------------------------------------

    def apply(self, plural: str, obj: dict[str, Any], *, announce: bool = True) -> None:
        self._version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._version)
        self.objects[plural][NS, obj["metadata"]["name"]] = obj
        if announce:
            for queue in self._watchers[plural]:
                queue.put_nowait(("MODIFIED", copy.deepcopy(obj)))

    def override(self, name: str, state: str | None, *, announce: bool = True) -> None:
        obj = copy.deepcopy(self.objects["upstreams"][NS, name])
        obj["spec"]["breaker"] = {"override": state}
        self.apply("upstreams", obj, announce=announce)

    def break_watch(self, plural: str, error: BaseException) -> None:
        for queue in self._watchers[plural]:
            queue.put_nowait(error)


@dataclass
class Running:
    cluster: FakeCluster
    source: KubernetesSource
    proxy: Proxy
    task: asyncio.Task[None]

    @property
    def table(self) -> Table:
        return self.proxy.table

    def api_key(self, name: str) -> str | None:
        return self.table.targets[NS, name].api_key

    def override(self, name: str) -> str | None:
        target = self.table.targets.get((NS, name))
        return None if target is None else target.spec.breaker.override


FAST = {"secret_ttl": 0.2, "backoff": 0.05, "max_backoff": 0.2, "fresh_every": 0.05}


@asynccontextmanager
async def running(cluster: FakeCluster, **options: Any) -> AsyncIterator[Running]:
    proxy = Proxy(table=Table())
    proxy.fresh_at = -1.0
    proxy.stale_after = None
    source = KubernetesSource(
        cluster,
        proxy,
        KubernetesOptions(namespace=NS, **{**FAST, "secret_timeout": 0.1, **options}),
    )
    task = asyncio.create_task(source.run())
    try:
        await asyncio.wait_for(source.synced.wait(), timeout=2)
        yield Running(cluster, source, proxy, task)
        assert not task.done(), "the source stopped"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(check: Callable[[], object], what: str, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        await asyncio.sleep(0.01)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def two_upstreams() -> FakeCluster:
    cluster = FakeCluster()
    cluster.apply("upstreams", upstream("a", secret="keys"))
    cluster.apply("upstreams", upstream("b"))
    cluster.secrets[NS, "keys"] = {"apiKey": "sk-1"}
    return cluster


async def test_failed_secret_reads_are_retried_and_the_table_keeps_following(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = two_upstreams()
    async with running(cluster) as run:
        assert run.api_key("a") == "sk-1"

        cluster.secret_failures = [
            aiohttp.ClientConnectionError("Connection reset by peer"),
            TimeoutError(),
            KubeError(500, "etcdserver: leader changed"),
            HANG,
        ]
        reads = cluster.secret_reads
        await until(
            lambda: not cluster.secret_failures and cluster.secret_reads > reads + 4,
            "the reads failed, then one worked",
        )
        assert run.api_key("a") == "sk-1"  # the last value read stayed in force

        cluster.override("b", "Open")
        await until(lambda: run.override("b") == "Open", "the override applied")
        cluster.secrets[NS, "keys"] = {"apiKey": "sk-2"}
        await until(lambda: run.api_key("a") == "sk-2", "the rotated key applied")

    failed = [w for w in warnings(caplog) if w.startswith(f"reading secret {NS}/keys failed")]
    assert any("ClientConnectionError: Connection reset by peer" in w for w in failed)
    assert any("(TimeoutError)" in w for w in failed)  # twice: raised, and the hung read
    assert any("KubeError: 500: etcdserver: leader changed" in w for w in failed)
    assert all("keeping the last value read" in w for w in failed)


async def test_a_binary_secret_value_makes_only_that_key_unusable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster()
    cluster.apply("upstreams", upstream("a", secret="mixed", key="apiKey"))
    cluster.apply("upstreams", upstream("c", secret="mixed", key="other"))
    cluster.apply("upstreams", upstream("b"))
    cluster.secrets[NS, "mixed"] = {"apiKey": b"\xff\xfe", "other": "sk-other"}
    async with running(cluster) as run:
        assert (NS, "a") not in run.table.targets
        assert (
            f'Upstream {NS}/a: credentials secret "mixed" key "apiKey" is not UTF-8 text; '
            "the upstream is not served until it is"
        ) in run.table.problems
        assert run.api_key("c") == "sk-other"
        assert (NS, "b") in run.table.targets

        cluster.override("b", "Open")
        await until(lambda: run.override("b") == "Open", "a later override applied")
        cluster.secrets[NS, "mixed"] = {"apiKey": "sk-a", "other": "sk-other"}
        await until(lambda: (NS, "a") in run.table.targets, "a joins once its key is text")
        assert run.api_key("a") == "sk-a"
    assert any("is not UTF-8 text" in w for w in warnings(caplog))


class _Secret:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = {k: base64.b64encode(v).decode() for k, v in data.items()}


class _Core:
    async def read_namespaced_secret(self, name: str, namespace: str) -> _Secret:
        return _Secret({"apiKey": b"\xff\xfe", "other": b"sk-other"})


async def test_kube_decodes_each_secret_key_on_its_own() -> None:
    kube = Kube.__new__(Kube)  # no API server: only the core API is called
    kube._core = _Core()

    assert await kube.secret_data(NS, "mixed") == {"apiKey": b"\xff\xfe", "other": "sk-other"}
    assert await kube.secret_value(NS, "mixed", "other") == "sk-other"
    with pytest.raises(SecretNotText, match=r'secret team/mixed key "apiKey" is not UTF-8 text'):
        await kube.secret_value(NS, "mixed", "apiKey")
    assert issubclass(SecretNotText, KubeError)  # the operator's `except KubeError` holds


async def test_an_upstream_whose_secret_was_never_found_is_not_served_until_it_exists() -> None:
    cluster = FakeCluster()
    cluster.apply("upstreams", upstream("a", secret="later"))
    cluster.apply("upstreams", upstream("b"))
    cluster.apply(
        "modelroutes",
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "m1", "namespace": NS},
            "spec": {"models": ["m1"], "targets": [{"upstream": "a"}, {"upstream": "b"}]},
        },
    )
    async with running(cluster, secret_ttl=60.0) as run:
        assert set(run.table.targets) == {(NS, "b")}
        assert (
            f'Upstream {NS}/a: credentials secret "later" key "apiKey" not found; '
            "the upstream is not served until it exists"
        ) in run.table.problems
        resolved = run.table.resolve("m1", order=lambda _, candidates: candidates)
        assert [c.target.name for c in resolved.candidates] == ["b"]

        # Read again with back-off, not only every secret_ttl (a minute here).
        cluster.secrets[NS, "later"] = {"apiKey": "sk-later"}
        await until(lambda: (NS, "a") in run.table.targets, "a joins once its Secret exists")
        assert run.api_key("a") == "sk-later"


async def test_a_secret_or_key_gone_after_it_was_read_keeps_its_last_value() -> None:
    cluster = two_upstreams()
    cluster.apply("upstreams", upstream("c", secret="keys", key="other"))
    cluster.secrets[NS, "keys"] = {"apiKey": "sk-1", "other": "sk-other"}
    async with running(cluster) as run:
        cluster.secrets[NS, "keys"] = {"apiKey": "sk-1"}
        message = f'Upstream {NS}/c: credentials secret "keys" key "other" not found; using'
        await until(lambda: any(p.startswith(message) for p in run.table.problems), "key gone")
        assert run.api_key("c") == "sk-other"

        del cluster.secrets[NS, "keys"]
        message = f'Upstream {NS}/a: credentials secret "keys" key "apiKey" not found; using'
        await until(lambda: any(p.startswith(message) for p in run.table.problems), "Secret gone")
        assert (run.api_key("a"), run.api_key("c")) == ("sk-1", "sk-other")


async def test_an_upstream_whose_secret_could_never_be_read_waits_for_a_read() -> None:
    cluster = two_upstreams()
    cluster.secret_failures = [KubeError(403, "secrets is forbidden")] * 3
    async with running(cluster) as run:
        assert (NS, "a") not in run.table.targets
        assert any(
            "could not be read (KubeError: 403: secrets is forbidden)" in p
            for p in run.table.problems
        )
        await until(lambda: (NS, "a") in run.table.targets, "a joins after a read works")
        assert run.api_key("a") == "sk-1"


async def test_watch_failures_back_off_and_freshness_waits_for_every_watch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = two_upstreams()
    async with running(cluster) as run:
        await until(lambda: run.proxy.fresh_at > 0, "the table confirmed fresh")
        seen = run.proxy.fresh_at
        await until(lambda: run.proxy.fresh_at > seen, "freshness refreshed while healthy")

        cluster.down.add("upstreams")
        cluster.break_watch("upstreams", KubeError(500, "internal error"))
        await until(lambda: cluster.lists["upstreams"] >= 3, "the list retried")
        stopped = run.proxy.fresh_at
        cluster.override("b", "Open", announce=False)  # while nobody watches
        await asyncio.sleep(0.3)
        assert run.proxy.fresh_at == stopped
        assert not run.source.healthy
        assert run.override("b") is None

        cluster.down.clear()
        await until(lambda: run.override("b") == "Open", "the change seen after the relist")
        await until(lambda: run.proxy.fresh_at > stopped, "freshness resumed")

    failed = [w for w in warnings(caplog) if w.startswith("watching upstreams failed")]
    assert any("KubeError: 500: internal error" in w for w in failed)
    assert any("ClientConnectionError: Cannot connect to host" in w for w in failed)
    assert all("serving the last known table; retrying in" in w for w in failed)


async def test_an_expired_watch_lists_again_at_once_but_not_in_a_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = two_upstreams()
    async with running(cluster, backoff=5.0, max_backoff=5.0) as run:
        assert cluster.lists["upstreams"] == 1
        cluster.watch_failures["upstreams"] = [Gone("too old resource version")]
        cluster.break_watch("upstreams", Gone("too old resource version"))
        await until(lambda: cluster.lists["upstreams"] == 2, "listed again", within=0.5)
        # The watch after that list expired at once too: now it backs off (5 s here).
        await asyncio.sleep(0.3)
        assert cluster.lists["upstreams"] == 2
        assert not run.source.healthy
    assert [w for w in warnings(caplog) if "watching upstreams failed" in w] == [
        "watching upstreams failed (KubeError: 410: too old resource version); serving the "
        "last known table; retrying in 5.0s"
    ]


async def test_a_failing_rebuild_is_retried_and_freshness_stops_meanwhile(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = kubernetes.build_table
    broken = {"on": False}

    def build_table(*args: Any, **kwargs: Any) -> Table:
        if broken["on"]:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(kubernetes, "build_table", build_table)
    cluster = two_upstreams()
    async with running(cluster) as run:
        await until(lambda: run.proxy.fresh_at > 0, "the table confirmed fresh")
        broken["on"] = True
        cluster.override("b", "Open")
        await until(lambda: not run.source.healthy, "the rebuild failed")
        stopped = run.proxy.fresh_at
        await asyncio.sleep(0.3)
        assert run.proxy.fresh_at == stopped
        assert run.override("b") is None  # the last table serves

        broken["on"] = False
        await until(lambda: run.override("b") == "Open", "the change applied after all")
        await until(lambda: run.proxy.fresh_at > stopped, "freshness resumed")
    assert any(
        w == "rebuilding the routing table failed (RuntimeError: a bug); serving the last "
        "known table"
        for w in warnings(caplog)
    )


async def test_a_healthy_source_confirms_freshness_without_rebuilding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds = Counter[str]()
    real = kubernetes.build_table

    def build_table(*args: Any, **kwargs: Any) -> Table:
        builds["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(kubernetes, "build_table", build_table)
    async with running(two_upstreams(), secret_ttl=60.0) as run:
        await asyncio.sleep(0.1)
        before, fresh = builds["n"], run.proxy.fresh_at
        await asyncio.sleep(0.3)
        assert builds["n"] == before
        assert run.proxy.fresh_at > fresh


async def test_an_unreadable_open_until_in_status_does_not_stop_the_rebuilds() -> None:
    cluster = two_upstreams()
    broken = upstream("a", secret="keys")
    broken["status"] = {"breaker": {"state": "Open", "openUntil": "soon"}}
    cluster.apply("upstreams", broken)
    async with running(cluster) as run:
        assert run.table.targets[NS, "a"].cluster_state is None
        assert any("status.breaker.openUntil 'soon'" in p for p in run.table.problems)
        cluster.override("b", "Open")
        await until(lambda: run.override("b") == "Open", "a later override applied")


async def test_cancelling_the_source_stops_it_while_it_backs_off() -> None:
    cluster = two_upstreams()
    cluster.down.update(PLURALS)
    source = KubernetesSource(cluster, Proxy(table=Table()), KubernetesOptions(**FAST))
    task = asyncio.create_task(source.run())
    await until(lambda: cluster.lists["upstreams"] >= 2, "the list retried")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1)


def test_the_app_goes_stale_after_the_configured_bound() -> None:
    assert KubernetesOptions().stale_after == 120.0
    app = kubernetes.build(KubernetesOptions(stale_after=7.5))
    assert app[PROXY].stale_after == 7.5
