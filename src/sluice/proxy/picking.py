"""Who gets a request: the one place the proxy picks an upstream.

The stages, named as the Gateway API Inference Extension's scheduler names its own:

1. **candidates** (:meth:`Picker.plan`): the route's targets for the model, then those of its
   fallback models (planned once per model and table, see ``Table.resolve``). None: the model
   is unknown.
2. **score** (:func:`order`): each route's candidates ordered by its strategy (Priority and
   Cheapest read only the table: once per model and table, see ``Table.resolve``); a sticky
   session's upstream first.
3. **filter** (:meth:`Plan.picks`, each round, right before each attempt): a candidate that
   does not speak the client's API is left out; one at its ``limits.maxConcurrent`` is
   skipped as busy; one that its breakers give no permit (the
   override, the cluster's breaker, this replica's) is skipped as open, never contacted.
4. **pick**: the first candidate through, with its permit, within the retry budget.

A round tries each candidate once; the Exchange asks for another round after a back-off while
budget is left. Rate limits will be a filter here too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from sluice.core import ADMITTED, Permit
from sluice.core.ratelimit import Reservation
from sluice.proxy.breakers import Breakers
from sluice.proxy.codecs import Codec, codec_for
from sluice.proxy.load import RoundRobin, StickySessions, UpstreamLoad
from sluice.proxy.metrics import ProxyMetrics
from sluice.proxy.quotas import RateLimits
from sluice.proxy.table import (
    IMPLICIT_RETRY,
    Candidate,
    RetryPlan,
    RouteEntry,
    Strategy,
    Table,
    WhenAllOpen,
)

__all__ = ["Pick", "Picker", "Plan", "order"]


@dataclass(frozen=True, slots=True)
class Pick:
    candidate: Candidate
    permit: Permit
    codec: Codec  # how the attempt speaks to this upstream for the client's API
    reservation: Reservation | None = None  # what it took of the upstream's rate limits


@dataclass
class Picker:
    """Plans requests over the table; holds what ordering and admission read."""

    breakers: Breakers
    load: UpstreamLoad
    clock: Callable[[], float]
    rng: random.Random = field(default_factory=random.Random)
    round_robin: RoundRobin = field(default_factory=RoundRobin)
    sticky: StickySessions = field(default_factory=StickySessions)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    metrics: ProxyMetrics | None = None

    def plan(
        self,
        table: Table,
        model: str,
        headers: Mapping[str, str],
        *,
        api: str = "/v1/chat/completions",
        tokens: int = 0,
    ) -> Plan:
        """Stages 1 and 2 for one request: its candidates, in the order to try them."""
        resolved = table.resolve(model, order=self._score)
        entry = resolved.entry
        session = None
        if entry is not None and entry.sticky is not None:
            session = headers.get(entry.sticky.header) or None
        candidates = resolved.candidates
        if session is not None and entry is not None:
            candidates = self._sticky_first(entry, session, candidates)
        retry = entry.retry if entry is not None else IMPLICIT_RETRY
        budget = (
            retry.max_attempts if entry is not None else min(retry.max_attempts, len(candidates))
        )
        return Plan(self, resolved.route, entry, candidates, retry, budget, session, api, tokens)

    def _score(self, route: RouteEntry | None, candidates: list[Candidate]) -> list[Candidate]:
        return order(route, candidates, self.load, self.round_robin, self.rng)

    def _sticky_first(
        self, entry: RouteEntry, session: str, candidates: list[Candidate]
    ) -> list[Candidate]:
        remembered = self.sticky.get(entry.key, session, self.clock())
        if remembered is None:
            return candidates
        first = [c for c in candidates if c.target.key == remembered]
        return first + [c for c in candidates if c.target.key != remembered]


@dataclass(slots=True)
class Plan:
    """One request's candidates and budget; :meth:`picks` yields who to try, round by round."""

    picker: Picker
    route: str  # the label for logs and metrics
    entry: RouteEntry | None
    candidates: list[Candidate]
    retry: RetryPlan
    budget: int  # attempts in all
    session: str | None  # the sticky session's key, if the route has one and it was sent
    api: str  # the client's endpoint: an upstream that cannot serve it is left out
    tokens: int = 0  # the request's estimated tokens, for tokensPerMinute (see quotas)
    picked: int = 0  # attempts handed out so far
    skipped: int = 0  # candidates without a permit in the last round
    busy: int = 0  # candidates skipped at their maxConcurrent, in every round
    unsupported: int = 0  # candidates that do not speak the client's API, in the last round
    limited: int = 0  # candidates skipped at their rate limit, in the last round
    rounds: int = 0  # rounds of picks so far

    @property
    def per_try(self) -> float | None:
        """The route's cap on each attempt's total time (retry.perTryTimeout)."""
        return self.retry.per_try_timeout

    def picks(self) -> Iterator[Pick]:
        """Stages 3 and 4, one round: each candidate that passes the filters, with its permit,
        until the budget is spent. A permit is taken only when the attempt is about to run."""
        self.skipped = self.unsupported = self.limited = 0
        self.rounds += 1
        first = self.rounds == 1  # demand is counted once a request, not once a round
        breakers, now = self.picker.breakers, self.picker.clock
        rate_limits = self.picker.rate_limits
        for candidate in self.candidates:
            if self.picked >= self.budget:
                return
            codec = codec_for(self.api, candidate.target)
            if codec is None:
                self.unsupported += 1  # e.g. embeddings from an Anthropic upstream
                continue
            if self._at_capacity(candidate):
                self.busy += 1  # limits.maxConcurrent: skip it rather than overload it
                continue
            allowance = rate_limits.get(candidate.target.key)
            if allowance is not None and not allowance.has_room(now(), self.tokens, want=first):
                self._limited(candidate)  # never sent what it would refuse with a 429
                continue
            permit = breakers.admit(candidate.target, now())
            if permit is None:
                self.skipped += 1
                continue
            self.picked += 1
            taken = None if allowance is None else allowance.take(now(), self.tokens)
            yield Pick(candidate, permit, codec, taken)

    def anyway(self) -> Pick | None:
        """whenAllOpen: TryAnyway, after a round with nobody admitted: the first candidate,
        whatever its breakers say. None under FailFast (and without a route)."""
        entry = self.entry
        if entry is None or entry.when_all_open is not WhenAllOpen.TRY_ANYWAY:
            return None
        rate_limits, now = self.picker.rate_limits, self.picker.clock()
        for candidate in self.candidates:
            codec = codec_for(self.api, candidate.target)
            if codec is None:
                continue
            allowance = rate_limits.get(candidate.target.key)
            if allowance is not None and allowance.available_in(now, self.tokens) > 0:
                continue  # an open circuit may be tried anyway; a spent limit is not
            self.picked += 1
            taken = None if allowance is None else allowance.take(now, self.tokens)
            return Pick(candidate, ADMITTED, codec, taken)
        return None

    def available_in(self) -> float:
        """Seconds until a candidate's breakers may admit again (for Retry-After)."""
        breakers, now = self.picker.breakers, self.picker.clock()
        return min(breakers.available_in(c.target, now) for c in self.candidates)

    def limit_frees_in(self) -> float:
        """Seconds until a candidate's rate limit has room for this request (Retry-After)."""
        rate_limits, now = self.picker.rate_limits, self.picker.clock()
        waits = [
            allowance.retry_in(now, self.tokens)
            for c in self.candidates
            if (allowance := rate_limits.get(c.target.key)) is not None
        ]
        return min(waits, default=1.0)

    def too_large(self) -> bool:
        """Every candidate held back is so by a tokensPerMinute smaller than this request."""
        rate_limits = self.picker.rate_limits
        return all(rate_limits.never_fits(c.target.key, self.tokens) for c in self.candidates)

    def _limited(self, candidate: Candidate) -> None:
        self.limited += 1
        metrics = self.picker.metrics
        if metrics is not None:
            namespace, name = candidate.target.key
            metrics.child(metrics.limit_skips, namespace, name).inc()

    def remember(self, candidate: Candidate) -> None:
        """The candidate answered for good: a sticky session sticks to it."""
        entry = self.entry
        if self.session is None or entry is None or entry.sticky is None:
            return
        until = self.picker.clock() + entry.sticky.ttl
        self.picker.sticky.remember(entry.key, self.session, candidate.target.key, until)

    def _at_capacity(self, candidate: Candidate) -> bool:
        limit = candidate.target.max_concurrent
        return limit is not None and self.picker.load.in_flight(candidate.target.key) >= limit


