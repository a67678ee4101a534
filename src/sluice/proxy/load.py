"""The proxy's mutable per-upstream state, each piece a small object with its own methods:
what is in flight, how fast each upstream answers, where round robin is, who is sticky.

The picker reads them to order and filter candidates; an attempt updates them. Nothing else
touches them. None of them does I/O or keeps time of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sluice.proxy.table import Key

__all__ = ["RoundRobin", "StickySessions", "UpstreamLoad"]


@dataclass
class UpstreamLoad:
    """Attempts in flight per upstream, and an EWMA of each one's latency (first byte for a
    stream, the whole answer otherwise), in milliseconds."""

    on_change: Callable[[Key, int], None] | None = None  # (upstream, +1 or -1): a gauge
    _in_flight: dict[Key, int] = field(default_factory=dict)
    _latency_ms: dict[Key, float] = field(default_factory=dict)

    def in_flight(self, key: Key) -> int:
        return self._in_flight.get(key, 0)

    def latency_ms(self, key: Key) -> float:
        return self._latency_ms.get(key, 0.0)

    def started(self, key: Key) -> None:
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        if self.on_change is not None:
            self.on_change(key, 1)

    def ended(self, key: Key) -> None:
        self._in_flight[key] -= 1
        if self.on_change is not None:
            self.on_change(key, -1)

    def answered(self, key: Key, ms: float) -> None:
        """A successful attempt took ``ms``: 0.8 of the old average, 0.2 of the new sample."""
        previous = self._latency_ms.get(key)
        self._latency_ms[key] = ms if previous is None else 0.8 * previous + 0.2 * ms


@dataclass
class RoundRobin:
    """A cursor per route: each call gives the next start."""

    _cursors: dict[Key, int] = field(default_factory=dict)

    def next(self, route: Key) -> int:
        value = self._cursors.get(route, 0)
        self._cursors[route] = value + 1
        return value


@dataclass
class StickySessions:
    """Which upstream served a session (a request header's value, per route) last, until a TTL
    passes. Bounded: past ``limit`` sessions everything is forgotten rather than kept forever
    (the values come from clients)."""

    limit: int = 100_000
    _sessions: dict[tuple[Key, str], tuple[Key, float]] = field(default_factory=dict)

    def get(self, route: Key, session: str, now: float) -> Key | None:
        found = self._sessions.get((route, session))
        if found is None or found[1] < now:
            return None
        return found[0]

    def remember(self, route: Key, session: str, upstream: Key, until: float) -> None:
        if len(self._sessions) >= self.limit:
            self._sessions.clear()
        self._sessions[route, session] = (upstream, until)

    def __len__(self) -> int:
        return len(self._sessions)
