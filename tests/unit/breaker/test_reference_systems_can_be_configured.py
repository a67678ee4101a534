"""The documented behaviour of five widely used breakers, configured with Sluice's policy.

Each scenario is the reference system's documented defaults, played against a fake clock.
"""

from __future__ import annotations

from sluice.core import BreakerPolicy, FailureRate, Growth, HalfOpen, Permit, State
from tests.unit.breaker.support import HTTP_400, HTTP_503, OK, TIMEOUT, Subject, make


def trial(subject: Subject, now: float) -> Permit:
    permit = subject.breaker.admit(now)
    assert permit is not None
    assert permit.trial
    return permit


def test_1_three_consecutive_failures_one_probe_fresh_timer() -> None:
    """Trip after 3 consecutive 5xx/timeouts, 4xx ignored, a success resets; open 30 s; exactly
    one half-open probe; its success closes, its failure reopens with a fresh 30 s timer."""
    subject = make(
        BreakerPolicy(
            consecutive_failures=3,
            failure_rate=None,
            open_duration=30,
            growth=Growth.NONE,
            jitter=0,
            half_open=HalfOpen(max_requests=1, success_threshold=1),
        )
    )

    subject.call(HTTP_503, 0)
    subject.call(TIMEOUT, 1)
    subject.call(HTTP_400, 2)  # ignored
    subject.call(OK, 3)  # resets
    subject.call(HTTP_503, 4)
    subject.call(TIMEOUT, 5)
    assert subject.state is State.CLOSED
    subject.call(HTTP_503, 6)
    assert subject.state is State.OPEN
    assert subject.breaker.admit(35.9) is None

    probe = trial(subject, 36)
    assert subject.breaker.admit(36) is None  # exactly one
    subject.breaker.record(probe, TIMEOUT, 37)
    assert subject.breaker.open_until == 67  # a fresh 30 s, not a grown one

    probe = trial(subject, 67)
    subject.breaker.record(probe, OK, 68)
    assert subject.state is State.CLOSED


def test_2_failure_threshold_5_success_threshold_2() -> None:
    subject = make(
        BreakerPolicy(
            consecutive_failures=5,
            failure_rate=None,
            open_duration=60,
            jitter=0,
            half_open=HalfOpen(max_requests=2, success_threshold=2),
        )
    )

    subject.calls(HTTP_503, 4, 0)
    assert subject.state is State.CLOSED
    subject.call(HTTP_503, 0)
    assert subject.state is State.OPEN

    first = trial(subject, 60)
    subject.breaker.record(first, OK, 61)
    assert subject.state is State.HALF_OPEN  # one success is not enough
    second = trial(subject, 61)
    subject.breaker.record(second, OK, 62)
    assert subject.state is State.CLOSED


def test_3_failure_window_60s_recovery_timeout_30s() -> None:
    subject = make(
        BreakerPolicy(
            consecutive_failures=None,
            failure_rate=FailureRate(threshold=50, minimum_requests=10, window=60),
            open_duration=30,
            jitter=0,
        )
    )

    subject.calls(HTTP_503, 9, 0)
    subject.call(HTTP_503, 61)  # the first nine aged out
    assert subject.state is State.CLOSED
    subject.calls(HTTP_503, 9, 62)  # ten within the window now
    assert subject.state is State.OPEN
    assert subject.breaker.open_until == 92


def test_4_error_rate_60_percent_volume_5_two_half_open_requests() -> None:
    subject = make(
        BreakerPolicy(
            consecutive_failures=None,
            failure_rate=FailureRate(threshold=60, minimum_requests=5, window=10),
            open_duration=5,
            jitter=0,
            half_open=HalfOpen(max_requests=2, success_threshold=2),
        )
    )

    subject.calls(OK, 2, 0)
    subject.calls(HTTP_503, 2, 0)
    assert subject.state is State.CLOSED  # 4 requests: under the volume threshold
    subject.call(HTTP_503, 0)  # 3 of 5 = 60%
    assert subject.state is State.OPEN

    a, b = trial(subject, 5), trial(subject, 5)
    assert subject.breaker.admit(5) is None
    subject.breaker.record(a, OK, 6)
    subject.breaker.record(b, OK, 6)
    assert subject.state is State.CLOSED


def test_5_max_failures_5_timeout_30s() -> None:
    subject = make(
        BreakerPolicy(consecutive_failures=5, failure_rate=None, open_duration=30, jitter=0)
    )

    subject.calls(TIMEOUT, 5, 0)
    assert subject.state is State.OPEN
    assert subject.breaker.admit(29) is None
    probe = trial(subject, 30)
    subject.breaker.record(probe, OK, 31)
    assert subject.state is State.CLOSED
