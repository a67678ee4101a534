"""What replicas report is evidence for the cluster breaker, and the minute of usage."""

from __future__ import annotations

from sluice.core import BreakerPolicy, CircuitBreaker, FailureRate, SlowCalls, State
from sluice.core.folding import FOLD_LIMIT, UsageMinute, feed_breaker
from sluice.core.reports import UpstreamUsage


def breaker(**policy: object) -> CircuitBreaker:
    return CircuitBreaker(BreakerPolicy(jitter=0, **policy), now=0.0)  # type: ignore[arg-type]


def test_one_failure_from_each_of_three_replicas_adds_up_to_three_in_a_row() -> None:
    cluster = breaker(consecutive_failures=3)
    for replica in ("p-0", "p-1", "p-2"):
        feed_breaker(
            cluster, UpstreamUsage("ns", "u", failure=1, last_error="HTTP 503"), 1.0, source=replica
        )
    assert cluster.state is State.OPEN
    assert "3 consecutive failures, last: HTTP 503 (seen by p-2)" in cluster.snapshot().message


def test_a_reports_successes_do_not_hide_its_failures() -> None:
    cluster = breaker(consecutive_failures=3)
    feed_breaker(cluster, UpstreamUsage("ns", "u", success=5, failure=3), 1.0, source="p")
    assert cluster.state is State.OPEN


def test_successes_from_another_replica_reset_the_count() -> None:
    cluster = breaker(consecutive_failures=3)
    feed_breaker(cluster, UpstreamUsage("ns", "u", failure=2), 1.0, source="p-0")
    feed_breaker(cluster, UpstreamUsage("ns", "u", success=1), 1.0, source="p-1")
    feed_breaker(cluster, UpstreamUsage("ns", "u", failure=2), 1.0, source="p-2")
    assert cluster.state is State.CLOSED


def test_the_failure_rate_sees_every_replica() -> None:
    cluster = breaker(
        consecutive_failures=None, failure_rate=FailureRate(threshold=50, minimum_requests=10)
    )
    for replica in range(5):
        feed_breaker(
            cluster, UpstreamUsage("ns", "u", success=1, failure=1), 1.0, source=str(replica)
        )
    assert cluster.state is State.OPEN


def test_slow_calls_reported_as_slow_trip_the_slow_call_trigger() -> None:
    cluster = breaker(
        consecutive_failures=None,
        failure_rate=FailureRate(threshold=100, minimum_requests=4),
        slow_calls=SlowCalls(duration=5.0, rate_threshold=50),
    )
    feed_breaker(cluster, UpstreamUsage("ns", "u", success=4, slow=3), 1.0, source="p")
    assert cluster.state is State.OPEN
    assert cluster.snapshot().reason == "SlowCalls"


def test_rate_limited_attempts_count_only_if_the_policy_says_so() -> None:
    lenient = breaker(consecutive_failures=2)
    feed_breaker(lenient, UpstreamUsage("ns", "u", rate_limited=5), 1.0, source="p")
    assert lenient.state is State.CLOSED
    strict = breaker(consecutive_failures=2, rate_limited_is_failure=True)
    feed_breaker(strict, UpstreamUsage("ns", "u", rate_limited=5), 1.0, source="p")
    assert strict.state is State.OPEN


def test_a_huge_report_is_fed_scaled_with_its_ratio_kept() -> None:
    cluster = breaker(
        consecutive_failures=None, failure_rate=FailureRate(threshold=50, minimum_requests=10)
    )
    feed_breaker(cluster, UpstreamUsage("ns", "u", success=10**9, failure=10**8), 1.0, source="p")
    assert cluster.window_counts[0] == FOLD_LIMIT
    assert cluster.state is State.CLOSED


def test_the_usage_minute_forgets_what_is_older_than_sixty_seconds() -> None:
    minute = UsageMinute()
    minute.add(100.2, requests=3, tokens=30, cost=0.5)
    minute.add(130.9, requests=2, tokens=20, cost=0.25)
    assert minute.totals(131.0) == (5, 50, 0.75)
    assert minute.totals(160.5) == (2, 20, 0.25)
    assert minute.totals(500.0) == (0, 0, 0.0)


def test_successes_in_bulk_count_as_that_many_in_the_window() -> None:
    cluster = breaker(
        consecutive_failures=None, failure_rate=FailureRate(threshold=50, minimum_requests=10)
    )
    cluster.record_successes(7, 1.0, slow=2)
    assert cluster.window_counts == (7, 0, 2)
    feed_breaker(cluster, UpstreamUsage("ns", "u", failure=8), 1.0, source="p")
    assert cluster.state is State.OPEN  # 8 of 15


def tripped() -> CircuitBreaker:
    cluster = breaker(consecutive_failures=3, open_duration=10.0)
    feed_breaker(cluster, UpstreamUsage("ns", "u", failure=3), 1.0, source="p")
    assert cluster.poll(12.0) is State.HALF_OPEN
    return cluster


def test_without_a_probe_reported_successes_close_a_half_open_circuit() -> None:
    cluster = tripped()
    feed_breaker(cluster, UpstreamUsage("ns", "u", success=4), 12.5, source="p-1")
    assert cluster.state is State.CLOSED


def test_a_reported_failure_reopens_a_half_open_circuit() -> None:
    cluster = tripped()
    feed_breaker(
        cluster,
        UpstreamUsage("ns", "u", success=2, failure=1, last_error="HTTP 503"),
        12.5,
        source="p",
    )
    assert cluster.state is State.OPEN
    assert cluster.snapshot().reason == "TrialFailed"


def test_with_a_probe_reported_attempts_are_not_its_half_open_trials() -> None:
    cluster = tripped()
    feed_breaker(cluster, UpstreamUsage("ns", "u", success=4), 12.5, source="p", probed=True)
    assert cluster.state is State.HALF_OPEN  # the probe decides; these began before
    feed_breaker(cluster, UpstreamUsage("ns", "u", failure=1), 12.6, source="p", probed=True)
    assert cluster.state is State.HALF_OPEN
