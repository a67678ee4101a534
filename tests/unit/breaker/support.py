"""Helpers for breaker tests: a breaker with its transitions recorded, and outcomes by name."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sluice.core import (
    BreakerPolicy,
    CircuitBreaker,
    ErrorKind,
    HalfOpen,
    Outcome,
    OutcomeKind,
    Permit,
    State,
    Transition,
    classify_error,
    classify_status,
)

OK = Outcome(OutcomeKind.SUCCESS, "HTTP 200", status=200)
HTTP_503 = Outcome(OutcomeKind.FAILURE, "HTTP 503", status=503)
HTTP_400 = Outcome(OutcomeKind.IGNORED, "HTTP 400", status=400)
TIMEOUT = classify_error(ErrorKind.TOTAL_TIMEOUT)
DISCONNECT = classify_error(ErrorKind.CLIENT_DISCONNECT)


def rate_limited(retry_after: float | None = None) -> Outcome:
    return Outcome(OutcomeKind.RATE_LIMITED, "HTTP 429", retry_after=retry_after, status=429)


def policy(**overrides: Any) -> BreakerPolicy:
    """A policy with only consecutive failures enabled, no jitter: easy to reason about.
    Pass any BreakerPolicy field to change it; ``half_open`` may be a dict of HalfOpen fields."""
    base = BreakerPolicy(
        consecutive_failures=3,
        failure_rate=None,
        slow_calls=None,
        probe_failures=3,
        open_duration=30.0,
        max_open_duration=300.0,
        jitter=0.0,
    )
    half_open = overrides.pop("half_open", None)
    if isinstance(half_open, dict):
        overrides["half_open"] = HalfOpen(**half_open)
    elif half_open is not None:
        overrides["half_open"] = half_open
    return replace(base, **overrides)


@dataclass
class Subject:
    """A breaker under test and everything it reported."""

    breaker: CircuitBreaker
    transitions: list[Transition] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.breaker.state

    def call(self, outcome: Outcome, now: float, *, duration: float | None = None) -> Permit:
        """Admit and record one attempt at ``now``; the attempt must be admitted."""
        permit = self.breaker.admit(now)
        assert permit is not None, f"rejected at t={now} in {self.breaker.state}"
        self.breaker.record(permit, outcome, now, duration=duration)
        return permit

    def calls(self, outcome: Outcome, count: int, now: float) -> None:
        for _ in range(count):
            self.call(outcome, now)

    def reasons(self) -> list[str]:
        return [str(t.reason) for t in self.transitions]

    def path(self) -> list[str]:
        """The states visited, starting with the first transition's origin."""
        if not self.transitions:
            return [str(self.breaker.state)]
        return [str(self.transitions[0].from_state)] + [str(t.to_state) for t in self.transitions]


def make(
    breaker_policy: BreakerPolicy | None = None, *, now: float = 0.0, random: float = 0.0
) -> Subject:
    transitions: list[Transition] = []
    breaker = CircuitBreaker(
        breaker_policy or policy(),
        now=now,
        on_transition=transitions.append,
        random=lambda: random,
    )
    return Subject(breaker, transitions)


def trip(subject: Subject, now: float = 0.0) -> None:
    """Trip a breaker whose policy trips on consecutive failures."""
    limit = subject.breaker.policy.consecutive_failures
    assert limit is not None
    subject.calls(HTTP_503, limit, now)
    assert subject.state is State.OPEN


__all__ = [
    "DISCONNECT",
    "HTTP_400",
    "HTTP_503",
    "OK",
    "TIMEOUT",
    "Subject",
    "classify_status",
    "make",
    "policy",
    "rate_limited",
    "trip",
]
