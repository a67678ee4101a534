"""Rate limits and cost in one replica (standalone: its share is the whole limit).

An upstream at ``limits.requestsPerMinute`` or ``tokensPerMinute`` is passed over like one held
off by a 429, never sent what it would refuse; with no other candidate the client gets
``429 rate_limited`` and no upstream is contacted. A provider's own ``x-ratelimit-*`` headers
feed the same limiter. What answers cost is counted per model.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from sluice.fakes import FakeUpstream
from tests.component.conftest import Gateway, MakeGateway, manifests


def limited(
    fakes: dict[str, FakeUpstream], name: str, limits: dict[str, int], **route: Any
) -> list[dict[str, Any]]:
    documents = manifests(fakes, route=route or None)
    for document in documents:
        if document["kind"] == "Upstream" and document["metadata"]["name"] == name:
            document["spec"]["limits"] = limits
    return documents


def only(fakes: dict[str, FakeUpstream], name: str, **spec: Any) -> list[dict[str, Any]]:
    """The manifests with one Upstream in the route, its spec extended by ``spec``."""
    documents = manifests({name: fakes[name]})
    for document in documents:
        if document["kind"] == "Upstream":
            document["spec"].update(spec)
    return documents


def metric(text: str, prefix: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_an_upstream_at_its_request_limit_is_passed_over_for_the_next(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    gateway = await gateway_factory(documents=limited(fakes, "primary", {"requestsPerMinute": 3}))

    answered_by = [(await gateway.chat()).headers["x-sluice-upstream"] for _ in range(5)]

    assert answered_by == ["primary"] * 3 + ["secondary"] * 2
    assert gateway.hits("primary") == 3
    text = await (await gateway.client.get("/metrics")).text()
    skips = 'sluice_rate_limit_skips_total{namespace="default",upstream="primary"}'
    assert metric(text, skips) == 2


async def test_the_limit_frees_as_the_minute_moves_on(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    gateway = await gateway_factory(documents=limited(fakes, "primary", {"requestsPerMinute": 2}))
    for _ in range(2):
        await gateway.chat()
    assert (await gateway.chat()).headers["x-sluice-upstream"] == "secondary"

    gateway.clock.now += 61
    assert (await gateway.chat()).headers["x-sluice-upstream"] == "primary"


async def test_with_no_other_candidate_the_excess_gets_429_rate_limited_and_no_upstream_is_contacted(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    gateway = await gateway_factory(
        documents=only(fakes, "primary", limits={"requestsPerMinute": 2})
    )
    for _ in range(2):
        await gateway.openai.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}]
        )
    gateway.clock.now += 15

    with pytest.raises(openai.RateLimitError) as raised:
        await gateway.openai.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}]
        )

    response = raised.value.response
    assert response.json()["error"]["type"] == "rate_limited"
    assert response.headers["x-sluice-attempts"] == "0"
    # The first of the two leaves the window 60 s after it was taken: 45 s from now.
    assert 44 <= int(response.headers["retry-after"]) <= 46
    assert gateway.hits("primary") == 2
    text = await (await gateway.client.get("/metrics")).text()
    assert metric(text, 'sluice_rate_limit_rejections_total{route="default/m1"}') == 1


async def test_a_token_limit_reserves_the_estimate_and_keeps_the_real_count(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    # The fake's answers use 5 tokens (1 in, 4 out); each request reserves about 1,000.
    gateway = await gateway_factory(documents=limited(fakes, "primary", {"tokensPerMinute": 1_500}))

    for _ in range(5):
        response = await gateway.chat(max_tokens=1_000)
        assert response.headers["x-sluice-upstream"] == "primary"

    health = await (await gateway.client.get("/health")).json()
    primary = health["upstreams"][0]
    assert primary["rateLimits"]["tokensPerMinute"] == {"limit": 1_500, "share": 1_500,
                                                        "taken": 25}  # fmt: skip
    assert primary["rateLimits"]["shareFrom"] == "whole"
    # A request that could never fit in the limit goes to the next candidate.
    too_big = await gateway.chat(max_tokens=2_000)
    assert too_big.headers["x-sluice-upstream"] == "secondary"


async def test_a_stream_reserves_up_front_and_settles_at_its_end(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    gateway = await gateway_factory(documents=limited(fakes, "primary", {"tokensPerMinute": 1_500}))

    stream = await gateway.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=1_000
    )
    async for _ in stream:
        pass

    health = await (await gateway.client.get("/health")).json()
    taken = health["upstreams"][0]["rateLimits"]["tokensPerMinute"]["taken"]
    assert 0 < taken < 100  # the stream's usage, not the 1,000 it reserved


async def test_the_providers_own_headers_route_away_before_it_says_429(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["primary"].requests_per_minute = 2  # the provider's limit; Sluice sets none
    gateway = await gateway_factory()

    answered_by = [(await gateway.chat()).headers["x-sluice-upstream"] for _ in range(4)]

    assert answered_by == ["primary", "primary", "secondary", "secondary"]
    assert gateway.hits("primary") == 2  # never sent the request it would have refused
    statuses = {a["status"] for r in gateway.access_log() for a in r["attempts"]}
    assert 429 not in statuses


async def test_cost_is_counted_per_model_logged_and_sent_back(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    priced = [{"name": "m1", "upstreamModel": "primary-model",
               "cost": {"inputPer1M": 2.0, "outputPer1M": 8.0}}]  # fmt: skip
    gateway = await gateway_factory(documents=only(fakes, "primary", models=priced))

    response = await gateway.chat()
    # The fake's usage: 1 input token, 4 output tokens.
    expected = (1 * 2.0 + 4 * 8.0) / 1_000_000
    assert float(response.headers["x-sluice-cost"]) == pytest.approx(expected)
    assert gateway.access_log()[-1]["cost"] == pytest.approx(expected)
    text = await (await gateway.client.get("/metrics")).text()
    series = 'sluice_cost_total{model="m1",namespace="default",upstream="primary"}'
    assert metric(text, series) == pytest.approx(expected)
    health = await (await gateway.client.get("/health")).json()
    usage = health["upstreams"][0]["usage"]
    assert usage["requestsPerMinute"] == 1
    assert usage["tokensPerMinute"] == 5
    assert usage["costPerHour"] == pytest.approx(expected * 60)


async def test_limit_and_cost_counters_start_at_zero_so_the_first_one_is_an_increase(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    priced = [{"name": "m1", "cost": {"inputPer1M": 2.0, "outputPer1M": 8.0}}]
    documents = limited(fakes, "primary", {"requestsPerMinute": 3})
    for document in documents:
        if document["kind"] == "Upstream" and document["metadata"]["name"] == "primary":
            document["spec"]["models"] = priced
    gateway = await gateway_factory(documents=documents)

    text = await (await gateway.client.get("/metrics")).text()

    # Before any request (a series born at its first value has no rate() until it moves).
    for series in (
        'sluice_rate_limit_skips_total{namespace="default",upstream="primary"} 0.0',
        'sluice_rate_limit_rejections_total{route="default/m1"} 0.0',
        'sluice_cost_total{model="m1",namespace="default",upstream="primary"} 0.0',
    ):
        assert series in text.splitlines()
    # Only limited Upstreams and priced model entries get them.
    assert 'sluice_rate_limit_skips_total{namespace="default",upstream="secondary"}' not in text
    assert 'sluice_cost_total{model="m1",namespace="default",upstream="secondary"}' not in text


async def test_usage_is_drained_for_the_operator_with_what_was_taken_and_wanted(
    gateway: Gateway,
) -> None:
    gateway.fakes["primary"].fail_next = 1
    for _ in range(3):
        await gateway.chat()

    drained = {u.name: u for u in gateway.proxy.usage.drain(gateway.clock())}

    primary, secondary = drained["primary"], drained["secondary"]
    assert (primary.success, primary.failure) == (2, 1)
    assert primary.last_error is not None
    assert (secondary.success, secondary.failure) == (1, 0)
    assert primary.output_tokens == 8
    assert gateway.proxy.usage.drain(gateway.clock()) == []


async def test_a_request_larger_than_every_token_limit_is_refused_rather_than_delayed(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    gateway = await gateway_factory(
        documents=only(fakes, "primary", limits={"tokensPerMinute": 1_000})
    )

    response = await gateway.chat(max_tokens=5_000)

    assert response.status == 400
    body = await response.json()
    assert "tokensPerMinute" in body["error"]["message"]
    assert gateway.hits("primary") == 0
