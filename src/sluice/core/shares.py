"""How the operator leader splits one rate limit among the proxy replicas. Pure.

For one Upstream and one limit ``L`` per minute, every live replica claims its *window* (what
it took in the last 60 s) and its *demand* (what it wanted per minute, over its last report).
:func:`allocate` gives each replica its share:

- ``share >= window``: a replica is never told it has already overdrawn (it could do nothing
  about it but stop; its window slides out on its own).
- the limit is split by max-min fairness on demand, with windows as floors (water-filling:
  every replica gets ``max(window, min(demand, level))`` for the one level that adds up to
  ``L``; a replica that wants little gets all it wants, and what it leaves goes to the
  others). When the demands add up to less than ``L``, each gets its demand and what nobody
  wants is split evenly, so an idle replica can start serving before its next report.
- so the shares add up to ``L`` whenever the windows do not exceed it (after a lowered limit
  they may: then every share is its window until enough slides out).

:class:`ShareBook` keeps the claims of one limit kind across Upstreams: a replica that has not
reported for ``stale_after`` seconds leaves, and its share returns to the pool; a changed
limit applies at the next answer. Replicas hear their shares at different moments, so the
book also keeps what it last *gave* each one: a replica is given no more than the limit less
what the others still hold, so the shares out there never add up to more than the limit.
Capacity a replica gives up reaches the others once it has reported and heard its smaller
share (one interval later). Allocations are recomputed at most every ``refresh``
seconds per Upstream (50 replicas reporting 200 limited Upstreams each second would otherwise
run 10,000 allocations of 50 a second); an answer is never below the replica's latest window.

Deterministic: ties are broken by replica name, never by dict order or chance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Claim", "ShareBook", "allocate"]


@dataclass(frozen=True, slots=True)
class Claim:
    window: float  # taken in the last 60 s
    demand: float  # wanted per minute


def allocate(limit: float, claims: Mapping[str, Claim]) -> dict[str, float]:
    """Each replica's share of ``limit`` per minute (see the module docstring)."""
    if not claims:
        return {}
    names = sorted(claims)
    floor = {n: claims[n].window for n in names}
    want = {n: max(claims[n].demand, floor[n]) for n in names}
    if sum(floor.values()) >= limit:
        return floor  # overdrawn (a lowered limit): each keeps its window, no more
    if sum(want.values()) <= limit:
        spare = (limit - sum(want.values())) / len(names)  # what nobody asked for: evenly
        return {n: want[n] + spare for n in names}
    level = _water_level(limit, floor, want)
    return {n: max(floor[n], min(want[n], level)) for n in names}


def _water_level(limit: float, floor: dict[str, float], want: dict[str, float]) -> float:
    """The level L such that sum(max(floor, min(want, L))) == limit (max-min fairness with
    floors), found in one pass over the sorted breakpoints: below a replica's floor it holds
    its floor, between floor and want it rises with the level, above want it holds its want.
    The caller made sure sum(floor) < limit < sum(want)."""
    events = sorted(
        [(floor[n], 0, n) for n in floor if floor[n] < want[n]]
        + [(want[n], 1, n) for n in floor if floor[n] < want[n]]
    )
    fixed, rising = sum(floor.values()), 0  # total = fixed + rising * level, piecewise
    for point, kind, name in events:
        if rising and fixed + rising * point >= limit:
            break
        if kind == 0:
            fixed, rising = fixed - floor[name], rising + 1
        else:
            fixed, rising = fixed + want[name], rising - 1
    if not rising:  # rounding put the limit past the last breakpoint: everyone holds its want
        return max(want.values(), default=0.0)
    return (limit - fixed) / rising


@dataclass(slots=True)
class _Allocation:
    limit: float
    at: float
    shares: dict[str, float]


@dataclass(slots=True)
class _Limit:
    """One Upstream's claims, what each replica was last given, and what they hold in all."""

    claims: dict[str, tuple[Claim, float]] = field(default_factory=dict)  # and when
    held: dict[str, float] = field(default_factory=dict)  # max(last given, window)
    held_total: float = 0.0  # sum(held), kept as it changes: a report must not add up 50
    allocation: _Allocation | None = None

    def hold(self, replica: str, amount: float) -> None:
        self.held_total += amount - self.held.get(replica, 0.0)
        self.held[replica] = amount

    def expire(self, now: float, stale_after: float) -> None:
        for name in [n for n, (_, seen) in self.claims.items() if now - seen > stale_after]:
            del self.claims[name]
            self.held_total -= self.held.pop(name, 0.0)  # it holds nothing any more
        self.held_total = sum(self.held.values())  # and no float drift creeps in


@dataclass
class ShareBook:
    """Claims on one kind of limit (requests, or tokens) for every Upstream, by replica."""

    stale_after: float = 3.0  # seconds without a report before a replica leaves
    refresh: float = 0.25  # recompute an Upstream's allocation at most this often
    _limits: dict[object, _Limit] = field(default_factory=dict)

    def claim(self, key: object, replica: str, claim: Claim, now: float) -> None:
        entry = self._limits.get(key)
        if entry is None:
            entry = self._limits[key] = _Limit()
        entry.claims[replica] = (claim, now)
        entry.hold(replica, max(entry.held.get(replica, 0.0), claim.window))

    def share(self, key: object, replica: str, limit: float, now: float) -> float:
        """``replica``'s share of ``limit`` on ``key``, from claims at most ``refresh`` old,
        and no more than the others leave. The replica must have claimed on ``key`` (its
        report comes first)."""
        entry = self._limits[key]
        allocation = entry.allocation
        if (
            allocation is None
            or allocation.limit != limit
            or now - allocation.at >= self.refresh
            or replica not in allocation.shares
        ):
            entry.expire(now, self.stale_after)
            live = {name: claim for name, (claim, _) in entry.claims.items()}
            allocation = entry.allocation = _Allocation(limit, now, allocate(limit, live))
        window = entry.claims[replica][0].window
        others = entry.held_total - entry.held.get(replica, 0.0)
        share = max(min(allocation.shares[replica], limit - others), window)
        entry.hold(replica, share)
        return share

    def forget(self, key: object) -> None:
        """The Upstream is gone, or no longer has this limit."""
        self._limits.pop(key, None)

    def expire(self, now: float) -> None:
        """Drop replicas that stopped reporting, everywhere (call now and then)."""
        for key, entry in list(self._limits.items()):
            entry.expire(now, self.stale_after)
            if not entry.claims:
                del self._limits[key]

    def replicas(self, key: object) -> list[str]:
        entry = self._limits.get(key)
        return [] if entry is None else sorted(entry.claims)
