"""Closed -> Open: consecutive failures, failure rate, slow calls, failed probes."""

from __future__ import annotations

import pytest

from sluice.core import BreakerPolicy, FailureRate, Outcome, Reason, SlowCalls, State
from tests.unit.breaker.support import (
    DISCONNECT,
    HTTP_400,
    HTTP_503,
    OK,
    TIMEOUT,
    make,
    policy,
)


def test_n_minus_one_consecutive_failures_keep_it_closed() -> None:
    subject = make(policy(consecutive_failures=3))

    subject.calls(HTTP_503, 2, now=0)

    assert subject.state is State.CLOSED
    assert subject.breaker.consecutive_failures == 2
    assert subject.transitions == []


def test_n_consecutive_failures_open_it_with_a_message_naming_the_last() -> None:
    subject = make(policy(consecutive_failures=3))

    subject.call(TIMEOUT, now=0)
    subject.call(HTTP_503, now=1)
    subject.call(HTTP_503, now=2)

    assert subject.state is State.OPEN
    [transition] = subject.transitions
    assert (transition.from_state, transition.to_state) == (State.CLOSED, State.OPEN)
    assert transition.reason is Reason.CONSECUTIVE_FAILURES
    assert transition.message == "3 consecutive failures, last: HTTP 503; open for 30s"
    assert transition.at == 2


def test_a_success_resets_the_consecutive_count() -> None:
    subject = make(policy(consecutive_failures=3))

    subject.calls(HTTP_503, 2, now=0)
    subject.call(OK, now=0)
    subject.calls(HTTP_503, 2, now=0)

    assert subject.state is State.CLOSED
    assert subject.breaker.consecutive_failures == 2


@pytest.mark.parametrize("outcome", [HTTP_400, DISCONNECT], ids=["4xx", "client-disconnect"])
def test_client_side_outcomes_never_trip_nor_reset(outcome: Outcome) -> None:
    by_rate = make(
        policy(consecutive_failures=3, failure_rate=FailureRate(threshold=1, minimum_requests=1))
    )
    by_count = make(policy(consecutive_failures=3))

    by_rate.calls(outcome, 1000, now=0)
    by_count.calls(HTTP_503, 2, now=0)
    by_count.calls(outcome, 10, now=0)

    assert by_rate.state is State.CLOSED
    assert by_count.breaker.consecutive_failures == 2, "ignored outcomes must not reset the count"


def rate_policy(**overrides: object) -> BreakerPolicy:
    return policy(
        consecutive_failures=None,
        failure_rate=FailureRate(threshold=50, minimum_requests=10, window=60),
        **overrides,
    )


def test_failure_rate_does_not_trip_below_the_minimum_number_of_requests() -> None:
    subject = make(rate_policy())

    subject.calls(HTTP_503, 9, now=0)  # 100% failures, but only 9 requests

    assert subject.state is State.CLOSED


def test_failure_rate_trips_at_the_minimum_number_of_requests() -> None:
    subject = make(rate_policy())

    subject.calls(OK, 5, now=0)
    subject.calls(HTTP_503, 4, now=1)
    assert subject.state is State.CLOSED  # 9 requests
    subject.call(HTTP_503, now=2)  # the 10th: 5 of 10 = 50%

    assert subject.state is State.OPEN
    [transition] = subject.transitions
    assert transition.reason is Reason.FAILURE_RATE
    assert transition.message.startswith(
        "failure rate 50% (5 of 10 requests in 1m) reached the 50% threshold"
    )


def test_failure_rate_just_under_the_threshold_stays_closed() -> None:
    subject = make(rate_policy())

    subject.calls(OK, 11, now=0)
    subject.calls(HTTP_503, 10, now=0)  # 10 of 21 = 47.6%

    assert subject.state is State.CLOSED


def test_a_success_can_complete_the_volume_that_trips_the_rate() -> None:
    subject = make(rate_policy())

    subject.calls(HTTP_503, 5, now=0)
    subject.calls(OK, 4, now=0)
    assert subject.state is State.CLOSED
    subject.call(OK, now=0)  # 5 of 10 failed

    assert subject.state is State.OPEN


