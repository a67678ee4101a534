"""A failed attempt moves on to the next upstream while nothing has been sent to the client."""

from __future__ import annotations

import asyncio
import io
import json

import openai
import pytest

from sluice.fakes import FakeUpstream
from tests.component.conftest import API_KEYS, Gateway, MakeGateway, manifests


async def test_a_5xx_fails_over_and_the_sdk_never_sees_it(gateway: Gateway) -> None:
    gateway.fakes["primary"].default_status = 503

    raw = await gateway.openai.chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "hi"}]
    )

    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from secondary"
    assert raw.headers["x-sluice-upstream"] == "secondary"
    assert raw.headers["x-sluice-attempts"] == "2"
    assert gateway.hits("primary") == 1


@pytest.mark.parametrize(
    ("fault", "headers"),
    [
        ("timeout", {"x-fake-delay-primary": "5"}),
        ("reset", {"x-fake-reset-primary": "1"}),
        ("429", {"x-fake-status-primary": "429", "x-fake-retry-after-primary": "30"}),
        ("408", {"x-fake-status-primary": "408"}),
    ],
)
async def test_timeouts_resets_and_429s_fail_over(
    gateway_factory: MakeGateway, fault: str, headers: dict[str, str]
) -> None:
    gateway = await gateway_factory(timeouts={"firstToken": "300ms", "total": "5s"})

    response = await gateway.chat(headers=headers)

    assert response.status == 200, await response.text()
    assert response.headers["x-sluice-upstream"] == "secondary"
    assert response.headers["x-sluice-attempts"] == "2"


async def test_a_429_holds_the_upstream_off_for_its_retry_after(gateway: Gateway) -> None:
    await gateway.chat(headers={"x-fake-status-primary": "429", "x-fake-retry-after-primary": "30"})

    follow_up = await gateway.chat()
    gateway.clock.now += 30
    later = await gateway.chat()

    assert follow_up.headers["x-sluice-upstream"] == "secondary"
    assert follow_up.headers["x-sluice-attempts"] == "1"  # primary was not even tried
    assert later.headers["x-sluice-upstream"] == "primary"


async def test_a_client_error_goes_back_as_is_without_failover(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        await gateway.openai.chat.completions.create(
            model="m1",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "400"},
        )

    assert error.value.status_code == 400
    assert error.value.response.headers["x-sluice-upstream"] == "primary"
    assert gateway.hits("secondary") == 0
    assert gateway.proxy.breakers.get(("default", "primary")).consecutive_failures == 0


async def test_a_stream_that_fails_before_its_first_byte_fails_over_invisibly(
    gateway: Gateway,
) -> None:
    gateway.fakes["primary"].default_status = 502

    stream = await gateway.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    assert text == "secondary-0 secondary-1 secondary-2 "


async def test_every_upstream_failing_is_a_502_with_the_attempts(gateway: Gateway) -> None:
    for fake in gateway.fakes.values():
        fake.default_status = 500

    response = await gateway.chat()

    body = await response.json()
    assert response.status == 502
    assert body["error"]["type"] == "upstream_error"
    # maxAttempts 3: a round over both, then a second round after the back-off.
    assert [(a["upstream"], a["outcome"], a["status"]) for a in body["error"]["attempts"]] == [
        ("primary", "failure", 500),
        ("secondary", "failure", 500),
        ("primary", "failure", 500),
    ]


async def test_all_rate_limited_is_a_429_with_retry_after(gateway: Gateway) -> None:
    response = await gateway.chat(headers={"x-fake-status": "429", "x-fake-retry-after": "7"})

    assert response.status == 429
    assert response.headers["Retry-After"] == "7"


async def test_the_upstream_gets_its_model_name_and_key_and_never_the_clients(
    gateway: Gateway,
) -> None:
    await gateway.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}]
    )

    [request] = gateway.fakes["primary"].seen
    assert request.headers["authorization"] == f"Bearer {API_KEYS['primary']}"


