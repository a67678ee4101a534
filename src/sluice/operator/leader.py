"""Leader election on a coordination.k8s.io Lease, as client-go does it.

Only the replica holding the Lease probes and writes; the others wait. Kopf's peering is not
used: operators of equal priority all freeze under it, and its pause does not stop daemons or
timers (kopf discussion #1003), so it cannot promise that two replicas never both probe.

Expiry is judged like client-go: by how long *this* replica has seen the same Lease record
unchanged (a monotonic clock), never by comparing another node's renewTime with our wall
clock, so clock skew between nodes does not matter. Updates use the Lease's resourceVersion, so
two candidates cannot both win a race. A leader that cannot renew within ``renew_deadline``
gives up (the caller exits; the Deployment restarts it as a candidate). On a clean shutdown the
leader releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluice.kube import Conflict, Kube, KubeError

__all__ = ["LeadershipLost", "LeaseElector"]

log = logging.getLogger("sluice.operator.leader")


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed in time: another replica may lead now."""


def _micro_time(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseElector:
    kube: Kube
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    # Written on the Lease while this replica holds it: how to reach the leader (its report
    # endpoint's address), so a standby can tell a proxy replica where to go.
    annotations: dict[str, str] = field(default_factory=dict)
    _observed: tuple[Any, ...] | None = field(default=None, repr=False)
    _observed_at: float = field(default=0.0, repr=False)
    _lease: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def holder(self) -> str | None:
        """Who holds the Lease, as last read (None: nobody, or not read yet)."""
        return ((self._lease or {}).get("spec") or {}).get("holderIdentity") or None

    def holder_annotation(self, key: str) -> str | None:
        """An annotation the holder wrote on the Lease, as last read."""
        metadata = (self._lease or {}).get("metadata") or {}
        return (metadata.get("annotations") or {}).get(key)

    def _metadata(self, lease: dict[str, Any]) -> dict[str, Any]:
        metadata = dict(lease.get("metadata") or {})
        if self.annotations:
            metadata["annotations"] = {**(metadata.get("annotations") or {}), **self.annotations}
        return metadata

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        announced = False
        while not await self._try_acquire_or_renew():
            if not announced:
                holder = ((self._lease or {}).get("spec") or {}).get("holderIdentity")
                log.info(
                    "waiting for the leader Lease %s/%s (held by %s)",
                    self.namespace,
                    self.name,
                    holder,
                )
                announced = True
            await asyncio.sleep(self.retry_period)
        log.info("acquired the leader Lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def hold(self) -> None:
        """Renew every ``retry_period``; raise LeadershipLost past ``renew_deadline``."""
        last_renewal = self.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                renewed = await self._try_acquire_or_renew()
            except (KubeError, OSError) as e:
                log.warning("renewing the leader Lease failed: %s", e)
                renewed = False
            if renewed:
                last_renewal = self.monotonic()
            elif self.monotonic() - last_renewal > self.renew_deadline:
                raise LeadershipLost(
                    f"could not renew Lease {self.namespace}/{self.name} for "
                    f"{self.renew_deadline:g}s"
                )

    async def release(self) -> None:
        """Give the Lease up (clean shutdown), so a standby need not wait for it to expire."""
        lease = self._lease
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        spec = dict(lease["spec"])
        spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time(self.wall()))
        try:
            await self.kube.replace_lease(self.namespace, self.name, {**lease, "spec": spec})
        except KubeError as e:
            log.warning("releasing the leader Lease failed: %s", e)

    async def _try_acquire_or_renew(self) -> bool:
        now = self.wall()
        lease = await self.kube.get_lease(self.namespace, self.name)
        if lease is None:
            try:
                self._lease = await self.kube.create_lease(self.namespace, self._fresh(now))
            except Conflict:  # another candidate created it first
                return False
            return True
        self._lease = lease
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        held_by_other = bool(holder) and holder != self.identity
        if held_by_other and self.monotonic() - self._observed_at < duration:
            return False
        new_spec = dict(spec)
        new_spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=round(self.lease_duration),
            renewTime=_micro_time(now),
        )
        if holder != self.identity:
            new_spec["acquireTime"] = _micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            self._lease = await self.kube.replace_lease(
                self.namespace,
                self.name,
                {**lease, "metadata": self._metadata(lease), "spec": new_spec},
            )
        except Conflict:  # someone renewed or took it between our read and write
            return False
        return True

    def _fresh(self, now: float) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": self._metadata(
                {"metadata": {"name": self.name, "namespace": self.namespace}}
            ),
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": round(self.lease_duration),
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }
