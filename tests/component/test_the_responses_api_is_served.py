"""OpenAI's Responses API through the proxy, with the official openai SDK: streamed and not,
failover before the first event, usage counted, and a route Anthropic alone cannot serve."""

from __future__ import annotations

from tests.component.conftest import Gateway


async def tokens(gateway: Gateway, upstream: str) -> float:
    text = await (await gateway.client.get("/metrics")).text()
    prefix = f'sluice_tokens_total{{kind="output",model="m1",namespace="default",upstream="{upstream}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_a_response_is_created_and_counted(gateway: Gateway) -> None:
    response = await gateway.openai.responses.create(model="m1", input="hi")

    assert response.status == "completed"
    assert response.output_text
    assert response.usage is not None
    assert await tokens(gateway, "primary") == response.usage.output_tokens
    [seen] = gateway.fakes["primary"].requests_to("/v1/responses")
    assert seen.headers["authorization"].startswith("Bearer sk-primary")


async def test_a_streamed_response_arrives_whole_and_is_counted(gateway: Gateway) -> None:
    stream = await gateway.openai.responses.create(model="m1", input="hi", stream=True)
    events = [event async for event in stream]

    assert events[-1].type == "response.completed"
    text = "".join(
        getattr(e, "delta", "") for e in events if e.type == "response.output_text.delta"
    )
    assert text
    assert await tokens(gateway, "primary") > 0
    assert gateway.access_log()[-1]["attempts"][0]["outcome"] == "success"


async def test_a_failing_primary_fails_over_before_the_first_event(gateway: Gateway) -> None:
    gateway.fakes["primary"].default_status = 503

    stream = await gateway.openai.responses.create(model="m1", input="hi", stream=True)
    events = [event async for event in stream]

    assert events[-1].type == "response.completed"
    assert [a["upstream"] for a in gateway.access_log()[-1]["attempts"]] == [
        "primary",
        "secondary",
    ]


async def test_a_stream_cut_after_its_first_event_ends_with_an_error_event(
    gateway: Gateway,
) -> None:
    answer = await gateway.client.post(
        "/v1/responses",
        json={"model": "m1", "input": "hi", "stream": True},
        headers={"x-fake-cut-after": "1"},
    )
    body = await answer.text()

    assert answer.status == 200
    assert "event: error" in body
    assert gateway.access_log()[-1]["attempts"][0]["outcome"] == "failure"
