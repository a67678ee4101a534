"""The leader splits each rate limit among replicas: never below what one took, never more
than the limit in all, by demand with max-min fairness, the rest evenly."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.core.shares import Claim, ShareBook, allocate


def test_idle_replicas_split_the_limit_evenly() -> None:
    shares = allocate(60, {"a": Claim(0, 0), "b": Claim(0, 0), "c": Claim(0, 0)})
    assert shares == pytest.approx({"a": 20, "b": 20, "c": 20})


def test_one_replica_with_all_the_demand_gets_all_that_is_free() -> None:
    shares = allocate(60, {"a": Claim(0, 600), "b": Claim(0, 0), "c": Claim(0, 0)})
    assert shares == pytest.approx({"a": 60, "b": 0, "c": 0})


def test_a_lone_replica_gets_the_whole_limit() -> None:
    assert allocate(60, {"only": Claim(10, 0)}) == {"only": 60}


def test_what_a_small_demand_leaves_goes_to_the_others() -> None:
    shares = allocate(100, {"small": Claim(0, 10), "big": Claim(0, 500), "mid": Claim(0, 40)})
    assert shares == pytest.approx({"small": 10, "mid": 40, "big": 50})


def test_no_replica_is_told_it_overdrew() -> None:
    # The limit was lowered below what they already took: each keeps its window, no more.
    shares = allocate(30, {"a": Claim(25, 100), "b": Claim(20, 100)})
    assert shares == {"a": 25, "b": 20}


def test_demand_shifting_moves_the_free_part_with_it() -> None:
    first = allocate(60, {"a": Claim(10, 200), "b": Claim(10, 0)})
    later = allocate(60, {"a": Claim(30, 0), "b": Claim(10, 200)})
    assert first == pytest.approx({"a": 50, "b": 10})
    assert later == pytest.approx({"a": 30, "b": 30})


def test_replicas_that_took_more_do_not_get_more_of_what_is_free() -> None:
    # Max-min on the whole share: the one that has not started catches up with the others.
    shares = allocate(60, {"a": Claim(20, 900), "b": Claim(20, 900), "c": Claim(0, 900)})
    assert shares == pytest.approx({"a": 20, "b": 20, "c": 20})


def test_zero_demand_replicas_keep_their_window_and_a_spare() -> None:
    shares = allocate(90, {"a": Claim(30, 0), "b": Claim(0, 0), "c": Claim(0, 30)})
    assert shares == pytest.approx({"a": 40, "b": 10, "c": 40})


claims = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=3),
    st.builds(
        Claim,
        st.floats(0, 1000, allow_nan=False),
        st.floats(0, 5000, allow_nan=False),
    ),
    min_size=1,
    max_size=8,
)


@given(st.floats(0, 5000, allow_nan=False), claims)
def test_shares_hold_their_promises_whatever_the_claims(
    limit: float, replicas: dict[str, Claim]
) -> None:
    shares = allocate(limit, replicas)
    assert set(shares) == set(replicas)
    for name, claim in replicas.items():
        assert shares[name] >= claim.window
    if sum(c.window for c in replicas.values()) <= limit:
        assert sum(shares.values()) == pytest.approx(limit, rel=1e-9, abs=1e-6)


@given(claims)
def test_the_answer_does_not_depend_on_the_order_replicas_reported_in(
    replicas: dict[str, Claim],
) -> None:
    first = allocate(100, replicas)
    for order in itertools.islice(itertools.permutations(replicas), 5):
        assert allocate(100, {n: replicas[n] for n in order}) == first


def test_a_replica_that_stops_reporting_leaves_and_its_share_returns() -> None:
    book = ShareBook(stale_after=3.0, refresh=0.0)
    for replica in ("a", "b", "c"):
        book.claim("u", replica, Claim(0, 0), now=0.0)
    assert book.share("u", "a", 60, now=0.0) == pytest.approx(20)
    book.claim("u", "a", Claim(0, 0), now=4.0)
    book.claim("u", "b", Claim(0, 0), now=4.0)  # c has been silent for 4 s
    assert book.share("u", "a", 60, now=4.0) == pytest.approx(30)
    assert book.replicas("u") == ["a", "b"]


def test_a_changed_limit_takes_effect_at_the_next_answer_up_and_down() -> None:
    book = ShareBook(refresh=10.0)  # even within the refresh period
    book.claim("u", "a", Claim(5, 0), now=0.0)
    book.claim("u", "b", Claim(5, 0), now=0.0)
    assert book.share("u", "a", 60, now=0.0) == pytest.approx(30)
    assert book.share("u", "a", 120, now=0.1) == pytest.approx(60)
    assert book.share("u", "a", 8, now=0.2) == pytest.approx(5)  # never below its window


def test_an_answer_is_never_below_the_window_just_reported() -> None:
    book = ShareBook(refresh=10.0)
    book.claim("u", "a", Claim(0, 0), now=0.0)
    book.claim("u", "b", Claim(0, 0), now=0.0)
    assert book.share("u", "a", 60, now=0.0) == pytest.approx(30)
    book.claim("u", "a", Claim(33, 0), now=0.5)  # a stream settled more than it reserved
    assert book.share("u", "a", 60, now=0.5) == 33


def test_a_new_replica_gets_its_share_once_the_others_have_heard_of_it() -> None:
    book = ShareBook(refresh=10.0)
    book.claim("u", "a", Claim(0, 0), now=0.0)
    assert book.share("u", "a", 60, now=0.0) == 60
    book.claim("u", "b", Claim(0, 0), now=0.1)
    assert book.share("u", "b", 60, now=0.1) == 0  # a still holds all 60
    book.claim("u", "a", Claim(0, 0), now=1.0)
    assert book.share("u", "a", 60, now=1.0) == pytest.approx(30)
    book.claim("u", "b", Claim(0, 0), now=1.1)
    assert book.share("u", "b", 60, now=1.1) == pytest.approx(30)


def test_shares_handed_out_at_different_moments_never_add_up_past_the_limit() -> None:
    book = ShareBook(refresh=0.0)
    for name in ("a", "b", "c"):
        book.claim("u", name, Claim(0, 0), now=0.0)
    assert [book.share("u", name, 60, now=0.0) for name in "abc"] == pytest.approx([20] * 3)
    # a burst: a has used its 20 and wants much more; c has not started yet.
    book.claim("u", "a", Claim(20, 3000), now=0.5)
    book.claim("u", "b", Claim(5, 3000), now=0.5)
    a = book.share("u", "a", 60, now=0.5)
    b = book.share("u", "b", 60, now=0.5)
    assert a + b + 20 <= 60 + 1e-9  # c may still use the 20 it was given
    book.claim("u", "c", Claim(0, 0), now=0.9)
    c = book.share("u", "c", 60, now=0.9)
    assert c == 0  # idle: what it held goes to those who want it
    book.claim("u", "a", Claim(20, 3000), now=1.5)
    later = book.share("u", "a", 60, now=1.5)
    assert later == pytest.approx(30)  # what c gave up, split with b, which wants as much
    assert later + b + c <= 60 + 1e-9


def test_expiring_forgets_upstreams_nobody_reports_any_more() -> None:
    book = ShareBook(stale_after=3.0)
    book.claim("u", "a", Claim(0, 0), now=0.0)
    book.expire(now=10.0)
    assert book.replicas("u") == []


@given(
    limit=st.floats(0.01, 1e6),
    claims=st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)), min_size=1, max_size=8),
)
def test_any_claims_are_allocated_without_error_within_the_limit(
    limit: float, claims: list[tuple[float, float]]
) -> None:
    named = {f"r{i}": Claim(window, demand) for i, (window, demand) in enumerate(claims)}

    shares = allocate(limit, named)

    assert all(shares[n] >= named[n].window for n in named)
    windows = sum(c.window for c in named.values())
    assert sum(shares.values()) <= max(limit, windows) * (1 + 1e-9) + 1e-9


def test_wants_a_rounding_error_past_the_limit_do_not_divide_by_zero() -> None:
    claims = {"a": Claim(0.0, 0.1), "b": Claim(0.0, 0.2), "c": Claim(0.0, 0.30000000000000004)}

    shares = allocate(0.6, claims)

    assert sum(shares.values()) == pytest.approx(0.6)
