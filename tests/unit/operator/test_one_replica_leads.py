"""Lease-based leader election against an in-memory Lease store with optimistic concurrency."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from sluice.kube import Conflict, KubeError
from sluice.operator.leader import LeadershipLost, LeaseElector


class Leases:
    """get/create/replace of one namespace's Leases, refusing stale resourceVersions (409)."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.down:
            raise KubeError(0, "connection refused")
        lease = self.stored.get(name)
        return copy.deepcopy(lease) if lease else None

    async def create_lease(self, namespace: str, lease: dict[str, Any]) -> dict[str, Any]:
        name = lease["metadata"]["name"]
        if name in self.stored:
            raise Conflict("already exists")
        return self._store(name, lease)

    async def replace_lease(
        self, namespace: str, name: str, lease: dict[str, Any]
    ) -> dict[str, Any]:
        if self.down:
            raise KubeError(0, "connection refused")
        if (
            lease["metadata"].get("resourceVersion")
            != self.stored[name]["metadata"]["resourceVersion"]
        ):
            raise Conflict("the object has been modified")
        return self._store(name, lease)

    def _store(self, name: str, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(lease)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.stored[name] = stored
        return copy.deepcopy(stored)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(leases: Leases, identity: str, clock: Clock) -> LeaseElector:
    return LeaseElector(
        leases,  # type: ignore[arg-type]
        "ns",
        "sluice-operator",
        identity,
        lease_duration=15,
        renew_deadline=10,
        retry_period=0.01,
        monotonic=clock,
        wall=clock,
    )


def holder(leases: Leases) -> str | None:
    return leases.stored["sluice-operator"]["spec"].get("holderIdentity")


async def test_the_first_candidate_creates_the_lease_and_leads() -> None:
    leases, clock = Leases(), Clock()

    assert await elector(leases, "a", clock)._try_acquire_or_renew()

    assert holder(leases) == "a"


async def test_a_second_candidate_waits_while_the_lease_is_renewed() -> None:
    leases, clock = Leases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a._try_acquire_or_renew()

    for _ in range(5):
        clock.now += 10  # under the 15 s duration between renewals
        assert await a._try_acquire_or_renew()
        assert not await b._try_acquire_or_renew()

    assert holder(leases) == "a"


async def test_a_lease_unchanged_for_its_duration_is_taken_over() -> None:
    leases, clock = Leases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a._try_acquire_or_renew()
    assert not await b._try_acquire_or_renew()  # b starts watching the record

    clock.now += 14.9
    assert not await b._try_acquire_or_renew()
    clock.now += 0.2  # 15.1 s without a change seen by b

    assert await b._try_acquire_or_renew()
    assert holder(leases) == "b"
    assert leases.stored["sluice-operator"]["spec"]["leaseTransitions"] == 1


async def test_expiry_is_judged_by_what_this_replica_observed_not_by_the_clock_in_the_lease() -> (
    None
):
    leases, clock = Leases(), Clock()
    a = elector(leases, "a", clock)
    assert await a._try_acquire_or_renew()
    leases.stored["sluice-operator"]["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"
    b = elector(leases, "b", clock)

    # The renewTime is ancient by b's wall clock, but b has not yet watched it go stale.
    assert not await b._try_acquire_or_renew()


async def test_a_released_lease_is_taken_at_once() -> None:
    leases, clock = Leases(), Clock()
    a, b = elector(leases, "a", clock), elector(leases, "b", clock)
    assert await a._try_acquire_or_renew()
    assert not await b._try_acquire_or_renew()

    await a.release()

    assert await b._try_acquire_or_renew()


async def test_two_candidates_racing_on_an_expired_lease_cannot_both_win() -> None:
    leases, clock = Leases(), Clock()
    assert await elector(leases, "a", clock)._try_acquire_or_renew()
    b, c = elector(leases, "b", clock), elector(leases, "c", clock)
    assert not await b._try_acquire_or_renew()
    assert not await c._try_acquire_or_renew()
    clock.now += 16

    results = await asyncio.gather(b._try_acquire_or_renew(), c._try_acquire_or_renew())

    assert sorted(results) == [False, True]


async def test_a_leader_that_cannot_renew_gives_up_after_the_deadline() -> None:
    leases, clock = Leases(), Clock()
    a = elector(leases, "a", clock)
    assert await a._try_acquire_or_renew()
    leases.down = True

    async def time_passes() -> None:
        while True:
            await asyncio.sleep(0.005)
            clock.now += 1

    ticking = asyncio.create_task(time_passes())
    try:
        with pytest.raises(LeadershipLost, match="could not renew Lease ns/sluice-operator"):
            await asyncio.wait_for(a.hold(), timeout=5)
    finally:
        ticking.cancel()
