"""Policies: defaults, duration strings, and refusals that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.core import (
    DEFAULT_FAILURE_STATUSES,
    BreakerPolicy,
    FailureRate,
    Growth,
    HalfOpen,
    PolicyError,
    SlowCalls,
    format_duration,
    parse_duration,
    parse_status_set,
)


def test_defaults_are_the_documented_ones() -> None:
    policy = BreakerPolicy()

    assert policy.consecutive_failures == 5
    assert policy.failure_rate == FailureRate(threshold=50.0, minimum_requests=10, window=60.0)
    assert policy.slow_calls is None
    assert policy.probe_failures == 3
    assert policy.open_duration == 30.0
    assert policy.max_open_duration == 300.0
    assert policy.growth is Growth.EXPONENTIAL
    assert policy.half_open == HalfOpen(max_requests=1, success_threshold=1, max_duration=60.0)
    assert policy.failure_statuses == DEFAULT_FAILURE_STATUSES
    assert 408 in policy.failure_statuses
    assert policy.rate_limit_statuses == frozenset({429})
    assert policy.rate_limited_is_failure is False
    assert policy.respect_retry_after is True


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        (" 10s ", 10.0),
    ],
)
def test_durations_are_read_as_users_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "", "2 s", "2sec", "-1s", "1d", "s", "1m30"])
def test_a_duration_without_a_unit_or_in_another_form_is_refused(text: str) -> None:
    with pytest.raises(PolicyError, match=r"openDuration: .*(duration|unit)") as error:
        parse_duration(text, field="openDuration")

    assert error.value.field == "openDuration"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.5, "500ms"), (2.0, "2s"), (1.5, "1.5s"), (90.0, "1m30s"), (3600, "1h")]
)
def test_durations_are_formatted_for_messages(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_status_sets_take_codes_and_classes() -> None:
    assert parse_status_set(["5xx", 408]) == DEFAULT_FAILURE_STATUSES


def test_a_bad_status_is_refused_with_its_index() -> None:
    with pytest.raises(PolicyError, match=r"failureStatuses\[1\]: '6xx' is not an HTTP status"):
        parse_status_set(["503", "6xx"])


INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"consecutive_failures": 0}, "consecutiveFailures", "at least 1"),
    ({"consecutive_failures": -3}, "consecutiveFailures", "at least 1"),
    ({"probe_failures": 0}, "probeFailures", "at least 1"),
    ({"open_duration": 0.0}, "openDuration", "not a positive duration"),
    ({"open_duration": -1.0}, "openDuration", "not a positive duration"),
    ({"max_open_duration": 10.0}, "maxOpenDuration", "shorter than openDuration 30s"),
    ({"jitter": 1.5}, "jitter", "not a fraction"),
    ({"jitter": -0.1}, "jitter", "not a fraction"),
    ({"healthy_period": 0.0}, "healthyPeriod", "not a positive duration"),
    ({"failure_rate": FailureRate(threshold=120)}, "failureRate.threshold", "120% is not"),
    ({"failure_rate": FailureRate(threshold=0)}, "failureRate.threshold", "0% is not"),
    (
        {"failure_rate": FailureRate(minimum_requests=0)},
        "failureRate.minimumRequests",
        "at least 1",
    ),
    ({"failure_rate": FailureRate(window=-60)}, "failureRate.window", "not a positive duration"),
    ({"slow_calls": SlowCalls(duration=0)}, "slowCalls.duration", "not a positive duration"),
    ({"slow_calls": SlowCalls(rate_threshold=101)}, "slowCalls.rateThreshold", "101% is not"),
    (
        {"half_open": HalfOpen(max_requests=0, success_threshold=0)},
        "halfOpen.maxRequests",
        "at least 1",
    ),
    (
        {"half_open": HalfOpen(max_requests=1, success_threshold=2)},
        "halfOpen.successThreshold",
        "2 successes can never be reached with maxRequests 1",
    ),
    ({"half_open": HalfOpen(max_duration=0)}, "halfOpen.maxDuration", "not a positive duration"),
    (
        {"failure_statuses": frozenset({429, 503})},
        "failureStatuses",
        "[429] also listed as rate-limit statuses",
    ),
]


@pytest.mark.parametrize(("overrides", "field", "message"), INVALID)
def test_invalid_policies_are_refused_naming_the_field(
    overrides: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(PolicyError) as error:
        BreakerPolicy(**overrides)

    assert error.value.field == field
    assert message in str(error.value)
    assert str(error.value).startswith(f"{field}: ")


def test_a_boolean_is_not_a_count() -> None:
    with pytest.raises(PolicyError, match="consecutiveFailures"):
        BreakerPolicy(consecutive_failures=True)


@pytest.mark.parametrize(
    ("growth", "durations"),
    [
        (Growth.EXPONENTIAL, [30, 60, 120, 240, 300, 300]),
        (Growth.LINEAR, [30, 60, 90, 120, 150, 180]),
        (Growth.NONE, [30, 30, 30, 30, 30, 30]),
    ],
)
def test_open_duration_grows_per_consecutive_trip_up_to_the_cap(
    growth: Growth, durations: list[int]
) -> None:
    policy = BreakerPolicy(open_duration=30, max_open_duration=300, growth=growth)

    assert [policy.open_duration_for(streak) for streak in range(6)] == durations


def test_a_huge_streak_does_not_overflow() -> None:
    assert BreakerPolicy().open_duration_for(10_000) == 300.0
