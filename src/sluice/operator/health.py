"""Recent probe results of one upstream: availability and latency percentiles. Pure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["ProbeHistory", "ProbeRecord"]


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    at: float
    ok: bool
    latency_ms: float
    code: int | None
    error: str | None


class ProbeHistory:
    """The last ``size`` probes (60: ten minutes at the default 10 s interval)."""

    def __init__(self, size: int = 60) -> None:
        self._records: deque[ProbeRecord] = deque(maxlen=size)

    def add(self, record: ProbeRecord) -> None:
        self._records.append(record)

    @property
    def last(self) -> ProbeRecord | None:
        return self._records[-1] if self._records else None

    def availability(self) -> float | None:
        """Percent of recent probes that were healthy (None before the first probe)."""
        if not self._records:
            return None
        return 100.0 * sum(r.ok for r in self._records) / len(self._records)

    def latency_percentile(self, q: float) -> float | None:
        """The q-quantile (0..1) of recent healthy probes' latency in ms (nearest rank)."""
        values = sorted(r.latency_ms for r in self._records if r.ok)
        if not values:
            return None
        rank = max(0, min(len(values) - 1, round(q * len(values) + 0.5) - 1))
        return values[rank]
