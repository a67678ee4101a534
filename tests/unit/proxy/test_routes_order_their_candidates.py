"""The routing table: which route a model takes, its fallbacks, and each strategy's order."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from sluice.proxy.load import RoundRobin, UpstreamLoad
from sluice.proxy.picking import order as picking_order
from sluice.proxy.table import (
    PLAN_CACHE_SIZE,
    Candidate,
    RouteEntry,
    Table,
    build_table,
)
from sluice.resources import parse


def upstream(
    name: str,
    models: list[str],
    *,
    priority: int = 0,
    weight: int = 100,
    cost: float = 0.0,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Upstream",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "provider": "openai-compatible",
            "baseURL": f"http://{name}.invalid/v1",
            "models": [{"name": m, "cost": {"inputPer1M": cost}} for m in models],
            "priority": priority,
            "weight": weight,
        },
    }


def route(
    name: str, models: list[str], targets: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name},
        "spec": {"models": models, "targets": targets, **spec},
    }


def table(*documents: dict[str, Any]) -> Table:
    return build_table([parse(d) for d in documents], {})


def as_is(route: RouteEntry | None, candidates: list[Candidate]) -> list[Candidate]:
    return candidates


def names(candidates: list[Candidate]) -> list[str]:
    return [c.target.name for c in candidates]


def test_without_a_route_every_upstream_listing_the_model_serves_it_cheapest_first() -> None:
    t = table(
        upstream("dear", ["m"], cost=10), upstream("cheap", ["m"], cost=1), upstream("other", ["x"])
    )

    resolved = t.resolve("m", order=as_is)

    assert resolved.route == "implicit:m"
    assert names(resolved.candidates) == ["cheap", "dear"]


def test_an_exact_route_beats_a_glob_and_the_longest_glob_wins() -> None:
    t = table(
        upstream("a", ["gpt-4o"]),
        upstream("b", ["gpt-4o"]),
        upstream("c", ["gpt-4o"]),
        route("any", ["gpt-*"], [{"upstream": "a"}]),
        route("four", ["gpt-4*"], [{"upstream": "b"}]),
        route("exact", ["gpt-4o"], [{"upstream": "c"}]),
    )

    assert t.route_for("gpt-4o").key == ("default", "exact")  # type: ignore[union-attr]
    assert t.route_for("gpt-4o-mini").key == ("default", "four")  # type: ignore[union-attr]
    assert t.route_for("gpt-3.5").key == ("default", "any")  # type: ignore[union-attr]
    assert t.route_for("claude") is None


def test_fallback_models_follow_the_routes_targets_and_cycles_end() -> None:
    t = table(
        upstream("big", ["large"]),
        upstream("small", ["mini"]),
        route("large", ["large"], [{"upstream": "big"}], fallbackModels=["mini"]),
        route("mini", ["mini"], [{"upstream": "small"}], fallbackModels=["large"]),
    )

    resolved = t.resolve("large", order=as_is)

    assert [(c.target.name, c.requested) for c in resolved.candidates] == [
        ("big", "large"),
        ("small", "mini"),
    ]


def test_a_fallback_cycle_through_several_routes_is_reported() -> None:
    t = table(
        upstream("big", ["large"]),
        upstream("small", ["mini"]),
        route("large", ["large"], [{"upstream": "big"}], fallbackModels=["mini"]),
        route("mini", ["mini"], [{"upstream": "small"}], fallbackModels=["large"]),
    )

    assert t.problems == [
        "ModelRoute default/large: fallbackModels form a cycle (large -> mini -> large); "
        "each model is tried once"
    ]


def test_a_fallback_chain_without_a_cycle_is_not_a_problem() -> None:
    t = table(
        upstream("big", ["large"]),
        upstream("small", ["mini"]),
        route("large", ["large"], [{"upstream": "big"}], fallbackModels=["mini"]),
        route("mini", ["mini"], [{"upstream": "small"}]),
    )

    assert t.problems == []


def test_selector_targets_match_labels_in_the_routes_namespace() -> None:
    t = table(
        upstream("eu-1", ["m"], labels={"region": "eu"}),
        upstream("us-1", ["m"], labels={"region": "us"}),
        upstream("eu-2", ["m"], labels={"region": "eu"}),
        route("m", ["m"], [{"upstreamSelector": {"matchLabels": {"region": "eu"}}}]),
    )

    assert names(t.resolve("m", order=as_is).candidates) == ["eu-1", "eu-2"]


def test_a_target_can_name_the_upstream_model_and_override_priority() -> None:
    t = table(
        upstream("a", ["m"], priority=5),
        route("m", ["m"], [{"upstream": "a", "model": "a-large", "priority": 1}]),
    )

    [candidate] = t.resolve("m", order=as_is).candidates

    assert (candidate.model, candidate.priority) == ("a-large", 1)


def candidates_for(strategy: str) -> tuple[RouteEntry, list[Candidate]]:
    t = table(
        upstream("a", ["m"], priority=2, weight=10, cost=3),
        upstream("b", ["m"], priority=0, weight=80, cost=9),
        upstream("c", ["m"], priority=1, weight=10, cost=1),
        route("m", ["m"], [{"upstream": n} for n in "abc"], strategy=strategy),
    )
    entry = t.route_for("m")
    assert entry is not None
    return entry, t.resolve("m", order=as_is).candidates


def order(strategy: str, *, rng: random.Random | None = None, rounds: int = 0) -> list[str]:
    """The order for one request, with a: 50 ms and idle, b: 200 ms and 3 in flight, c: 5 ms and
    1 in flight; round robin's cursor moved ``rounds`` times before."""
    entry, candidates = candidates_for(strategy)
    load = UpstreamLoad()
    for key, ms, busy in ((("default", "a"), 50.0, 0), (("default", "b"), 200.0, 3),
                          (("default", "c"), 5.0, 1)):  # fmt: skip
        load.answered(key, ms)
        for _ in range(busy):
            load.started(key)
    cursor = RoundRobin()
    for _ in range(rounds):
        cursor.next(entry.key)
    return names(picking_order(entry, candidates, load, cursor, rng or random.Random(1)))