def order(
    route: RouteEntry | None,
    candidates: list[Candidate],
    load: UpstreamLoad,
    round_robin: RoundRobin,
    rng: random.Random,
) -> list[Candidate]:
    """Stage 2: a route's candidates ordered by its strategy (stable: declaration order breaks
    ties). Without a route, cheapest first."""
    strategy = route.strategy if route is not None else Strategy.CHEAPEST
    if strategy is Strategy.PRIORITY:
        return sorted(candidates, key=lambda c: c.priority)
    if strategy is Strategy.CHEAPEST:
        return sorted(candidates, key=lambda c: (c.target.cost(c.requested), c.priority))
    if strategy is Strategy.LEAST_LATENCY:
        return sorted(candidates, key=lambda c: load.latency_ms(c.target.key))
    if strategy is Strategy.LEAST_BUSY:
        return sorted(candidates, key=lambda c: (load.in_flight(c.target.key), c.priority))
    if strategy is Strategy.ROUND_ROBIN and candidates:
        start = round_robin.next(route.key if route is not None else ("", "")) % len(candidates)
        return candidates[start:] + candidates[:start]
    if strategy is Strategy.WEIGHTED:
        return _weighted(candidates, rng)
    return candidates


def _weighted(candidates: list[Candidate], rng: random.Random) -> list[Candidate]:
    """A weighted random order without replacement; weight 0 goes last."""
    pool = [c for c in candidates if c.weight > 0]
    ordered: list[Candidate] = []
    while pool:
        pick = rng.choices(pool, weights=[c.weight for c in pool])[0]
        ordered.append(pick)
        pool.remove(pick)
    return ordered + [c for c in candidates if c.weight <= 0]
