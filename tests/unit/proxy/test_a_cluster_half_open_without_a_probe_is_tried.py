"""The cluster's breaker HalfOpen: with a probe, the probe is the trial and replicas send
nothing; without one, each replica sends one request at a time as the trial (so a breaker that
reports tripped can close again)."""

from __future__ import annotations

from typing import Any

from sluice.core import Outcome, OutcomeKind, State
from sluice.proxy.breakers import Breakers
from sluice.proxy.table import Target, build_table
from sluice.resources import parse
from tests.unit.proxy.test_routes_order_their_candidates import upstream

NOW = 1000.0
OK = Outcome(OutcomeKind.SUCCESS, "HTTP 200", status=200)
HALF_OPEN = {"breaker": {"state": "HalfOpen"}}


def half_open(**spec: Any) -> tuple[Breakers, Target]:
    document = upstream("a", ["m"])
    document["spec"].update(spec)
    table = build_table([parse(document)], {}, statuses={("default", "a"): HALF_OPEN})
    breakers = Breakers()
    breakers.sync(table, NOW)
    target = table.targets[("default", "a")]
    assert target.cluster_state is State.HALF_OPEN
    return breakers, target


def test_without_a_probe_one_request_at_a_time_is_the_trial() -> None:
    breakers, target = half_open()

    first = breakers.admit(target, NOW)
    assert first is not None
    assert breakers.admit(target, NOW) is None  # one at a time

    breakers.record(target, first, OK, NOW + 1, 0.1)
    assert breakers.admit(target, NOW + 1) is not None  # its outcome went to the operator


def test_with_a_probe_the_probe_is_the_trial() -> None:
    breakers, target = half_open(probe={"interval": "10s"})

    assert breakers.admit(target, NOW) is None


def test_an_override_still_wins() -> None:
    breakers, target = half_open(breaker={"override": "Closed"})

    assert [breakers.admit(target, NOW) is not None for _ in range(3)] == [True] * 3
