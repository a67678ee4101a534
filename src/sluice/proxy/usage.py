"""What this replica sent each Upstream: for the operator's report, and for ``/health``.

Each attempt's outcome and each answer's tokens and cost are added here (O(1), fixed memory
per Upstream). :meth:`UsageLedger.drain` hands the deltas since the last drain to the
reporter (``sluice.core.reports.UpstreamUsage``); :meth:`UsageLedger.view` is the last
minute's rates, which ``/health`` shows (the same numbers the operator folds into
``status.usage`` from every replica).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sluice.core import OutcomeKind
from sluice.core.ratelimit import MinuteCount
from sluice.core.reports import UpstreamUsage
from sluice.core.wire import MAX_MODELS
from sluice.proxy.quotas import RateLimits
from sluice.proxy.table import Key, Table

__all__ = ["UsageLedger"]

_MAX_ERROR = 200  # characters of the last failure's detail that a report carries


@dataclass(slots=True)
class _Upstream:
    delta: UpstreamUsage
    requests: MinuteCount = field(default_factory=MinuteCount)
    tokens: MinuteCount = field(default_factory=MinuteCount)
    cost: MinuteCount = field(default_factory=MinuteCount)


def _nothing(key: Key) -> UpstreamUsage:
    return UpstreamUsage(key[0], key[1])


class UsageLedger:
    def __init__(self, limits: RateLimits | None = None) -> None:
        self._upstreams: dict[Key, _Upstream] = {}
        self.limits = limits if limits is not None else RateLimits()  # what drain reads
        self.failures = 0  # failed attempts ever: a new one makes the reporter report early

    def sync(self, table: Table) -> None:
        """Upstreams that left the table are forgotten (their last counts with them)."""
        for key in [k for k in self._upstreams if k not in table.targets]:
            del self._upstreams[key]

    def _of(self, key: Key) -> _Upstream:
        found = self._upstreams.get(key)
        if found is None:
            found = self._upstreams[key] = _Upstream(UpstreamUsage(key[0], key[1]))
        return found

    def attempt(
        self, key: Key, kind: OutcomeKind, *, slow: bool, detail: str | None, now: float
    ) -> None:
        """One attempt ended as ``kind`` (``slow`` by the policy's slowCalls)."""
        upstream = self._of(key)
        delta = upstream.delta
        if kind is OutcomeKind.SUCCESS:
            delta.success += 1
        elif kind is OutcomeKind.FAILURE:
            delta.failure += 1
            self.failures += 1
            delta.last_error = None if detail is None else detail[:_MAX_ERROR]
        elif kind is OutcomeKind.RATE_LIMITED:
            delta.rate_limited += 1
        else:
            delta.ignored += 1
        if slow and kind in (OutcomeKind.SUCCESS, OutcomeKind.FAILURE):
            delta.slow += 1
        upstream.requests.add(now, 1)

    def tokens(
        self, key: Key, model: str, *, input_tokens: int, output_tokens: int, cost: float,
        now: float,
    ) -> None:  # fmt: skip
        """An answer's usage, and its cost at the model entry's prices."""
        upstream = self._of(key)
        delta = upstream.delta
        delta.input_tokens += input_tokens
        delta.output_tokens += output_tokens
        upstream.tokens.add(now, input_tokens + output_tokens)
        if cost:
            delta.cost += cost
            by_model = delta.cost_by_model
            if model not in by_model and len(by_model) >= MAX_MODELS - 1:
                model = "other"  # a report holds so many; the rest in one, never dropped
            by_model[model] = by_model.get(model, 0.0) + cost
            upstream.cost.add(now, cost)

    def drain(self, now: float, limits: RateLimits | None = None) -> list[UpstreamUsage]:
        """The deltas since the last drain, each Upstream's with what it took against its
        limits; the ledger starts again from zero."""
        limits = self.limits if limits is None else limits
        drained: list[UpstreamUsage] = []
        for key, _ in limits.items():  # a replica turned away from every attempt wants too
            self._of(key)
        for key, upstream in self._upstreams.items():
            delta = upstream.delta
            upstream.delta = UpstreamUsage(key[0], key[1])
            allowance = limits.get(key)
            if allowance is not None:
                taken, tokens, wanted, wanted_tokens = allowance.drain_counts()
                delta.requests, delta.tokens = taken, tokens
                delta.wanted_requests, delta.wanted_tokens = wanted, wanted_tokens
                allowance.requests.advance(now)
                allowance.tokens.advance(now)
                delta.window_requests = round(allowance.requests.total)
                delta.window_tokens = round(allowance.tokens.total)
            if delta != _nothing(key):
                drained.append(delta)
        return drained

    def view(self, key: Key, now: float) -> dict[str, Any]:
        """The last minute at this replica: requests and tokens per minute, cost per hour."""
        upstream = self._upstreams.get(key)
        if upstream is None:
            return {"requestsPerMinute": 0, "tokensPerMinute": 0, "costPerHour": 0.0}
        for count in (upstream.requests, upstream.tokens, upstream.cost):
            count.advance(now)
        return {
            "requestsPerMinute": round(upstream.requests.total),
            "tokensPerMinute": round(upstream.tokens.total),
            "costPerHour": round(upstream.cost.total * 60, 6),
        }
