"""Streamed answers' tokens are counted: the proxy asks every OpenAI-format upstream for its
usage chunk, counts it, and passes it on only to a client that asked for it."""

from __future__ import annotations

from tests.component.conftest import Gateway, MakeGateway


async def tokens(gateway: Gateway, kind: str) -> float:
    text = await (await gateway.client.get("/metrics")).text()
    prefix = (
        f'sluice_tokens_total{{kind="{kind}",model="m1",namespace="default",upstream="primary"}} '
    )
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_a_stream_is_counted_and_its_usage_chunk_kept_from_a_client_that_did_not_ask(
    gateway: Gateway,
) -> None:
    stream = await gateway.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]

    assert chunks  # the content chunks, then nothing else
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert await tokens(gateway, "output") > 0
    [record] = gateway.access_log()
    assert record["tokens"]["output"] > 0


async def test_a_client_that_asked_for_usage_gets_the_usage_chunk(gateway: Gateway) -> None:
    stream = await gateway.openai.chat.completions.create(
        model="m1",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens > 0
    assert await tokens(gateway, "output") == last.usage.completion_tokens


async def test_a_stream_under_the_policys_token_rate_is_a_slow_call(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(
        policy={
            "slowCalls": {"duration": "60s", "rateThreshold": 50, "minOutputTokensPerSecond": 1000}
        }
    )
    fast = {"x-fake-chunks": "3"}
    slow = {"x-fake-chunks": "3", "x-fake-chunk-delay": "0.1"}  # 3 tokens in 0.3 s: 10/s

    for headers in (slow, fast):
        answer = await gateway.client.post(
            "/v1/chat/completions",
            json={"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers=headers,
        )
        await answer.read()

    _, _, slow_calls = gateway.proxy.breakers.get(("default", "primary")).window_counts
    assert slow_calls >= 1
