"""One replica's side of an Upstream's rate limits: its share, enforced locally.

``limits.requestsPerMinute`` and ``limits.tokensPerMinute`` hold for all replicas together.
The operator leader hands each replica a *share* of each limit (``sluice.core.reports.Share``;
alone, in standalone mode or before any answer, a replica's share is the whole limit). An
:class:`Allowance` keeps what this replica took in the last 60 seconds (a ring of one-second
buckets) and lets a request through only while ``taken + needed <= share``: no call leaves the
replica on the request path.

Tokens are known only when an answer ends, so a request *reserves* an estimate up front
(:meth:`Allowance.take`) and *settles* the real count at the end (:meth:`Allowance.settle`),
in the bucket the reservation went to.

A provider's own rate-limit headers (:class:`ProviderLimits`, read by each provider's module)
feed the same allowance: when the provider says no request or too few tokens remain until a
reset, the upstream is held off until then, before it would answer 429.

Pure: every call takes ``now`` (seconds; any clock, used consistently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["WINDOW_SECONDS", "Allowance", "MinuteCount", "ProviderLimits", "Reservation"]

WINDOW_SECONDS = 60


class MinuteCount:
    """What was counted in the last 60 seconds, in one-second buckets (fixed memory, O(1) per
    add; reading the total costs at most one pass over buckets that left the window). A clock
    that steps back less than the window counts in the newest bucket; one that steps back
    further starts the count again (else nothing would leave the window for that long)."""

    __slots__ = ("_buckets", "_head", "total")

    def __init__(self) -> None:
        self._buckets = [0.0] * WINDOW_SECONDS
        self._head = -1  # the second (int(now)) of the newest bucket; -1: nothing yet
        self.total = 0.0

    def advance(self, now: float) -> int:
        """Forget buckets older than the window; the current second."""
        second = int(now)
        head = self._head
        if head - WINDOW_SECONDS < second <= head:
            return head  # same second, or a small step back: count in the newest bucket
        buckets = self._buckets
        if head < 0 or abs(second - head) >= WINDOW_SECONDS:  # (a clock stepped far back)
            for i in range(WINDOW_SECONDS):
                buckets[i] = 0.0
            self.total = 0.0
        else:
            for s in range(head + 1, second + 1):
                i = s % WINDOW_SECONDS
                self.total -= buckets[i]
                buckets[i] = 0.0
            self.total = max(self.total, 0.0)  # float drift never makes it negative
        self._head = second
        return second

    def add(self, now: float, amount: float) -> int:
        """Count ``amount`` now; the second it was counted in (to adjust it later)."""
        second = self.advance(now)
        self._buckets[second % WINDOW_SECONDS] += amount
        self.total += amount
        return second

    def adjust(self, second: int, amount: float, now: float) -> None:
        """Correct what was counted in ``second`` by ``amount`` if it is still in the window."""
        head = self.advance(now)
        if head - second >= WINDOW_SECONDS or second > head:
            return
        i = second % WINDOW_SECONDS
        change = max(amount, -self._buckets[i])
        self._buckets[i] += change
        self.total += change

    def frees_in(self, now: float, need: float, limit: float) -> float:
        """Seconds until ``need`` more fits under ``limit`` (inf if it never will)."""
        head = self.advance(now)
        excess = self.total + need - limit
        if excess <= 0:
            return 0.0
        freed = 0.0
        for age in range(WINDOW_SECONDS - 1, -1, -1):  # the oldest bucket first
            second = head - age
            freed += self._buckets[second % WINDOW_SECONDS]
            if freed >= excess:
                return max(0.0, second + WINDOW_SECONDS - now)
        return math.inf


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What a provider's response headers said of its own limits (None: not said). Resets are
    absolute times on the caller's clock."""

    requests_remaining: int | None = None
    requests_reset_at: float | None = None
    tokens_remaining: int | None = None
    tokens_reset_at: float | None = None


@dataclass(slots=True)
class Reservation:
    """What one request took: settle it once with the real token count."""

    second: int
    tokens: int
    settled: bool = False


# A client turned away by a share smaller than the limit retries after at most this.
_SHARE_RETRY_SECONDS = 2.0
# Held off until a reset the provider did not state: try again after this.
_UNSTATED_RESET_SECONDS = 1.0


