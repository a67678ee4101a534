"""The picker's stages on their own: candidates, score (strategy, sticky first), filter
(maxConcurrent, breaker admission, lazily) and pick, within the retry budget."""

from __future__ import annotations

from typing import Any

from sluice.core import ADMITTED, Outcome, OutcomeKind, State
from sluice.proxy.breakers import Breakers
from sluice.proxy.load import UpstreamLoad
from sluice.proxy.picking import Picker, Plan
from sluice.proxy.table import Table
from tests.unit.proxy.test_routes_order_their_candidates import route, table, upstream

FAILED = Outcome(OutcomeKind.FAILURE, "HTTP 503", status=503)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def picker_for(t: Table, clock: Clock | None = None) -> Picker:
    breakers = Breakers()
    breakers.sync(t, 0.0)
    return Picker(breakers, UpstreamLoad(), clock or Clock())


def names(plan: Plan) -> list[str]:
    return [c.target.name for c in plan.candidates]


def picked(plan: Plan) -> list[str]:
    return [p.candidate.target.name for p in plan.picks()]


def priority_route(**spec: Any) -> Table:
    return table(
        upstream("a", ["m"], priority=2),
        upstream("b", ["m"], priority=0),
        upstream("c", ["m"], priority=1),
        route("r", ["m"], [{"upstream": n} for n in "abc"], strategy="Priority", **spec),
    )


def test_candidates_come_scored_by_the_routes_strategy() -> None:
    plan = picker_for(priority_route()).plan(priority_route(), "m", {})

    assert names(plan) == ["b", "c", "a"]
    assert plan.route == "default/r"
    assert plan.budget == 3  # retry.maxAttempts, the resource's default


def test_an_unknown_model_has_no_candidates_and_no_budget() -> None:
    t = priority_route()

    plan = picker_for(t).plan(t, "nope", {})

    assert (plan.candidates, plan.budget, plan.route) == ([], 0, "none")


def test_an_implicit_route_tries_each_upstream_at_most_once() -> None:
    t = table(upstream("a", ["m"], cost=2), upstream("b", ["m"], cost=1))

    plan = picker_for(t).plan(t, "m", {})

    assert names(plan) == ["b", "a"]  # cheapest first
    assert plan.budget == 2
    assert plan.retry.backoff(1) == 0.1  # the resource's default back-off, compiled


def test_a_sticky_session_puts_its_upstream_first_until_its_ttl() -> None:
    t = priority_route(stickySession={"header": "x-session", "ttl": "10s"})
    clock = Clock()
    picker = picker_for(t, clock)
    first = picker.plan(t, "m", {"x-session": "s1"})
    first.remember(first.candidates[2])  # "a" answered for this session

    again = picker.plan(t, "m", {"x-session": "s1"})
    other = picker.plan(t, "m", {"x-session": "s2"})
    clock.now += 11
    expired = picker.plan(t, "m", {"x-session": "s1"})

    assert names(again) == ["a", "b", "c"]
    assert names(other) == ["b", "c", "a"]
    assert names(expired) == ["b", "c", "a"]


def test_the_filter_skips_upstreams_at_their_concurrency_limit() -> None:
    t = table(
        upstream("a", ["m"], priority=0) | {"spec": {**upstream("a", ["m"])["spec"],
                                                     "limits": {"maxConcurrent": 1}}},
        upstream("b", ["m"], priority=1),
        route("r", ["m"], [{"upstream": "a"}, {"upstream": "b"}]),
    )  # fmt: skip
    picker = picker_for(t)
    picker.load.started(("default", "a"))

    plan = picker.plan(t, "m", {})

    assert picked(plan) == ["b"]
    assert plan.busy == 1


def test_the_filter_skips_open_circuits_and_counts_them() -> None:
    t = priority_route()
    picker = picker_for(t)
    picker.breakers.get(("default", "b")).force(State.OPEN, 0.0)

    plan = picker.plan(t, "m", {})

    assert picked(plan) == ["c", "a"]
    assert plan.skipped == 1


def test_picks_stop_at_the_budget_and_rounds_start_over() -> None:
    t = priority_route(retry={"maxAttempts": 4})
    plan = picker_for(t).plan(t, "m", {})

    first = picked(plan)
    second = picked(plan)

    assert first == ["b", "c", "a"]
    assert second == ["b"]  # the fourth attempt in all
    assert plan.picked == 4


def test_a_permit_is_taken_only_when_the_attempt_is_about_to_run() -> None:
    t = table(
        upstream("a", ["m"], priority=0),
        upstream("b", ["m"], priority=1),
        route("r", ["m"], [{"upstream": "a"}, {"upstream": "b"}]),
    )
    picker = picker_for(t)
    breaker = picker.breakers.get(("default", "b"))
    for _ in range(5):  # the default policy trips after 5 failures in a row
        permit = breaker.admit(0.0)
        assert permit is not None
        breaker.record(permit, FAILED, 0.0)
    picker.clock.now = 1e9  # type: ignore[attr-defined]  # long after: b is HalfOpen
    plan = picker.plan(t, "m", {})

    picks = plan.picks()
    first = next(picks)  # a answers; the round is abandoned here

    assert first.candidate.target.name == "a"
    assert breaker.trials_in_flight == 0  # b's one trial slot was never taken
    trial = breaker.admit(picker.clock())
    assert trial is not None
    assert trial.trial  # b is HalfOpen and its slot is still free


def test_try_anyway_picks_the_first_candidate_whatever_its_breakers_say() -> None:
    anyway = priority_route(whenAllOpen="TryAnyway")
    fail_fast = priority_route()
    plans = []
    for t in (anyway, fail_fast):
        picker = picker_for(t)
        for name in "abc":
            picker.breakers.get(("default", name)).force(State.OPEN, 0.0)
        plans.append(picker.plan(t, "m", {}))

    assert [picked(p) for p in plans] == [[], []]
    pick = plans[0].anyway()
    assert pick is not None
    assert (pick.candidate.target.name, pick.permit) == ("b", ADMITTED)
    assert plans[1].anyway() is None
    assert plans[1].available_in() == float("inf")  # forced Open: no end in sight
