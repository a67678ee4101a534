"""A replica's side of a rate limit (sluice.core.ratelimit): its share of the last 60 s, with
token reservations settled at the end and the provider's own headers heeded."""

from __future__ import annotations

import math

import pytest

from sluice.core.ratelimit import Allowance, MinuteCount, ProviderLimits

T0 = 1_000_000.0


def take_all(allowance: Allowance, now: float, tokens: int = 0) -> int:
    taken = 0
    while allowance.has_room(now, tokens):
        allowance.take(now, tokens)
        taken += 1
        assert taken < 10_000
    return taken


def test_a_minute_count_forgets_what_left_the_window() -> None:
    count = MinuteCount()
    count.add(T0, 5)
    count.add(T0 + 30, 3)
    count.advance(T0 + 59.9)
    assert count.total == 8
    count.advance(T0 + 60)
    assert count.total == 3
    count.advance(T0 + 500)
    assert count.total == 0


def test_a_clock_that_steps_back_counts_in_the_newest_bucket() -> None:
    count = MinuteCount()
    count.add(T0 + 10, 1)
    count.add(T0, 1)
    assert count.total == 2
    count.advance(T0 + 70)
    assert count.total == 0


def test_the_whole_limit_is_the_share_until_the_leader_answers() -> None:
    allowance = Allowance(requests_per_minute=60, tokens_per_minute=None)
    assert take_all(allowance, T0) == 60
    assert not allowance.has_room(T0 + 30, 0)


def test_a_request_fits_again_when_the_oldest_leaves_the_window() -> None:
    allowance = Allowance(requests_per_minute=2, tokens_per_minute=None)
    allowance.take(T0, 0)
    allowance.take(T0 + 10, 0)
    assert allowance.available_in(T0 + 20, 0) == pytest.approx(40)
    assert allowance.has_room(T0 + 60, 0)


def test_a_share_bounds_what_this_replica_takes() -> None:
    allowance = Allowance(requests_per_minute=60, tokens_per_minute=None)
    allowance.set_share(20, None)
    assert take_all(allowance, T0) == 20
    allowance.set_share(25, None)
    assert take_all(allowance, T0 + 1) == 5


def test_a_share_never_exceeds_the_limit_and_an_unset_limit_stays_unlimited() -> None:
    allowance = Allowance(requests_per_minute=10, tokens_per_minute=None)
    allowance.set_share(500, 1_000)
    assert allowance.share_requests == 10
    assert allowance.share_tokens is None
    assert take_all(allowance, T0, tokens=10**6) == 10


def test_tokens_are_reserved_up_front_and_settled_to_the_real_count() -> None:
    allowance = Allowance(requests_per_minute=None, tokens_per_minute=1_000)
    first = allowance.take(T0, 600)
    assert not allowance.has_room(T0, 600)
    allowance.settle(first, 100, T0 + 1)
    assert allowance.tokens.total == 100
    assert allowance.has_room(T0 + 1, 600)
    allowance.settle(first, 5_000, T0 + 2)  # once only
    assert allowance.tokens.total == 100


def test_a_settlement_after_the_window_moved_on_changes_nothing() -> None:
    allowance = Allowance(requests_per_minute=None, tokens_per_minute=1_000)
    reservation = allowance.take(T0, 600)
    allowance.take(T0 + 61, 100)
    allowance.settle(reservation, 900, T0 + 62)
    assert allowance.tokens.total == 100


def test_a_request_larger_than_the_share_never_fits() -> None:
    allowance = Allowance(requests_per_minute=None, tokens_per_minute=100)
    assert math.isinf(allowance.available_in(T0, 101))


def test_the_provider_saying_no_requests_remain_holds_it_off_until_the_reset() -> None:
    allowance = Allowance(requests_per_minute=None, tokens_per_minute=None)
    allowance.heed(ProviderLimits(requests_remaining=0, requests_reset_at=T0 + 6), T0)
    assert allowance.available_in(T0, 0) == pytest.approx(6)
    assert allowance.has_room(T0 + 6, 0)


def test_too_few_provider_tokens_hold_off_only_requests_that_need_more() -> None:
    allowance = Allowance(requests_per_minute=None, tokens_per_minute=None)
    allowance.heed(ProviderLimits(tokens_remaining=500, tokens_reset_at=T0 + 3), T0)
    assert allowance.has_room(T0, 400)
    allowance.take(T0, 400)
    assert not allowance.has_room(T0, 400)
    assert allowance.available_in(T0, 400) == pytest.approx(3)
    assert allowance.has_room(T0 + 3, 400)


def test_an_unstated_reset_holds_off_for_a_second() -> None:
    allowance = Allowance(requests_per_minute=None, tokens_per_minute=None)
    allowance.heed(ProviderLimits(requests_remaining=0), T0)
    assert allowance.available_in(T0, 0) == pytest.approx(1)


def test_what_was_taken_and_wanted_is_drained_for_the_report() -> None:
    allowance = Allowance(requests_per_minute=3, tokens_per_minute=None)
    for _ in range(5):
        if allowance.has_room(T0, 10):
            allowance.settle(allowance.take(T0, 10), 7, T0)
    assert allowance.drain_counts() == (3, 21, 5, 50)
    assert allowance.drain_counts() == (0, 0, 0, 0)


def test_a_changed_limit_starts_whole_and_a_removed_one_is_gone() -> None:
    allowance = Allowance(requests_per_minute=60, tokens_per_minute=1_000)
    allowance.set_share(10, 100)
    allowance.set_limits(120, None)
    assert allowance.share_requests == 120
    assert allowance.share_tokens is None
    allowance.set_limits(120, None)
    allowance.set_share(30, None)
    allowance.set_limits(120, None)
    assert allowance.share_requests == 30


def test_a_clock_stepped_back_by_an_hour_does_not_freeze_the_limit() -> None:
    allowance = Allowance(requests_per_minute=2, tokens_per_minute=None)
    allowance.take(T0, 0)
    allowance.take(T0, 0)
    assert not allowance.has_room(T0 + 1, 0)
    assert allowance.has_room(T0 - 3600, 0)  # NTP stepped the wall clock back


def test_a_client_turned_away_by_a_split_share_retries_soon() -> None:
    allowance = Allowance(requests_per_minute=30, tokens_per_minute=None)
    allowance.set_share(0.6, None)  # 30 a minute over 50 replicas: one request never fits
    assert math.isinf(allowance.available_in(T0, 0))
    assert allowance.retry_in(T0, 0) == 2.0  # the next share follows the demand it counted
    alone = Allowance(requests_per_minute=1, tokens_per_minute=None)
    alone.take(T0, 0)
    assert alone.retry_in(T0 + 10, 0) == pytest.approx(50)


def test_a_look_that_is_not_a_want_is_not_counted_as_demand() -> None:
    allowance = Allowance(requests_per_minute=1, tokens_per_minute=None)
    allowance.has_room(T0, 10)
    allowance.has_room(T0, 10, want=False)  # the same request's retry round
    assert allowance.drain_counts() == (0, 0, 1, 10)
