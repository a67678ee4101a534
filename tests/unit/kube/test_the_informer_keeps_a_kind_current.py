"""kube.Informer against a scripted fake API (no API server): it lists, watches from the list's
version, applies changes by Ref, skips bookmarks, lists again at once when the version expires
(but not in a loop), backs off on other failures, and says whether its objects are current."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sluice.kube import Gone, Informer, KubeError
from sluice.resources import Ref

HANG = "hang"  # a watch script ending in HANG stays open until cancelled


def thing(name: str, version: int, namespace: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": str(version)}}


class Scripted:
    """Answers each list and each watch from the next script; records what was asked."""

    def __init__(self, lists: list[Any], watches: list[list[Any]]) -> None:
        self.lists = lists  # (items, version) or an exception, per list call
        self.watches = watches  # events, then an exception or HANG (else the stream ends)
        self.asked: list[tuple[str, str | None]] = []  # ("list", None) / ("watch", version)

    async def list_with_version(
        self, group: str, version: str, plural: str, namespace: str | None
    ) -> tuple[list[dict[str, Any]], str]:
        self.asked.append(("list", None))
        answer = self.lists.pop(0) if self.lists else HANG
        if answer == HANG:
            await asyncio.sleep(3600)
        if isinstance(answer, BaseException):
            raise answer
        items, at = answer
        return list(items), at

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
        self.asked.append(("watch", resource_version))
        script = self.watches.pop(0) if self.watches else [HANG]
        for step in script:
            if step == HANG:
                await asyncio.sleep(3600)
            if isinstance(step, BaseException):
                raise step
            yield step


class Recorder:
    def __init__(self) -> None:
        self.changes = 0
        self.failures: list[tuple[str, float]] = []

    def changed(self) -> None:
        self.changes += 1

    def failed(self, error: BaseException, delay: float) -> None:
        self.failures.append((str(error), delay))


async def until(check: Callable[[], object], what: str, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within}s"
        await asyncio.sleep(0.005)


async def running(
    source: Scripted, recorder: Recorder, **options: Any
) -> tuple[Informer, asyncio.Task[None]]:
    informer = Informer(
        source,
        "sluice.dev",
        "v1alpha1",
        "things",
        namespace="ns",
        on_change=recorder.changed,
        on_failure=recorder.failed,
        **{"backoff": 0.01, "max_backoff": 0.04, **options},
    )
    task = asyncio.create_task(informer.run())
    await asyncio.sleep(0)
    return informer, task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_it_lists_then_applies_each_change_by_ref_and_skips_bookmarks() -> None:
    source = Scripted(
        lists=[([thing("a", 1), thing("b", 2)], "2")],
        watches=[
            [
                ("MODIFIED", {**thing("a", 3), "spec": {"x": 1}}),
                ("BOOKMARK", {"metadata": {"resourceVersion": "9"}}),
                ("DELETED", thing("b", 10)),
                ("ADDED", thing("c", 11, namespace="other")),
            ],
            [HANG],
        ],
    )
    recorder = Recorder()
    informer, task = await running(source, recorder)
    await until(lambda: len(source.asked) == 3, "the second watch")

    assert set(informer.objects) == {Ref("ns", "a"), Ref("other", "c")}
    assert informer.objects[Ref("ns", "a")]["spec"] == {"x": 1}
    assert recorder.changes == 4  # the list and three changes; the bookmark is none
    # The stream ended: watch on from the last version seen (no list again).
    assert source.asked == [("list", None), ("watch", "2"), ("watch", "11")]
    assert informer.listed
    assert informer.synced
    assert recorder.failures == []
    await stop(task)


async def test_a_bookmark_moves_the_version_the_next_watch_starts_from() -> None:
    source = Scripted(
        lists=[([], "5")],
        watches=[[("BOOKMARK", {"metadata": {"resourceVersion": "40"}})], [HANG]],
    )
    _, task = await running(source, Recorder())
    await until(lambda: len(source.asked) == 3, "the second watch")

    assert source.asked[-1] == ("watch", "40")
    await stop(task)


async def test_an_expired_version_lists_again_at_once_but_not_in_a_loop() -> None:
    source = Scripted(
        lists=[([thing("a", 1)], "1"), ([thing("a", 1), thing("b", 7)], "7"), HANG],
        watches=[[Gone("too old resource version")], [Gone("too old resource version")]],
    )
    recorder = Recorder()
    informer, task = await running(source, recorder, backoff=5.0, max_backoff=5.0)
    await until(lambda: recorder.failures, "the second Gone backed off")

    assert source.asked == [("list", None), ("watch", "1"), ("list", None), ("watch", "7")]
    assert set(informer.objects) == {Ref("ns", "a"), Ref("ns", "b")}  # the relist's
    assert recorder.failures == [("410: too old resource version", 5.0)]
    await asyncio.sleep(0.05)
    assert len(source.asked) == 4  # backing off for 5 s, not listing again
    assert not informer.synced
    assert informer.listed
    await stop(task)


async def test_failures_back_off_doubling_to_the_cap_and_an_event_resets_it() -> None:
    down = KubeError(0, "connection refused")
    source = Scripted(
        lists=[down, down, down, down, ([], "1"), down, HANG],
        watches=[[("ADDED", thing("a", 2)), KubeError(500, "internal error")]],
    )
    recorder = Recorder()
    informer, task = await running(source, recorder)
    await until(lambda: len(recorder.failures) == 6, "six failures")

    assert [delay for _, delay in recorder.failures] == [0.01, 0.02, 0.04, 0.04, 0.01, 0.02]
    assert recorder.failures[4][0] == "500: internal error"
    assert informer.listed
    assert not informer.synced
    assert set(informer.objects) == {Ref("ns", "a")}  # the last known objects stay
    await stop(task)


async def test_not_synced_until_listed_and_synced_again_after_a_relist() -> None:
    gate = asyncio.Event()

    class Gated(Scripted):
        async def list_with_version(
            self, group: str, version: str, plural: str, namespace: str | None
        ) -> tuple[list[dict[str, Any]], str]:
            await gate.wait()
            return await super().list_with_version(group, version, plural, namespace)

    source = Gated(lists=[([], "1"), ([], "2")], watches=[[KubeError(0, "reset")], [HANG]])
    recorder = Recorder()
    informer, task = await running(source, recorder)
    await asyncio.sleep(0.02)
    assert not informer.listed
    assert not informer.synced

    gate.set()
    await until(lambda: ("watch", "2") in source.asked, "watching after the relist")
    assert informer.synced
    assert len(recorder.failures) == 1
    await stop(task)


async def test_by_default_a_failure_is_logged_as_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Scripted(lists=[KubeError(503, "unavailable"), HANG], watches=[])
    informer = Informer(source, "g", "v", "things", backoff=0.01)
    task = asyncio.create_task(informer.run())
    await until(lambda: len(source.asked) == 2, "the list retried")
    await stop(task)

    assert "watching things failed (KubeError: 503: unavailable); retrying in 0.0s" in [
        r.getMessage() for r in caplog.records
    ]
