"""What the console shows of the recent past, per upstream, in fixed memory.

This replica's breaker transitions (the last :data:`CHANGES` of them) and its attempts in
per-minute buckets (the last :data:`MINUTES`): counts by outcome and a latency histogram with
fixed bounds, so a minute's p95 is read off the buckets. Fed from the existing hooks (the
proxy's transition callback, the breakers' record of each attempt's outcome); an attempt costs
a few counter increments. Upstreams that leave the table are forgotten (:meth:`History.keep`).
Pure: no I/O, time is an argument.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sluice.core import Outcome, OutcomeKind, Transition
from sluice.proxy.table import Key

__all__ = ["CHANGES", "LATENCY_BOUNDS_MS", "MINUTES", "OUTCOMES", "History", "Minute", "Summary"]

CHANGES = 50  # transitions kept per upstream
MINUTES = 15  # minutes of attempts kept per upstream
OUTCOMES = tuple(OutcomeKind)
_OUTCOME_INDEX = {kind: i for i, kind in enumerate(OUTCOMES)}
# Upper bounds of the latency buckets; the last bucket holds everything slower.
LATENCY_BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)


@dataclass(slots=True)
class Minute:
    """One minute's attempts at one upstream (``minute``: whole minutes since the epoch)."""

    minute: int
    counts: list[int] = field(default_factory=lambda: [0] * len(OUTCOMES))
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))

    def count(self, kind: OutcomeKind) -> int:
        return self.counts[_OUTCOME_INDEX[kind]]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Summary:
    """An upstream's last minutes: attempts in the last 60 s (this minute's, and the previous
    minute's weighted by how much of it is still within 60 s), the share of the last minutes'
    attempts that succeeded (of those that judged it: ignored ones do not), and the p95
    latency bucket's bound."""

    per_minute: float
    availability: float | None  # 0..1; None: nothing to judge by
    p95_ms: float | None  # None: no successful attempt


@dataclass(slots=True)
class _Upstream:
    changes: deque[Transition] = field(default_factory=lambda: deque(maxlen=CHANGES))
    minutes: deque[Minute] = field(default_factory=lambda: deque(maxlen=MINUTES))


def percentile_ms(latency: Iterable[int], fraction: float) -> float | None:
    """The bound of the bucket holding the ``fraction`` quantile (the slowest bucket: its
    lower bound); None without samples."""
    counts = list(latency)
    total = sum(counts)
    if total == 0:
        return None
    wanted, seen = fraction * total, 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= wanted and n:
            return float(LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)])
    return float(LATENCY_BOUNDS_MS[-1])


class History:
    """Transitions and per-minute attempts for every upstream in the table."""

    def __init__(self) -> None:
        self._upstreams: dict[Key, _Upstream] = {}

    def _of(self, key: Key) -> _Upstream:
        found = self._upstreams.get(key)
        if found is None:
            found = self._upstreams[key] = _Upstream()
        return found

    def transition(self, key: Key, transition: Transition) -> None:
        self._of(key).changes.append(transition)

    def attempt(self, key: Key, outcome: Outcome, now: float, duration: float | None) -> None:
        """One attempt's outcome; ``duration`` (to its first byte, in seconds) is counted for
        successes only: a failure's time says how it failed, not how fast the upstream is."""
        minutes = self._of(key).minutes
        minute = int(now // 60)
        if not minutes or minutes[-1].minute != minute:
            minutes.append(Minute(minute))
        bucket = minutes[-1]
        bucket.counts[_OUTCOME_INDEX[outcome.kind]] += 1
        if duration is not None and outcome.kind is OutcomeKind.SUCCESS:
            bucket.latency[bisect.bisect_left(LATENCY_BOUNDS_MS, duration * 1000)] += 1

    def keep(self, keys: Iterable[Key]) -> None:
        """Forget upstreams that are not in ``keys`` (they left the table)."""
        wanted = set(keys)
        for key in set(self._upstreams) - wanted:
            del self._upstreams[key]

    def changes(self, key: Key) -> list[Transition]:
        """This replica's transitions of ``key``, newest first."""
        found = self._upstreams.get(key)
        return [] if found is None else list(reversed(found.changes))

    def minutes(self, key: Key, now: float, count: int = MINUTES) -> list[Minute]:
        """The last ``count`` minutes up to ``now``, oldest first, empty ones included."""
        found = self._upstreams.get(key)
        by_minute = {} if found is None else {m.minute: m for m in found.minutes}
        last = int(now // 60)
        return [by_minute.get(m) or Minute(m) for m in range(last - count + 1, last + 1)]

    def summary(self, key: Key, now: float, span: int = 5) -> Summary:
        """The last ``span`` minutes (the current one included) of ``key``."""
        minutes = self.minutes(key, now, span)
        counts = [sum(m.counts[i] for m in minutes) for i in range(len(OUTCOMES))]
        success = counts[_OUTCOME_INDEX[OutcomeKind.SUCCESS]]
        judged = sum(counts) - counts[_OUTCOME_INDEX[OutcomeKind.IGNORED]]
        latency = [sum(m.latency[i] for m in minutes) for i in range(len(LATENCY_BOUNDS_MS) + 1)]
        previous, current = minutes[-2].total if span > 1 else 0, minutes[-1].total
        return Summary(
            per_minute=current + previous * (1 - (now % 60) / 60),
            availability=success / judged if judged else None,
            p95_ms=percentile_ms(latency, 0.95),
        )
