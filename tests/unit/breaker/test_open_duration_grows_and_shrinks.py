"""Repeated trips open for longer (capped, with jitter); a healthy period starts over."""

from __future__ import annotations

import pytest

from sluice.core import Growth, State
from tests.unit.breaker.support import HTTP_503, OK, Subject, make, policy, trip


def fail_trial(subject: Subject, now: float) -> None:
    permit = subject.breaker.admit(now)
    assert permit is not None
    assert permit.trial
    subject.breaker.record(permit, HTTP_503, now)


def test_each_failed_recovery_doubles_the_open_duration_up_to_the_cap() -> None:
    subject = make(policy(open_duration=30, max_open_duration=200, growth=Growth.EXPONENTIAL))
    trip(subject, now=0)
    lengths = [subject.breaker.open_until]

    now = 0.0
    for _ in range(4):
        assert subject.breaker.open_until is not None
        now = subject.breaker.open_until
        fail_trial(subject, now)
        assert subject.breaker.open_until is not None
        lengths.append(subject.breaker.open_until - now)

    assert lengths == [30, 60, 120, 200, 200]
    assert subject.breaker.snapshot().trip_count == 5


def test_jitter_stretches_the_open_period_by_at_most_the_fraction() -> None:
    subject = make(policy(open_duration=30, jitter=0.2), random=0.5)

    trip(subject, now=0)

    assert subject.breaker.open_until == pytest.approx(33.0)


def test_jitter_never_exceeds_the_cap() -> None:
    subject = make(policy(open_duration=100, max_open_duration=100, jitter=1.0), random=0.999)

    trip(subject, now=0)

    assert subject.breaker.open_until == 100


def test_tripping_again_soon_after_closing_keeps_growing() -> None:
    subject = make(policy(open_duration=30, healthy_period=600))
    trip(subject, now=0)
    closing = subject.breaker.admit(30)
    assert closing is not None
    subject.breaker.record(closing, OK, 30)
    assert subject.state is State.CLOSED

    trip(subject, now=100)  # 70 s after closing: not healthy for long

    assert subject.breaker.open_until == 160  # 2 x 30


def test_after_a_healthy_period_the_open_duration_starts_over() -> None:
    subject = make(policy(open_duration=30, healthy_period=600))
    trip(subject, now=0)
    closing = subject.breaker.admit(30)
    assert closing is not None
    subject.breaker.record(closing, OK, 30)

    trip(subject, now=630)  # Closed for exactly the healthy period

    assert subject.breaker.open_until == 660
