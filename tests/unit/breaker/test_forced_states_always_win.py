"""Overrides: forced Open / Closed win over everything; counting goes on underneath."""

from __future__ import annotations

import pytest

from sluice.core import Reason, State
from tests.unit.breaker.support import HTTP_503, OK, make, policy, rate_limited, trip


def test_forced_open_rejects_even_a_healthy_closed_breaker() -> None:
    subject = make(policy())

    subject.breaker.force(State.OPEN, 5)

    assert subject.state is State.OPEN
    assert subject.breaker.automatic_state is State.CLOSED
    assert subject.breaker.admit(5) is None
    [transition] = subject.transitions
    assert (transition.from_state, transition.to_state) == (State.CLOSED, State.OPEN)
    assert transition.reason is Reason.FORCED_OPEN
    assert transition.message == "forced Open by override"
    assert transition.forced is State.OPEN


def test_forced_closed_admits_while_automatically_open_and_held_off() -> None:
    subject = make(policy())
    trip(subject, now=0)
    subject.breaker.record_probe(rate_limited(retry_after=100), 0)
    assert subject.breaker.held_until == 100

    subject.breaker.force(State.CLOSED, 1)

    assert subject.breaker.admit(1) is not None
    assert subject.state is State.CLOSED
    assert subject.breaker.automatic_state is State.OPEN


def test_failures_under_forced_closed_still_trip_the_automatic_breaker() -> None:
    subject = make(policy(consecutive_failures=3))
    subject.breaker.force(State.CLOSED, 0)

    subject.calls(HTTP_503, 3, now=1)

    assert subject.state is State.CLOSED  # what callers see
    assert subject.breaker.automatic_state is State.OPEN  # what it will be when lifted
    assert subject.transitions[-1].reason is Reason.CONSECUTIVE_FAILURES
    assert subject.transitions[-1].forced is State.CLOSED


def test_lifting_the_override_returns_to_the_automatic_state_with_counters_intact() -> None:
    subject = make(policy(consecutive_failures=3))
    subject.breaker.force(State.OPEN, 0)
    subject.breaker.record_probe(HTTP_503, 1)
    subject.breaker.record_probe(HTTP_503, 2)

    subject.breaker.force(None, 3)

    assert subject.state is State.CLOSED
    assert subject.breaker.consecutive_probe_failures == 2
    lifted = subject.transitions[-1]
    assert lifted.reason is Reason.OVERRIDE_LIFTED
    assert lifted.message == "override lifted; automatic state is Closed"
    assert (lifted.from_state, lifted.to_state) == (State.OPEN, State.CLOSED)


def test_an_open_period_that_ended_under_an_override_half_opens_when_lifted() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=0)
    subject.breaker.force(State.OPEN, 1)

    subject.breaker.force(None, 45)

    assert subject.state is State.HALF_OPEN
    assert subject.breaker.admit(45) is not None


def test_forcing_the_same_override_twice_reports_once() -> None:
    subject = make(policy())

    subject.breaker.force(State.OPEN, 0)
    subject.breaker.force(State.OPEN, 1)

    assert len(subject.transitions) == 1


def test_half_open_cannot_be_forced() -> None:
    with pytest.raises(ValueError, match="only Open or Closed"):
        make(policy()).breaker.force(State.HALF_OPEN, 0)


def test_reset_closes_and_zeroes_everything_but_keeps_the_override() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=0)
    subject.breaker.force(State.OPEN, 1)

    subject.breaker.reset(2, message="sluice.dev/reset annotation")

    assert subject.breaker.automatic_state is State.CLOSED
    assert subject.state is State.OPEN
    snapshot = subject.breaker.snapshot()
    assert (snapshot.trip_count, snapshot.trip_streak, snapshot.consecutive_failures) == (0, 0, 0)
    assert subject.transitions[-1].reason is Reason.RESET
    assert subject.transitions[-1].message == "sluice.dev/reset annotation"


def test_a_reset_breaker_opens_from_the_base_duration_again() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=0)
    permit = subject.breaker.admit(30)
    assert permit is not None
    subject.breaker.record(permit, HTTP_503, 30)  # streak 2

    subject.breaker.reset(31)
    trip(subject, now=32)

    assert subject.breaker.open_until == 62
    subject.call(OK, now=62)  # and it recovers as usual
    assert subject.state is State.CLOSED
