"""What goes into status, when it is worth a write, and reading it back after a restart."""

from __future__ import annotations

from typing import Any

from sluice.core import BreakerPolicy, CircuitBreaker, Outcome, OutcomeKind, State
from sluice.operator.health import ProbeHistory, ProbeRecord
from sluice.operator.status import (
    Readiness,
    build_status,
    health_moved,
    snapshot_from_status,
    usage_moved,
    visible,
)
from sluice.operator.worker import WriteBudget

FAIL = Outcome(OutcomeKind.FAILURE, "HTTP 503", status=503)
READY = Readiness(True, "Ready", "policy fast; probing every 10s")
NOW = 1_800_000_000.0


def status_of(breaker: CircuitBreaker, history: ProbeHistory | None = None) -> dict[str, Any]:
    return build_status(
        snapshot=breaker.snapshot(),
        effective=breaker.state,
        policy_name="fast",
        last_reset=None,
        history=history or ProbeHistory(),
        readiness=READY,
        generation=3,
        previous_conditions=[],
        now=NOW,
    )


def tripped() -> CircuitBreaker:
    breaker = CircuitBreaker(BreakerPolicy(probe_failures=2, jitter=0), now=NOW)
    breaker.record_probe(FAIL, NOW)
    breaker.record_probe(FAIL, NOW + 1)
    return breaker


def test_an_open_breaker_is_written_with_its_open_period_and_conditions() -> None:
    status = status_of(tripped())

    assert status["breaker"]["state"] == "Open"
    assert status["breaker"]["reason"] == "ProbeFailures"
    assert status["breaker"]["openUntil"] == "2027-01-15T08:00:31Z"
    assert status["observedGeneration"] == 3
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert (available["status"], available["reason"]) == ("False", "Open")


def test_status_round_trips_through_a_restart() -> None:
    breaker = tripped()
    status = status_of(breaker)

    snapshot = snapshot_from_status(status)

    assert snapshot is not None
    assert snapshot.state is State.OPEN
    assert snapshot.open_until == breaker.open_until
    assert snapshot.trip_count == 1


def test_a_forced_state_keeps_the_automatic_one_for_the_restart() -> None:
    breaker = tripped()
    breaker.force(State.CLOSED, NOW + 2)
    status = status_of(breaker)

    assert status["breaker"]["state"] == "Closed"
    assert status["breaker"]["automaticState"] == "Open"
    snapshot = snapshot_from_status(status)
    assert snapshot is not None
    assert snapshot.state is State.OPEN


def test_unreadable_status_restores_nothing() -> None:
    assert snapshot_from_status(None) is None
    assert snapshot_from_status({"breaker": {"state": "Sideways"}}) is None
    assert snapshot_from_status({"breaker": {"state": "Open"}}) is None  # no openUntil


def test_health_figures_alone_do_not_change_what_a_user_sees() -> None:
    breaker = CircuitBreaker(BreakerPolicy(), now=NOW)
    history = ProbeHistory()
    before = status_of(breaker, history)
    history.add(ProbeRecord(NOW, True, 1.2, 200, None))
    after = status_of(breaker, history)

    assert visible(before) == visible(after)
    assert health_moved(before["health"], after["health"])  # first figures


def test_small_health_moves_are_not_worth_a_write() -> None:
    def health(availability: float, p95: float) -> dict[str, Any]:
        return {"availability": availability, "latencyMs": {"p95": p95}}

    assert not health_moved(health(100, 1.0), health(99.5, 2.0))  # noise
    assert health_moved(health(100, 1.0), health(98.3, 1.0))  # a failed probe in 60
    assert health_moved(health(100, 40.0), health(100, 90.0))  # by half and by 25 ms
    assert not health_moved(health(100, 400.0), health(100, 550.0))  # under half


def test_condition_transition_times_only_move_when_the_status_flips() -> None:
    breaker = CircuitBreaker(BreakerPolicy(), now=NOW)
    first = status_of(breaker)
    later = build_status(
        snapshot=breaker.snapshot(),
        effective=breaker.state,
        policy_name="fast",
        last_reset=None,
        history=ProbeHistory(),
        readiness=READY,
        generation=3,
        previous_conditions=first["conditions"],
        now=NOW + 600,
    )

    assert later["conditions"] == first["conditions"]


def test_probe_history_gives_availability_and_percentiles() -> None:
    history = ProbeHistory(size=4)
    for ok, ms in [(True, 10.0), (False, 5000.0), (True, 30.0), (True, 20.0), (True, 40.0)]:
        history.add(ProbeRecord(NOW, ok, ms, 200 if ok else None, None))

    assert history.availability() == 75.0  # the oldest fell out of the window of 4
    assert history.latency_percentile(0.5) == 30.0  # healthy probes only
    assert history.latency_percentile(0.99) == 40.0


def test_the_health_write_budget_caps_the_rate_whatever_the_noise() -> None:
    budget = WriteBudget(per_second=1.0, burst=10.0)
    granted = sum(budget.take(NOW + i * 0.01) for i in range(6000))  # 6000 asks in 60 s

    assert granted == 10 + 59  # the burst, then one a second


def test_usage_is_written_when_it_moves_by_a_tenth_or_to_or_from_zero() -> None:
    before = {"requestsPerMinute": 100, "tokensPerMinute": 5000, "costPerHour": 1.0}
    assert usage_moved(None, before)
    assert not usage_moved(before, {**before, "requestsPerMinute": 109})
    assert usage_moved(before, {**before, "requestsPerMinute": 111})
    assert usage_moved(before, {**before, "costPerHour": 0.0})
    assert usage_moved({**before, "tokensPerMinute": 0}, before)
    assert not usage_moved(before, None)
