"""What the replicas' reports mean to the operator: evidence for the cluster breaker, and the
cluster's usage of an Upstream over the last minute. Pure.

:func:`feed_breaker` records a report's attempts with the Upstream's cluster breaker, as if
the operator had made them: successes first, then failures, so failures that replicas report
one each add up to consecutive failures (the order inside one interval is not known; this
order never lets a report's own successes hide its failures). Successes go in at once
(:meth:`CircuitBreaker.record_successes`: thousands a second arrive); failures one by one,
slow ones with the policy's slow duration. Past :data:`FOLD_LIMIT` attempts in a report the
counts are scaled down with their ratios kept (the rates are what matters at that
volume), so one report costs bounded CPU whatever it claims. In HalfOpen the reported
attempts are the trials: a failure reopens the circuit, successes close it.

:class:`UsageMinute` sums requests, tokens and cost in one-second buckets over 60 s: the
figures ``status.usage`` shows.
"""

from __future__ import annotations

from sluice.core.breaker import ADMITTED, CircuitBreaker, State
from sluice.core.outcome import Outcome, OutcomeKind
from sluice.core.reports import UpstreamUsage

__all__ = ["FOLD_LIMIT", "UsageMinute", "attempts", "feed_breaker"]

FOLD_LIMIT = 1000


def _scaled(usage: UpstreamUsage) -> tuple[int, int, int]:
    """(successes, failures, slow) to feed, at most FOLD_LIMIT in all."""
    success, failure, slow = usage.success, usage.failure, usage.slow
    total = success + failure
    if total <= FOLD_LIMIT:
        return success, failure, slow
    scale = FOLD_LIMIT / total
    return round(success * scale), round(failure * scale), round(slow * scale)


def feed_breaker(
    breaker: CircuitBreaker, usage: UpstreamUsage, now: float, *, source: str, probed: bool = False
) -> None:
    """Record the attempts ``usage`` reports (``source``: who saw them, for the message;
    ``probed``: the Upstream has a probe, which alone is the trial in HalfOpen — attempts
    that end then were started before, and say nothing of the upstream now)."""
    breaker.poll(now)
    if breaker.automatic_state is State.HALF_OPEN:
        if not probed:
            _feed_trials(breaker, usage, now, source=source)
        return
    success, failure, slow = _scaled(usage)
    slow_successes = min(slow, success)
    if success:
        breaker.record_successes(success, now, slow=slow_successes)
    if failure:
        _feed_failures(breaker, usage, failure, slow - slow_successes, now=now, source=source)
    limited = min(usage.rate_limited, FOLD_LIMIT)
    if limited and not breaker.policy.rate_limited_is_failure:
        limited = 1  # it only holds the upstream off; once says as much as a thousand times
    if limited:
        throttled = Outcome(OutcomeKind.RATE_LIMITED, f"HTTP 429 (seen by {source})", status=429)
        for _ in range(limited):
            if breaker.automatic_state is not State.CLOSED:
                break  # tripped: no more evidence, and no hold-off past the open period
            breaker.record(ADMITTED, throttled, now)


def _feed_failures(
    breaker: CircuitBreaker,
    usage: UpstreamUsage,
    failure: int,
    slow: int,
    *,
    now: float,
    source: str,
) -> None:
    slow_calls = breaker.policy.slow_calls
    slow_duration = None if slow_calls is None else slow_calls.duration
    failed = Outcome(OutcomeKind.FAILURE, f"{usage.last_error or 'a failure'} (seen by {source})")
    for i in range(failure):
        if breaker.automatic_state is not State.CLOSED:
            break  # tripped: the rest are not evidence about Closed any more
        breaker.record(ADMITTED, failed, now, duration=slow_duration if i < slow else None)


def _feed_trials(breaker: CircuitBreaker, usage: UpstreamUsage, now: float, *, source: str) -> None:
    """HalfOpen: reported attempts are the trials (an Upstream without a probe has no other).
    A failure reopens it; successes close it once ``successThreshold`` of them are in, within
    ``halfOpen.maxRequests`` trials."""
    if usage.failure:
        permit = breaker.admit(now)
        if permit is not None:
            detail = f"{usage.last_error or 'a failure'} (seen by {source})"
            breaker.record(permit, Outcome(OutcomeKind.FAILURE, detail), now)
        return
    ok = Outcome(OutcomeKind.SUCCESS, f"reported by {source}")
    for _ in range(min(usage.success, FOLD_LIMIT)):
        permit = breaker.admit(now)
        if permit is None or breaker.automatic_state is not State.HALF_OPEN:
            return
        breaker.record(permit, ok, now)


class UsageMinute:
    """Requests, tokens and cost of the last 60 s, in one-second buckets with running totals:
    fixed memory, and reading the totals costs nothing (the operator reads them per report)."""

    __slots__ = ("_buckets", "_head", "cost", "requests", "tokens")

    SECONDS = 60

    def __init__(self) -> None:
        self._buckets = [[0, 0, 0.0] for _ in range(self.SECONDS)]
        self._head = -1  # the newest bucket's second; -1: none yet
        self.requests = 0
        self.tokens = 0
        self.cost = 0.0

    def advance(self, now: float) -> int:
        """Forget the seconds that left the window at ``now``; the current bucket's second."""
        second = int(now)
        if second > self._head:
            for s in range(max(self._head + 1, second - self.SECONDS + 1), second + 1):
                bucket = self._buckets[s % self.SECONDS]
                self.requests -= int(bucket[0])
                self.tokens -= int(bucket[1])
                self.cost = max(0.0, self.cost - bucket[2])  # float drift never goes below 0
                bucket[:] = [0, 0, 0.0]
            self._head = second
        return self._head  # a clock that stepped back counts in the newest bucket

    def add(self, now: float, *, requests: int, tokens: int, cost: float) -> None:
        bucket = self._buckets[self.advance(now) % self.SECONDS]
        bucket[0] += requests
        bucket[1] += tokens
        bucket[2] += cost
        self.requests += requests
        self.tokens += tokens
        self.cost += cost

    def totals(self, now: float) -> tuple[int, int, float]:
        """(requests, tokens, cost) of the last 60 s as of ``now``."""
        self.advance(now)
        return self.requests, self.tokens, self.cost


def attempts(usage: UpstreamUsage) -> int:
    """Attempts the replica made at the upstream in the interval, whatever their outcome."""
    return usage.success + usage.failure + usage.rate_limited + usage.ignored