def test_priority_orders_by_priority() -> None:
    assert order("Priority") == ["b", "c", "a"]


def test_cheapest_orders_by_cost() -> None:
    assert order("Cheapest") == ["c", "a", "b"]


def test_least_latency_orders_by_observed_latency() -> None:
    assert order("LeastLatency") == ["c", "a", "b"]


def test_least_busy_orders_by_attempts_in_flight() -> None:
    assert order("LeastBusy") == ["a", "c", "b"]


def test_round_robin_rotates() -> None:
    assert [order("RoundRobin", rounds=n) for n in range(3)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
    ]


def test_weighted_picks_first_in_proportion_to_weight() -> None:
    rng = random.Random(7)
    firsts = Counter(order("Weighted", rng=rng)[0] for _ in range(2000))

    assert 0.75 < firsts["b"] / 2000 < 0.85  # weight 80 of 100
    assert sorted(order("Weighted", rng=rng)) == ["a", "b", "c"]  # everyone is still a candidate


def test_the_per_model_plan_is_reused_but_the_order_runs_per_request() -> None:
    t = table(
        upstream("a", ["m1"]),
        upstream("b", ["m1"]),
        route("r", ["m1"], [{"upstream": "a"}, {"upstream": "b"}], strategy="LeastBusy"),
    )
    calls: list[list[str]] = []

    def rotate(route: RouteEntry | None, candidates: list[Candidate]) -> list[Candidate]:
        calls.append(names(candidates))
        shift = len(calls) % len(candidates)
        return candidates[shift:] + candidates[:shift]

    orders = [names(t.resolve("m1", order=rotate).candidates) for _ in range(3)]

    assert orders == [["b", "a"], ["a", "b"], ["b", "a"]]
    assert calls == [["a", "b"]] * 3  # every request sees the route's targets afresh


@pytest.mark.parametrize("strategy", ["Priority", "Cheapest"])
def test_an_order_that_reads_only_the_table_is_worked_out_once_per_model(strategy: str) -> None:
    t = table(
        upstream("a", ["m1"], priority=2, cost=2),
        upstream("b", ["m1"], priority=1, cost=1),
        route("r", ["m1"], [{"upstream": "a"}, {"upstream": "b"}], strategy=strategy),
    )
    calls: list[list[str]] = []

    def sort(route: RouteEntry | None, candidates: list[Candidate]) -> list[Candidate]:
        calls.append(names(candidates))
        return picking_order(route, candidates, UpstreamLoad(), RoundRobin(), random.Random())

    orders = [names(t.resolve("m1", order=sort).candidates) for _ in range(3)]

    assert orders == [["b", "a"]] * 3
    assert calls == [["a", "b"]]  # once, when the plan was made


def test_the_plan_cache_is_bounded_against_made_up_model_names() -> None:
    t = table(upstream("a", ["m1"]))
    for n in range(PLAN_CACHE_SIZE + 10):
        assert t.resolve(f"made-up-{n}", order=as_is).candidates == []

    assert len(t._plans) <= PLAN_CACHE_SIZE
    assert names(t.resolve("m1", order=as_is).candidates) == ["a"]


def test_a_secret_with_a_trailing_newline_is_trimmed_and_one_inside_refused() -> None:
    def keyed(name: str) -> dict[str, Any]:
        document = upstream(name, ["m1"])
        document["spec"]["credentials"] = {"secretRef": {"name": f"{name}-key", "key": "k"}}
        return document

    t = build_table(
        [parse(keyed("trailing")), parse(keyed("inside"))],
        {("default", "trailing-key"): {"k": "sk-abc\n"}, ("default", "inside-key"): {"k": "a\nb"}},
    )

    assert t.targets[("default", "trailing")].api_key == "sk-abc"
    assert t.targets[("default", "inside")].api_key is None
    assert any("line break" in p and "inside" in p for p in t.problems)
