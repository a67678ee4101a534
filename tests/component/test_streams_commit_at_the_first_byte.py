"""Streams: relayed as they come; a failure after the first byte ends the stream with an SSE
error event and counts against the upstream; a client leaving does not."""

from __future__ import annotations

import asyncio
import json

from sluice.core import State
from tests.component.conftest import Gateway


def events(text: str) -> list[dict[str, object]]:
    return [
        json.loads(line.removeprefix("data: "))
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def test_a_stream_is_relayed_chunk_by_chunk(gateway: Gateway) -> None:
    stream = await gateway.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], stream=True
    )

    chunks = [chunk.choices[0] async for chunk in stream]

    assert [c.delta.content for c in chunks] == ["primary-0 ", "primary-1 ", "primary-2 ", None]
    assert chunks[-1].finish_reason == "stop"  # the fake ends the choice as OpenAI does


async def test_a_stream_cut_midway_ends_with_an_error_event_and_counts_as_a_failure(
    gateway: Gateway,
) -> None:
    # The chunks reach the proxy before the cut (a cut in the same instant as the first bytes
    # is a failure before the first byte, which fails over invisibly).
    response = await gateway.chat(
        stream=True, headers={"x-fake-cut-after-primary": "2", "x-fake-chunk-delay": "0.05"}
    )

    text = await response.text()
    received = events(text)
    assert response.status == 200  # committed at the first byte: no failover possible
    assert response.headers["x-sluice-upstream"] == "primary"
    assert [e["choices"][0]["delta"]["content"] for e in received[:-1]] == [  # type: ignore[index]
        "primary-0 ",
        "primary-1 ",
    ]
    error = received[-1]["error"]
    assert error["type"] == "upstream_error"  # type: ignore[index]
    assert "failed mid-stream" in error["message"]  # type: ignore[index]
    assert gateway.proxy.breakers.get(("default", "primary")).consecutive_failures == 1
    assert gateway.hits("secondary") == 0


async def test_a_stream_that_stalls_ends_at_the_idle_timeout(gateway: Gateway) -> None:
    response = await gateway.chat(stream=True, headers={"x-fake-stall-after-primary": "1"})

    received = events(await response.text())

    assert received[-1]["error"]["message"].endswith("stream idle timeout")  # type: ignore[index]
    assert gateway.proxy.breakers.get(("default", "primary")).consecutive_failures == 1


async def test_three_cut_streams_open_the_breaker(gateway: Gateway) -> None:
    for _ in range(3):
        cut = {"x-fake-cut-after-primary": "1", "x-fake-chunk-delay": "0.05"}
        await (await gateway.chat(stream=True, headers=cut)).text()

    assert gateway.breaker_state("primary") is State.OPEN


async def test_a_client_that_disconnects_is_not_counted_against_the_upstream(
    gateway: Gateway,
) -> None:
    response = await gateway.chat(
        stream=True, headers={"x-fake-chunks": "20", "x-fake-chunk-delay": "0.05"}
    )
    await response.content.readany()  # the first chunk arrived
    response.close()  # and the client goes away
    await asyncio.sleep(0.5)

    breaker = gateway.proxy.breakers.get(("default", "primary"))
    assert breaker.consecutive_failures == 0
    metrics = await (await gateway.client.get("/metrics")).text()
    assert (
        'sluice_attempts_total{namespace="default",outcome="ignored",upstream="primary"} 1.0'
        in (metrics)
    )
