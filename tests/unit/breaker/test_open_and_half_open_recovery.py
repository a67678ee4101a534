"""Open -> HalfOpen -> Closed (or Open again): timers, trials, and their limits."""

from __future__ import annotations

import pytest

from sluice.core import Outcome, Reason, State
from tests.unit.breaker.support import (
    DISCONNECT,
    HTTP_400,
    HTTP_503,
    OK,
    TIMEOUT,
    make,
    policy,
    rate_limited,
    trip,
)


def test_open_rejects_everything_until_open_until() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=100)

    assert subject.breaker.open_until == 130
    for now in (100, 110, 129.999):
        assert subject.breaker.admit(now) is None
    assert subject.state is State.OPEN


def test_at_open_until_it_half_opens_and_admits_one_trial() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=100)

    permit = subject.breaker.admit(130)

    assert permit is not None
    assert permit.trial
    assert subject.state is State.HALF_OPEN
    half_open = subject.transitions[-1]
    assert half_open.reason is Reason.OPEN_ELAPSED
    assert half_open.message == "open for 30s; admitting 1 trial"


def test_a_second_concurrent_trial_is_rejected_when_one_is_permitted() -> None:
    subject = make(policy(half_open={"max_requests": 1, "success_threshold": 1}))
    trip(subject)

    first = subject.breaker.admit(30)
    second = subject.breaker.admit(30)

    assert first is not None
    assert second is None
    assert subject.breaker.trials_in_flight == 1


def test_a_successful_trial_closes_it_and_clears_the_counters() -> None:
    subject = make(policy())
    trip(subject)
    permit = subject.breaker.admit(30)
    assert permit is not None

    subject.breaker.record(permit, OK, 31)

    assert subject.state is State.CLOSED
    assert subject.transitions[-1].reason is Reason.TRIAL_SUCCEEDED
    assert subject.transitions[-1].message == "1 trial succeeded; closed"
    assert subject.breaker.consecutive_failures == 0
    assert subject.path() == ["Closed", "Open", "HalfOpen", "Closed"]


def test_a_failed_trial_reopens_with_a_grown_duration() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=0)  # open 0..30
    permit = subject.breaker.admit(30)
    assert permit is not None

    subject.breaker.record(permit, HTTP_503, 31)

    assert subject.state is State.OPEN
    reopened = subject.transitions[-1]
    assert reopened.reason is Reason.TRIAL_FAILED
    assert reopened.message == "trial failed: HTTP 503; open for 1m"
    assert subject.breaker.open_until == 91
    assert subject.breaker.admit(90.9) is None


def test_a_trial_that_never_returns_fails_at_max_duration() -> None:
    subject = make(
        policy(half_open={"max_requests": 1, "success_threshold": 1, "max_duration": 10})
    )
    trip(subject)
    hung = subject.breaker.admit(30)
    assert hung is not None

    assert subject.breaker.admit(39.999) is None  # still in flight: no second trial
    assert subject.breaker.poll(39.999) is State.HALF_OPEN
    assert subject.breaker.next_deadline() == 40

    assert subject.breaker.poll(40) is State.OPEN
    assert subject.transitions[-1].reason is Reason.TRIAL_TIMED_OUT
    assert subject.transitions[-1].message.startswith("trial did not finish within 10s")

    # When it finally returns, its result belongs to a period that is over: ignored.
    subject.breaker.record(hung, OK, 45)
    assert subject.state is State.OPEN


@pytest.mark.parametrize("outcome", [HTTP_400, DISCONNECT], ids=["4xx", "client-disconnect"])
def test_an_ignored_trial_gives_its_slot_back(outcome: Outcome) -> None:
    subject = make(policy())
    trip(subject)
    first = subject.breaker.admit(30)
    assert first is not None

    subject.breaker.record(first, outcome, 31)

    assert subject.state is State.HALF_OPEN
    assert subject.breaker.admit(31) is not None


