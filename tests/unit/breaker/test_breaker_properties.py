"""Random sequences of calls, outcomes, probes, overrides and time steps.

Two machines:

- ``AgainstReferenceModel`` plays a simple policy (consecutive failures, a fixed open duration,
  HalfOpen with up to 3 trials) against a small, independent model of the documented semantics
  and requires the same state and the same admission decision at every step.
- ``Invariants`` plays random full policies (rates, slow calls, growth, jitter) and checks what
  must always hold: never more than ``maxRequests`` trials, no admission while Open before
  ``open_until`` or while held off, forced states win, no count below zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sluice.core import (
    BreakerPolicy,
    CircuitBreaker,
    FailureRate,
    Growth,
    HalfOpen,
    Outcome,
    OutcomeKind,
    Permit,
    SlowCalls,
    State,
)

OUTCOMES = st.sampled_from(
    [
        Outcome(OutcomeKind.SUCCESS, "HTTP 200"),
        Outcome(OutcomeKind.FAILURE, "HTTP 503"),
        Outcome(OutcomeKind.IGNORED, "HTTP 400"),
        Outcome(OutcomeKind.RATE_LIMITED, "HTTP 429", retry_after=None),
        Outcome(OutcomeKind.RATE_LIMITED, "HTTP 429", retry_after=2.0),
    ]
)
STEPS = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0])
OVERRIDES = st.sampled_from([None, State.OPEN, State.CLOSED])


@dataclass
class Model:
    """The documented semantics for: consecutive failures only, growth None, no jitter."""

    limit: int
    open_duration: float
    max_requests: int
    success_threshold: int
    max_duration: float
    state: State = State.CLOSED
    forced: State | None = None
    consecutive: int = 0
    open_until: float = 0.0
    held_until: float = -math.inf
    period: int = 0
    trials_admitted: int = 0
    successes: int = 0
    in_flight: dict[int, tuple[int, float]] = field(default_factory=dict)

    def _new_period(self) -> None:
        self.period += 1
        self.in_flight.clear()
        self.trials_admitted = 0
        self.successes = 0

    def trip(self, now: float) -> None:
        self.state = State.OPEN
        self.open_until = now + self.open_duration
        self.consecutive = 0
        self._new_period()

    def close(self) -> None:
        self.state = State.CLOSED
        self.consecutive = 0
        self._new_period()

    def tick(self, now: float) -> None:
        if self.state is State.OPEN and now >= self.open_until:
            self.state = State.HALF_OPEN
            self._new_period()
        elif self.state is State.HALF_OPEN and any(
            now - started >= self.max_duration for _, started in self.in_flight.values()
        ):
            self.trip(now)

    def admit(self, now: float, key: int) -> str | None:
        if self.forced is State.OPEN:
            return None
        if self.forced is State.CLOSED:
            self.tick(now)
            return "normal"
        if now < self.held_until:
            return None
        if self.state is State.CLOSED:
            return "normal"
        self.tick(now)
        if self.state is not State.HALF_OPEN or self.trials_admitted >= self.max_requests:
            return None
        self.trials_admitted += 1
        self.in_flight[key] = (self.period, now)
        return "trial"

    def _settle_rate_limit(self, outcome: Outcome, now: float) -> OutcomeKind:
        if outcome.kind is not OutcomeKind.RATE_LIMITED:
            return outcome.kind
        hold = outcome.retry_after if outcome.retry_after is not None else self.open_duration
        self.held_until = max(self.held_until, now + min(hold, 300.0))
        return OutcomeKind.IGNORED

    def _trial_success(self) -> None:
        self.successes += 1
        if self.successes >= self.success_threshold:
            self.close()

    def record(self, kind: str, key: int, outcome: Outcome, now: float) -> None:
        result = self._settle_rate_limit(outcome, now)
        if kind == "trial":
            self.tick(now)
            if self.in_flight.get(key, (None, 0.0))[0] != self.period:
                return
            del self.in_flight[key]
            if result is OutcomeKind.IGNORED:
                self.trials_admitted -= 1
            elif result is OutcomeKind.FAILURE:
                self.trip(now)
            else:
                self._trial_success()
            return
        if self.state is not State.CLOSED or result is OutcomeKind.IGNORED:
            return
        if result is OutcomeKind.SUCCESS:
            self.consecutive = 0
            return
        self.consecutive += 1
        if self.consecutive >= self.limit:
            self.trip(now)

    def probe(self, outcome: Outcome, now: float) -> None:
        self.tick(now)
        result = self._settle_rate_limit(outcome, now)
        if self.state is not State.HALF_OPEN or result is OutcomeKind.IGNORED:
            return
        if result is OutcomeKind.FAILURE:
            self.trip(now)
        else:
            self._trial_success()

    def force(self, override: State | None, now: float) -> None:
        if override is self.forced:
            return
        self.tick(now)
        self.forced = override

    def reset(self) -> None:
        self.state = State.CLOSED
        self.consecutive = 0
        self.held_until = -math.inf
        self._new_period()


class AgainstReferenceModel(RuleBasedStateMachine):
    @initialize(
        limit=st.integers(1, 4),
        open_duration=st.sampled_from([1.0, 2.0, 5.0]),
        max_requests=st.integers(1, 3),
        threshold_share=st.integers(0, 2),
        max_duration=st.sampled_from([1.0, 3.0, 10.0]),
    )
    def setup(
        self,
        *,
        limit: int,
        open_duration: float,
        max_requests: int,
        threshold_share: int,
        max_duration: float,
    ) -> None:
        success_threshold = max(1, min(max_requests, max_requests - threshold_share))
        self.now = 0.0
        self.next_key = 0
        self.pending: list[tuple[int, Permit, str]] = []
        self.breaker = CircuitBreaker(
            BreakerPolicy(
                consecutive_failures=limit,
                failure_rate=None,
                probe_failures=None,
                open_duration=open_duration,
                growth=Growth.NONE,
                jitter=0.0,
                half_open=HalfOpen(
                    max_requests=max_requests,
                    success_threshold=success_threshold,
                    max_duration=max_duration,
                ),
            ),
            now=0.0,
        )
        self.model = Model(limit, open_duration, max_requests, success_threshold, max_duration)

    @rule(step=STEPS)
    def time_passes(self, step: float) -> None:
        self.now += step

    @rule()
    def admit(self) -> None:
        key, self.next_key = self.next_key, self.next_key + 1
        expected = self.model.admit(self.now, key)
        permit = self.breaker.admit(self.now)
        assert (permit is None) == (expected is None), (expected, permit)
        if permit is not None:
            assert permit.trial == (expected == "trial")
            self.pending.append((key, permit, "trial" if permit.trial else "normal"))

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), outcome=OUTCOMES)
    def finish(self, data: st.DataObject, outcome: Outcome) -> None:
        index = data.draw(st.integers(0, len(self.pending) - 1))
        key, permit, kind = self.pending.pop(index)
        self.model.record(kind, key, outcome, self.now)
        self.breaker.record(permit, outcome, self.now)

    @rule(outcome=OUTCOMES)
    def call(self, outcome: Outcome) -> None:
        """Admit and finish at once: the common case, and it reaches deep states quickly."""
        self.admit()
        if self.pending and self.pending[-1][0] == self.next_key - 1:
            key, permit, kind = self.pending.pop()
            self.model.record(kind, key, outcome, self.now)
            self.breaker.record(permit, outcome, self.now)

    @rule(outcome=OUTCOMES)
    def probe(self, outcome: Outcome) -> None:
        self.model.probe(outcome, self.now)
        self.breaker.record_probe(outcome, self.now)

    @rule(override=OVERRIDES)
    def force(self, override: State | None) -> None:
        self.model.force(override, self.now)
        self.breaker.force(override, self.now)

    @rule()
    def reset(self) -> None:
        self.model.reset()
        self.breaker.reset(self.now)

    @invariant()
    def same_state(self) -> None:
        assert self.breaker.automatic_state is self.model.state
        assert self.breaker.state is (self.model.forced or self.model.state)
        assert self.breaker.consecutive_failures == self.model.consecutive
        assert self.breaker.trials_in_flight == len(self.model.in_flight)


class Invariants(RuleBasedStateMachine):
    @initialize(
        consecutive=st.one_of(st.none(), st.integers(1, 5)),
        rate=st.one_of(
            st.none(),
            st.builds(
                FailureRate,
                threshold=st.sampled_from([20.0, 50.0, 100.0]),
                minimum_requests=st.integers(1, 6),
                window=st.sampled_from([5.0, 10.0, 60.0]),
            ),
        ),
        slow=st.one_of(
            st.none(),
            st.builds(
                SlowCalls, duration=st.sampled_from([1.0, 3.0]), rate_threshold=st.just(50.0)
            ),
        ),
        growth=st.sampled_from(list(Growth)),
        jitter=st.sampled_from([0.0, 0.5, 1.0]),
        max_requests=st.integers(1, 3),
        max_duration=st.sampled_from([1.0, 4.0]),
        rate_limited_is_failure=st.booleans(),
        randomness=st.floats(0.0, 0.999),
    )
    def setup(
        self,
        *,
        consecutive: int | None,
        rate: FailureRate | None,
        slow: SlowCalls | None,
        growth: Growth,
        jitter: float,
        max_requests: int,
        max_duration: float,
        rate_limited_is_failure: bool,
        randomness: float,
    ) -> None:
        self.now = 0.0
        self.pending: list[Permit] = []
        self.policy = BreakerPolicy(
            consecutive_failures=consecutive,
            failure_rate=rate,
            slow_calls=slow,
            probe_failures=2,
            open_duration=2.0,
            max_open_duration=20.0,
            growth=growth,
            jitter=jitter,
            half_open=HalfOpen(
                max_requests=max_requests, success_threshold=1, max_duration=max_duration
            ),
            rate_limited_is_failure=rate_limited_is_failure,
        )
        self.breaker = CircuitBreaker(self.policy, now=0.0, random=lambda: randomness)

    @rule(step=STEPS)
    def time_passes(self, step: float) -> None:
        self.now += step

    @rule()
    def admit(self) -> None:
        breaker = self.breaker
        forced = breaker.forced
        was_open = breaker.automatic_state is State.OPEN
        open_until = breaker.open_until
        held = breaker.held_until
        permit = breaker.admit(self.now)
        if forced is State.OPEN:
            assert permit is None, "forced Open admitted a call"
        elif forced is State.CLOSED:
            assert permit is not None, "forced Closed rejected a call"
        else:
            if was_open and open_until is not None and self.now < open_until:
                assert permit is None, "admitted while Open before open_until"
            if held is not None and self.now < held:
                assert permit is None, "admitted while held off by a 429"
        if permit is not None:
            self.pending.append(permit)

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), outcome=OUTCOMES, duration=st.sampled_from([None, 0.5, 2.0, 5.0]))
    def finish(self, data: st.DataObject, outcome: Outcome, duration: float | None) -> None:
        permit = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        self.breaker.record(permit, outcome, self.now, duration=duration)

    @rule(outcome=OUTCOMES, duration=st.sampled_from([None, 0.5, 2.0, 5.0]))
    def call(self, outcome: Outcome, duration: float | None) -> None:
        before = len(self.pending)
        self.admit()
        if len(self.pending) > before:
            self.breaker.record(self.pending.pop(), outcome, self.now, duration=duration)

    @rule(outcome=OUTCOMES)
    def probe(self, outcome: Outcome) -> None:
        self.breaker.record_probe(outcome, self.now)

    @rule(override=OVERRIDES)
    def force(self, override: State | None) -> None:
        self.breaker.force(override, self.now)

    @rule()
    def reset(self) -> None:
        self.breaker.reset(self.now)

    @invariant()
    def trials_never_exceed_max_requests(self) -> None:
        assert self.breaker.trials_in_flight <= self.policy.half_open.max_requests
        if self.breaker.automatic_state is not State.HALF_OPEN:
            assert self.breaker.trials_in_flight == 0

    @invariant()
    def counts_never_negative(self) -> None:
        snapshot = self.breaker.snapshot()
        assert snapshot.consecutive_failures >= 0
        assert snapshot.consecutive_probe_failures >= 0
        assert snapshot.trip_count >= 0
        assert snapshot.trip_streak >= 0
        total, failures, slow = self.breaker.window_counts
        assert 0 <= failures <= total
        assert 0 <= slow <= total

    @invariant()
    def forced_state_wins(self) -> None:
        if self.breaker.forced is not None:
            assert self.breaker.state is self.breaker.forced

    @invariant()
    def open_periods_respect_the_cap(self) -> None:
        snapshot = self.breaker.snapshot()
        if snapshot.state is State.OPEN:
            assert snapshot.open_until is not None
            assert snapshot.opened_at is not None
            length = snapshot.open_until - snapshot.opened_at
            assert self.policy.open_duration <= length <= self.policy.max_open_duration


PROPERTY_SETTINGS = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestAgainstReferenceModel = AgainstReferenceModel.TestCase
TestAgainstReferenceModel.settings = PROPERTY_SETTINGS
TestInvariants = Invariants.TestCase
TestInvariants.settings = PROPERTY_SETTINGS