def test_failures_older_than_the_window_are_forgotten() -> None:
    subject = make(rate_policy())

    subject.calls(HTTP_503, 9, now=0)
    # The window is 60 s in 6 s slices: the failures at t=0 are gone once t reaches 60.
    subject.call(HTTP_503, now=60)

    assert subject.state is State.CLOSED


def test_failures_still_inside_the_window_count() -> None:
    subject = make(rate_policy())

    subject.calls(HTTP_503, 9, now=0)
    subject.call(HTTP_503, now=53.9)  # t=0's slice leaves at 60: still 10 requests in view

    assert subject.state is State.OPEN


def test_slow_calls_trip_by_rate() -> None:
    subject = make(
        policy(
            consecutive_failures=None,
            failure_rate=FailureRate(threshold=50, minimum_requests=4, window=60),
            slow_calls=SlowCalls(duration=5.0, rate_threshold=75),
        )
    )

    subject.call(OK, now=0, duration=1.0)
    subject.call(OK, now=0, duration=5.0)  # exactly the limit: slow
    subject.call(OK, now=0, duration=9.0)
    assert subject.state is State.CLOSED  # 3 requests, under the minimum
    subject.call(OK, now=0, duration=4.99)
    assert subject.state is State.CLOSED  # 2 of 4 slow: 50% < 75%
    for slow_so_far, total in [(3, 5), (4, 6), (5, 7)]:
        subject.call(OK, now=0, duration=30.0)
        assert subject.state is State.CLOSED, f"{slow_so_far} of {total} is under 75%"
    subject.call(OK, now=0, duration=30.0)  # 6 of 8 = 75%

    assert subject.state is State.OPEN
    [transition] = subject.transitions
    assert transition.reason is Reason.SLOW_CALLS
    assert transition.message.startswith(
        "slow calls 75% (6 of 8 requests in 1m took 5s or more) reached the 75% threshold"
    )


def test_failed_probes_trip_after_n_in_a_row_and_a_good_probe_resets() -> None:
    subject = make(policy(probe_failures=3))

    subject.breaker.record_probe(TIMEOUT, now=0)
    subject.breaker.record_probe(TIMEOUT, now=1)
    subject.breaker.record_probe(OK, now=2)
    subject.breaker.record_probe(TIMEOUT, now=3)
    subject.breaker.record_probe(TIMEOUT, now=4)
    assert subject.state is State.CLOSED
    subject.breaker.record_probe(HTTP_503, now=5)

    assert subject.state is State.OPEN
    [transition] = subject.transitions
    assert transition.reason is Reason.PROBE_FAILURES
    assert transition.message == "3 consecutive failed probes, last: HTTP 503; open for 30s"


def test_probe_failures_and_request_failures_are_counted_apart() -> None:
    subject = make(policy(consecutive_failures=3, probe_failures=3))

    subject.calls(HTTP_503, 2, now=0)
    subject.breaker.record_probe(TIMEOUT, now=0)
    subject.breaker.record_probe(TIMEOUT, now=0)

    assert subject.state is State.CLOSED


def test_streams_slower_than_the_token_rate_are_slow_calls_too() -> None:
    subject = make(
        policy(
            consecutive_failures=None,
            failure_rate=FailureRate(threshold=50, minimum_requests=4, window=60),
            slow_calls=SlowCalls(duration=60.0, rate_threshold=75, min_output_tokens_per_second=20),
        )
    )

    for rate in (5.0, 19.9, 50.0):  # two under 20 tokens/s, one over: 2 of 3 slow
        permit = subject.breaker.admit(0)
        assert permit is not None
        subject.breaker.record(permit, OK, 0, duration=0.5, tokens_per_second=rate)
    assert subject.breaker.window_counts == (3, 0, 2)
    permit = subject.breaker.admit(0)
    assert permit is not None
    subject.breaker.record(permit, OK, 0, duration=0.5, tokens_per_second=1.0)  # 3 of 4

    assert subject.state is State.OPEN
    assert "or streamed under 20 tokens/s" in subject.transitions[0].message
