"""Local breakers: failures open them, open circuits get no traffic, one trial after the wait,
and a 503 circuit_open at once when nothing is available."""

from __future__ import annotations

import asyncio

from sluice.core import State
from tests.component.conftest import Gateway, MakeGateway


async def test_three_failures_open_the_local_breaker_and_it_gets_no_more_traffic(
    gateway: Gateway,
) -> None:
    gateway.fakes["primary"].default_status = 503
    for _ in range(3):
        assert (await gateway.chat()).headers["x-sluice-upstream"] == "secondary"
    assert gateway.breaker_state("primary") is State.OPEN
    hits = gateway.hits("primary")

    for _ in range(5):
        response = await gateway.chat()
        assert response.headers["x-sluice-upstream"] == "secondary"
        assert response.headers["x-sluice-attempts"] == "1"

    assert gateway.hits("primary") == hits == 3


async def test_after_the_open_duration_exactly_one_trial_goes_through(gateway: Gateway) -> None:
    primary = gateway.fakes["primary"]
    primary.default_status = 503
    for _ in range(3):
        await gateway.chat()
    primary.default_status = None
    gateway.clock.now += 2  # the policy's openDuration
    before = gateway.hits("primary")

    # Two requests at once: the first is primary's trial and is slow; the second may not be a
    # second trial, so it goes to secondary.
    slow = asyncio.create_task(gateway.chat(headers={"x-fake-delay-primary": "0.5"}))
    await asyncio.sleep(0.1)
    meanwhile = await gateway.chat()
    trial = await slow

    assert trial.headers["x-sluice-upstream"] == "primary"
    assert meanwhile.headers["x-sluice-upstream"] == "secondary"
    assert gateway.hits("primary") == before + 1
    assert gateway.breaker_state("primary") is State.CLOSED  # the trial succeeded


async def test_with_every_circuit_open_it_answers_503_at_once_and_contacts_nobody(
    gateway: Gateway,
) -> None:
    for fake in gateway.fakes.values():
        fake.default_status = 500
    for _ in range(3):
        await gateway.chat()
    assert gateway.breaker_state("primary") is State.OPEN
    assert gateway.breaker_state("secondary") is State.OPEN
    hits = {name: gateway.hits(name) for name in gateway.fakes}
    gateway.clock.now += 0.5

    response = await gateway.chat()

    body = await response.json()
    assert response.status == 503
    assert body["error"]["type"] == "circuit_open"
    assert "no upstream was contacted" in body["error"]["message"]
    assert response.headers["Retry-After"] == "2"  # ceil(2 s open - 0.5 s elapsed)
    assert response.headers["x-sluice-attempts"] == "0"
    assert {name: gateway.hits(name) for name in gateway.fakes} == hits


async def test_try_anyway_tries_the_first_candidate_even_when_all_are_open(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(route={"whenAllOpen": "TryAnyway"})
    for name in gateway.fakes:
        gateway.proxy.breakers.get(("default", name)).force(State.OPEN, gateway.clock())

    response = await gateway.chat()

    assert response.status == 200
    assert response.headers["x-sluice-upstream"] == "primary"


async def test_a_forced_open_upstream_gets_nothing_and_forced_closed_gets_everything(
    gateway: Gateway,
) -> None:
    breakers = gateway.proxy.breakers
    breakers.get(("default", "primary")).force(State.OPEN, gateway.clock())

    assert (await gateway.chat()).headers["x-sluice-upstream"] == "secondary"

    breakers.get(("default", "primary")).force(State.CLOSED, gateway.clock())
    gateway.fakes["primary"].default_status = 503
    for _ in range(5):
        await gateway.chat()

    assert gateway.hits("primary") == 5  # never skipped while forced Closed


async def test_health_goes_ok_degraded_unhealthy(gateway: Gateway) -> None:
    async def health() -> tuple[int, dict[str, object]]:
        response = await gateway.client.get("/health")
        return response.status, await response.json()

    status, body = await health()
    assert (status, body["status"]) == (200, "ok")
    assert body["upstreams"] == [
        {
            "name": "primary",
            "namespace": "default",
            "state": "closed",
            "failures": 0,
            "forced": False,
            "usage": {"requestsPerMinute": 0, "tokensPerMinute": 0, "costPerHour": 0.0},
        },
        {
            "name": "secondary",
            "namespace": "default",
            "state": "closed",
            "failures": 0,
            "forced": False,
            "usage": {"requestsPerMinute": 0, "tokensPerMinute": 0, "costPerHour": 0.0},
        },
    ]

    gateway.fakes["primary"].default_status = 503
    for _ in range(3):
        await gateway.chat()
    status, body = await health()
    assert (status, body["status"]) == (200, "degraded")
    assert [u["state"] for u in body["upstreams"]] == ["open", "closed"]  # type: ignore[union-attr]

    gateway.fakes["secondary"].default_status = 503
    for _ in range(3):
        await gateway.chat()
    status, body = await health()
    assert (status, body["status"]) == (503, "unhealthy")


async def test_health_shows_the_failures_that_opened_a_circuit_and_those_since(
    gateway: Gateway,
) -> None:
    gateway.fakes["primary"].default_status = 503
    for _ in range(3):
        await gateway.chat()

    opened = (await (await gateway.client.get("/health")).json())["upstreams"][0]
    gateway.clock.now += 3  # the open period (2 s) ends: the next request is a trial, and fails
    await gateway.chat()
    reopened = (await (await gateway.client.get("/health")).json())["upstreams"][0]

    assert (opened["state"], opened["failures"]) == ("open", 3)
    assert (reopened["state"], reopened["failures"]) == ("open", 4)