async def test_the_model_is_rewritten_for_the_upstream(gateway: Gateway) -> None:
    response = await gateway.chat()

    assert (await response.json())["model"] == "primary-model"


async def test_the_retry_budget_caps_the_attempts(gateway_factory: MakeGateway) -> None:
    gateway = await gateway_factory(route={"retry": {"maxAttempts": 1}})
    gateway.fakes["primary"].default_status = 503

    response = await gateway.chat()

    assert response.status == 502
    assert gateway.hits("secondary") == 0


async def test_bad_requests_name_the_problem(gateway: Gateway) -> None:
    not_json = await gateway.client.post(
        "/v1/chat/completions", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    no_model = await gateway.client.post("/v1/chat/completions", json={"messages": []})
    unknown = await gateway.chat(model="nope")

    assert not_json.status == 400
    assert "not valid JSON" in (await not_json.json())["error"]["message"]
    assert no_model.status == 400
    assert "'model'" in (await no_model.json())["error"]["message"]
    assert unknown.status == 404
    assert (await unknown.json())["error"]["code"] == "model_not_found"


async def test_an_oversized_body_is_refused(gateway: Gateway) -> None:
    huge = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "x" * (17 << 20)}]})

    response = await gateway.client.post(
        "/v1/chat/completions",
        data=io.BytesIO(huge.encode()),
        headers={"content-type": "application/json"},
    )

    assert response.status == 413
    assert gateway.hits("primary") == 0


async def test_a_single_upstream_is_retried_after_a_backoff(gateway_factory: MakeGateway) -> None:
    gateway = await gateway_factory(
        route={
            "targets": [{"upstream": "primary"}],
            "retry": {"maxAttempts": 3, "backoff": {"initial": "10ms", "max": "20ms"}},
        }
    )

    gateway.fakes["primary"].fail_next = 1  # a transient 503

    response = await gateway.chat()

    assert response.status == 200
    assert response.headers["x-sluice-attempts"] == "2"


async def test_per_try_timeout_caps_each_attempt(gateway_factory: MakeGateway) -> None:
    gateway = await gateway_factory(route={"retry": {"maxAttempts": 2, "perTryTimeout": "200ms"}})

    response = await gateway.chat(headers={"x-fake-delay-primary": "3"})

    assert response.status == 200
    assert response.headers["x-sluice-upstream"] == "secondary"


async def test_an_upstream_at_max_concurrent_is_skipped_not_overloaded(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    documents = manifests(fakes)
    for document in documents:
        if document["metadata"] == {"name": "primary"}:
            document["spec"]["limits"] = {"maxConcurrent": 1}
    gateway = await gateway_factory(documents=documents)

    slow = asyncio.create_task(gateway.chat(headers={"x-fake-delay-primary": "0.5"}))
    await asyncio.sleep(0.1)
    meanwhile = await gateway.chat()
    first = await slow

    assert first.headers["x-sluice-upstream"] == "primary"
    assert meanwhile.headers["x-sluice-upstream"] == "secondary"
    assert meanwhile.headers["x-sluice-attempts"] == "1"


async def test_all_upstreams_at_capacity_is_a_distinct_503(
    gateway_factory: MakeGateway, fakes: dict[str, FakeUpstream]
) -> None:
    documents = manifests(fakes, route={"targets": [{"upstream": "primary"}]})
    for document in documents:
        if document["metadata"] == {"name": "primary"}:
            document["spec"]["limits"] = {"maxConcurrent": 1}
    gateway = await gateway_factory(documents=documents)

    slow = asyncio.create_task(gateway.chat(headers={"x-fake-delay-primary": "0.5"}))
    await asyncio.sleep(0.1)
    refused = await gateway.chat()
    await slow

    assert refused.status == 503
    assert (await refused.json())["error"]["type"] == "upstreams_busy"
    assert refused.headers["Retry-After"] == "1"