def test_success_threshold_needs_that_many_trial_successes() -> None:
    subject = make(policy(half_open={"max_requests": 2, "success_threshold": 2}))
    trip(subject)
    a, b = subject.breaker.admit(30), subject.breaker.admit(30)
    assert a is not None
    assert b is not None
    assert subject.breaker.admit(30) is None  # only two trials per half-open period

    subject.breaker.record(a, OK, 31)
    assert subject.state is State.HALF_OPEN
    subject.breaker.record(b, OK, 32)

    assert subject.state is State.CLOSED
    assert subject.transitions[-1].message == "2 trials succeeded; closed"


def test_one_failed_trial_among_several_reopens_and_voids_the_others() -> None:
    subject = make(policy(half_open={"max_requests": 2, "success_threshold": 2}))
    trip(subject)
    a, b = subject.breaker.admit(30), subject.breaker.admit(30)
    assert a is not None
    assert b is not None

    subject.breaker.record(a, TIMEOUT, 31)
    subject.breaker.record(b, OK, 32)  # from the period that just ended

    assert subject.state is State.OPEN
    assert subject.reasons()[-1] == "TrialFailed"


def test_trials_are_limited_per_period_not_only_at_once() -> None:
    subject = make(policy(half_open={"max_requests": 2, "success_threshold": 2}))
    trip(subject)
    a = subject.breaker.admit(30)
    assert a is not None
    subject.breaker.record(a, OK, 30)
    b = subject.breaker.admit(30)
    assert b is not None

    assert subject.breaker.admit(30) is None


def test_a_probe_is_the_trial_in_half_open() -> None:
    subject = make(policy())
    trip(subject)

    subject.breaker.record_probe(OK, 30)

    assert subject.state is State.CLOSED
    assert subject.transitions[-1].message == "1 probe succeeded; closed"


def test_a_failed_probe_in_half_open_reopens() -> None:
    subject = make(policy())
    trip(subject)

    subject.breaker.record_probe(TIMEOUT, 30)

    assert subject.state is State.OPEN
    assert subject.transitions[-1].message.startswith("probe failed: total timeout")


def test_probes_while_open_do_not_shorten_the_open_period() -> None:
    subject = make(policy())
    trip(subject)

    subject.breaker.record_probe(OK, 10)

    assert subject.state is State.OPEN
    assert subject.breaker.admit(29) is None


def test_results_of_calls_admitted_before_the_trip_are_not_evidence() -> None:
    subject = make(policy())
    late = subject.breaker.admit(0)
    assert late is not None
    trip(subject, now=1)

    subject.breaker.record(late, HTTP_503, 2)

    assert subject.transitions[-1].reason is Reason.CONSECUTIVE_FAILURES
    assert len(subject.transitions) == 1
    assert subject.breaker.open_until == 31


def test_a_rate_limited_trial_gives_its_slot_back_and_holds_off() -> None:
    subject = make(policy())
    trip(subject)
    trial = subject.breaker.admit(30)
    assert trial is not None

    subject.breaker.record(trial, rate_limited(retry_after=5), 31)

    assert subject.state is State.HALF_OPEN
    assert subject.breaker.admit(35.9) is None  # held off by Retry-After
    assert subject.breaker.admit(36) is not None


def test_a_trial_reporting_success_after_max_duration_still_failed() -> None:
    subject = make(
        policy(half_open={"max_requests": 1, "success_threshold": 1, "max_duration": 10})
    )
    trip(subject)
    slow = subject.breaker.admit(30)
    assert slow is not None

    subject.breaker.record(slow, OK, 41)  # nothing polled the breaker in between

    assert subject.state is State.OPEN
    assert subject.transitions[-1].reason is Reason.TRIAL_TIMED_OUT


def test_failures_count_what_opened_the_circuit_until_it_closes() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=0)
    assert subject.breaker.failures == 3  # what tripped it, not the zeroed consecutive count

    subject.breaker.record_probe(HTTP_503, 1)  # while Open, a failed probe still counts
    assert subject.breaker.failures == 4
    subject.call(HTTP_503, 31)  # the trial fails: open again
    assert (subject.state, subject.breaker.failures) == (State.OPEN, 5)

    subject.call(OK, 100)  # the next trial closes it
    assert (subject.state, subject.breaker.failures) == (State.CLOSED, 0)
