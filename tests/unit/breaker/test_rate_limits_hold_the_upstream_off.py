"""429: hold the upstream off for Retry-After; trip on it only if the policy says so."""

from __future__ import annotations

import math

from sluice.core import State
from tests.unit.breaker.support import HTTP_503, make, policy, rate_limited


def test_429_holds_off_for_retry_after_without_tripping() -> None:
    subject = make(policy(consecutive_failures=1))

    subject.call(rate_limited(retry_after=12), now=100)

    assert subject.state is State.CLOSED
    assert subject.breaker.admit(111.9) is None
    assert subject.breaker.available_in(105) == 7
    assert subject.breaker.admit(112) is not None
    assert subject.transitions == []


def test_429_without_retry_after_holds_off_for_the_open_duration() -> None:
    subject = make(policy(open_duration=30))

    subject.call(rate_limited(), now=0)

    assert subject.breaker.admit(29.9) is None
    assert subject.breaker.admit(30) is not None


def test_retry_after_is_capped_at_the_max_open_duration() -> None:
    subject = make(policy(max_open_duration=300))

    subject.call(rate_limited(retry_after=86_400), now=0)

    assert subject.breaker.held_until == 300


def test_retry_after_can_be_disregarded_by_policy() -> None:
    subject = make(policy(open_duration=30, respect_retry_after=False))

    subject.call(rate_limited(retry_after=1), now=0)

    assert subject.breaker.held_until == 30


def test_a_shorter_retry_after_does_not_cut_a_longer_hold() -> None:
    subject = make(policy())
    first, second = subject.breaker.admit(0), subject.breaker.admit(0)  # two calls in flight
    assert first is not None
    assert second is not None

    subject.breaker.record(first, rate_limited(retry_after=60), 0)
    subject.breaker.record(second, rate_limited(retry_after=5), 1)

    assert subject.breaker.held_until == 60


def test_429_counts_toward_tripping_when_the_policy_says_so() -> None:
    subject = make(policy(consecutive_failures=2, rate_limited_is_failure=True))
    first = subject.breaker.admit(0)
    second = subject.breaker.admit(0)
    assert first is not None
    assert second is not None

    subject.breaker.record(first, rate_limited(1), 0)
    subject.breaker.record(second, HTTP_503, 0)

    assert subject.state is State.OPEN
    assert subject.transitions[-1].message.startswith("2 consecutive failures, last: HTTP 503")


def test_429_does_not_reset_the_consecutive_count_by_default() -> None:
    subject = make(policy(consecutive_failures=3))
    subject.calls(HTTP_503, 2, now=0)

    subject.call(rate_limited(0), now=0)

    assert subject.breaker.consecutive_failures == 2


def test_available_in_is_infinite_only_when_forced_open() -> None:
    subject = make(policy())
    subject.breaker.force(State.OPEN, 0)

    assert subject.breaker.available_in(0) == math.inf