class Allowance:
    """One Upstream's rate limits at one replica (see the module's docstring)."""

    __slots__ = (
        "_requests_held_until",
        "_tokens_held_until",
        "_tokens_remaining",
        "heard_tokens",
        "limit_requests",
        "limit_tokens",
        "requests",
        "share_requests",
        "share_tokens",
        "taken_requests",
        "taken_tokens",
        "tokens",
        "wanted_requests",
        "wanted_tokens",
    )

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        self.limit_requests = requests_per_minute
        self.limit_tokens = tokens_per_minute
        # Until the leader answers (or standalone): the whole limit.
        self.share_requests: float | None = requests_per_minute
        self.share_tokens: float | None = tokens_per_minute
        self.requests = MinuteCount()
        self.tokens = MinuteCount()
        # Deltas since the last report (see drain_counts).
        self.taken_requests = self.taken_tokens = 0
        self.wanted_requests = self.wanted_tokens = 0
        self._requests_held_until = 0.0
        self._tokens_held_until = 0.0
        self._tokens_remaining: int | None = None
        self.heard_tokens = False  # the provider has said how many tokens it has left

    def set_limits(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        """The spec changed: a limit removed is gone at once; a new one starts whole until the
        leader's next answer shares it."""
        if requests_per_minute != self.limit_requests:
            self.limit_requests = self.share_requests = requests_per_minute
        if tokens_per_minute != self.limit_tokens:
            self.limit_tokens = self.share_tokens = tokens_per_minute

    def set_share(self, requests: float | None, tokens: float | None) -> None:
        """The leader's answer: this replica's share (a limit not set stays unlimited)."""
        if self.limit_requests is not None and requests is not None:
            self.share_requests = min(requests, float(self.limit_requests))
        if self.limit_tokens is not None and tokens is not None:
            self.share_tokens = min(tokens, float(self.limit_tokens))

    def has_room(self, now: float, tokens: int, *, want: bool = True) -> bool:
        """Whether one more request of ``tokens`` (estimated) fits; with ``want`` (a request's
        first look at this upstream, not its retry rounds), counts the want either way: a
        replica's demand, for its next share."""
        if want:
            self.wanted_requests += 1
            self.wanted_tokens += tokens
        return self.available_in(now, tokens) <= 0.0

    def available_in(self, now: float, tokens: int) -> float:
        """Seconds until a request of ``tokens`` would fit (0: now; inf: not within the
        window at this share)."""
        wait = 0.0
        if now < self._requests_held_until:
            wait = self._requests_held_until - now
        if now < self._tokens_held_until and (
            self._tokens_remaining is None or tokens > self._tokens_remaining
        ):
            wait = max(wait, self._tokens_held_until - now)
        share = self.share_requests
        if share is not None:
            wait = max(wait, self.requests.frees_in(now, 1, share))
        share = self.share_tokens
        if share is not None:
            wait = max(wait, self.tokens.frees_in(now, tokens, share))
        return wait

    def retry_in(self, now: float, tokens: int) -> float:
        """What a client turned away should wait (Retry-After): until there is room at this
        share, but no more than a moment while the share is the leader's split of a larger
        limit — the next answer follows this replica's demand, which the refusal counted."""
        wait = self.available_in(now, tokens)
        split = (self.share_requests is not None and self.limit_requests is not None
                 and self.share_requests < self.limit_requests) or (
                 self.share_tokens is not None and self.limit_tokens is not None
                 and self.share_tokens < self.limit_tokens)  # fmt: skip
        return min(wait, _SHARE_RETRY_SECONDS) if split else wait

    def take(self, now: float, tokens: int) -> Reservation:
        """Count one request and its estimated tokens (after :meth:`has_room` said yes)."""
        self.taken_requests += 1
        self.requests.add(now, 1)
        second = self.tokens.add(now, tokens)
        if self._tokens_remaining is not None:
            self._tokens_remaining -= tokens
        return Reservation(second, tokens)

    def settle(self, reservation: Reservation, tokens: int, now: float) -> None:
        """The request ended having used ``tokens``: correct its estimate."""
        if reservation.settled:
            return
        reservation.settled = True
        self.taken_tokens += tokens
        self.tokens.adjust(reservation.second, tokens - reservation.tokens, now)

    def heed(self, said: ProviderLimits, now: float) -> None:
        """A provider's own count: hold the upstream off until its reset when it is spent."""
        if said.requests_remaining is not None and said.requests_remaining <= 0:
            reset = said.requests_reset_at or now + _UNSTATED_RESET_SECONDS
            self._requests_held_until = max(self._requests_held_until, reset)
        if said.tokens_remaining is not None:
            self.heard_tokens = True
            self._tokens_remaining = said.tokens_remaining
            self._tokens_held_until = said.tokens_reset_at or now + _UNSTATED_RESET_SECONDS

    def drain_counts(self) -> tuple[int, int, int, int]:
        """(taken requests, taken tokens, wanted requests, wanted tokens) since the last drain."""
        counts = (self.taken_requests, self.taken_tokens, self.wanted_requests, self.wanted_tokens)
        self.taken_requests = self.taken_tokens = 0
        self.wanted_requests = self.wanted_tokens = 0
        return counts
