"""Snapshot and restore: what the operator writes to status and reads back after a restart."""

from __future__ import annotations

from sluice.core import CircuitBreaker, Reason, State, Transition
from tests.unit.breaker.support import HTTP_503, make, policy, trip


def test_a_round_trip_keeps_everything_a_user_sees() -> None:
    subject = make(policy(open_duration=30))
    subject.calls(HTTP_503, 2, now=0)
    subject.breaker.force(State.CLOSED, 1)
    snapshot = subject.breaker.snapshot()

    restored = CircuitBreaker.restore(snapshot, policy(open_duration=30), now=2)

    assert restored.snapshot() == snapshot
    assert restored.consecutive_failures == 2
    assert restored.state is State.CLOSED
    assert restored.forced is State.CLOSED


def test_open_stays_open_until_open_until_after_a_restart() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=1000)
    snapshot = subject.breaker.snapshot()

    restored = CircuitBreaker.restore(snapshot, policy(open_duration=30), now=1010)

    assert restored.state is State.OPEN
    assert restored.admit(1029.9) is None
    assert restored.admit(1030) is not None
    assert restored.state is State.HALF_OPEN


def test_an_open_period_that_ended_during_the_restart_half_opens_and_says_so() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=0)
    seen: list[Transition] = []

    restored = CircuitBreaker.restore(
        subject.breaker.snapshot(), policy(open_duration=30), now=100, on_transition=seen.append
    )

    assert restored.state is State.HALF_OPEN
    assert [t.reason for t in seen] == [Reason.OPEN_ELAPSED]


def test_the_trip_streak_survives_so_durations_keep_growing() -> None:
    subject = make(policy(open_duration=30))
    trip(subject, now=0)
    restored = CircuitBreaker.restore(
        subject.breaker.snapshot(), policy(open_duration=30), now=30, random=lambda: 0.0
    )
    trial = restored.admit(30)
    assert trial is not None

    restored.record(trial, HTTP_503, 30)

    assert restored.open_until == 90  # 2 x 30: the streak came through the restart


def test_a_changed_policy_applies_without_losing_state() -> None:
    subject = make(policy(consecutive_failures=5))
    subject.calls(HTTP_503, 3, now=0)

    subject.breaker.set_policy(policy(consecutive_failures=4), 1)
    subject.call(HTTP_503, now=2)

    assert subject.state is State.OPEN
    assert subject.transitions[-1].message.startswith("4 consecutive failures")
