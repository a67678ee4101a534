"""Hardening: what one client sends cannot open circuits, fill memory, hold slots or reach an
upstream it should not. Each test is a finding of the audit, reproduced on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import json
import socket
from typing import Any

import orjson
import pytest

from sluice.core import State
from sluice.proxy.access import ClientKeys, HostAllowlist
from sluice.proxy.exchange import Exchange
from sluice.proxy.limits import Limits
from sluice.proxy.server import create_app, serve
from sluice.proxy.state import Proxy
from sluice.proxy.table import build_table
from sluice.resources import parse
from tests.component import raw
from tests.component.conftest import API_KEYS, Gateway, MakeGateway, manifests

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


def upstream_headers(gateway: Gateway, name: str) -> list[dict[str, str]]:
    return [r.headers for r in gateway.fakes[name].seen if r.path != "/v1/models"]


async def test_expect_100_continue_reaches_no_upstream_and_opens_no_circuit(
    gateway: Gateway,
) -> None:
    # aiohttp, Go and Node servers answer Expect with 100 Continue; taken as the final answer
    # it graded every attempt a failure, and two requests opened both circuits.
    # The 100 and the answer arrive apart when the upstream takes a moment (x-fake-delay).
    request = raw.chat_request(headers={"Expect": "100-continue", "x-fake-delay": "0.1"})

    answers = [await raw.exchange(gateway, request) for _ in range(4)]

    assert [raw.statuses(a)[-1] for a in answers] == [200] * 4
    assert gateway.breaker_state("primary") is State.CLOSED
    assert gateway.breaker_state("secondary") is State.CLOSED
    assert all("expect" not in h for h in upstream_headers(gateway, "primary"))


async def test_only_allowlisted_client_headers_reach_the_upstream(gateway: Gateway) -> None:
    sent = {
        "Accept": "application/json",
        "User-Agent": "my-app/1.0",
        "OpenAI-Organization": "org-someone-else",  # would choose whom the gateway's key bills
        "OpenAI-Project": "proj-x",
        "Cookie": "session=abc",
        "X-Custom": "1",
        "anthropic-version": "2099-01-01",  # a second one next to the proxy's own
        "Connection": "keep-alive, x-hop",
        "x-hop": "hop-by-hop, named in Connection",
        "Proxy-Authorization": "Basic eA==",
        "Authorization": "Bearer client-key",
    }

    response = await gateway.chat(headers=sent)

    assert response.status == 200
    [seen] = upstream_headers(gateway, "primary")
    assert seen["user-agent"] == "my-app/1.0"
    assert seen["accept"] == "application/json"
    assert seen["authorization"] == f"Bearer {API_KEYS['primary']}"
    for name in ("openai-organization", "openai-project", "cookie", "x-custom",
                 "anthropic-version", "x-hop", "proxy-authorization"):  # fmt: skip
        assert name not in seen, name


async def test_an_upstream_opts_into_more_client_headers(
    gateway_factory: MakeGateway, fakes: dict[str, Any]
) -> None:
    documents = manifests(fakes)
    for document in documents:
        if document["kind"] == "Upstream":
            document["spec"]["forwardHeaders"] = ["OpenAI-Beta", "x-team-*"]
    gateway = await gateway_factory(documents=documents)

    response = await gateway.chat(
        headers={"openai-beta": "assistants=v2", "x-team-id": "t1", "x-other": "no"}
    )

    assert response.status == 200
    [seen] = upstream_headers(gateway, "primary")
    assert seen["openai-beta"] == "assistants=v2"
    assert seen["x-team-id"] == "t1"
    assert "x-other" not in seen


async def test_a_gzip_body_goes_upstream_decoded_and_without_its_encoding(
    gateway: Gateway,
) -> None:
    body = gzip.compress(json.dumps(CHAT).encode())

    response = await gateway.client.post(
        "/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )

    assert response.status == 200
    [seen] = upstream_headers(gateway, "primary")
    assert "content-encoding" not in seen


async def test_a_client_that_stops_reading_a_stream_frees_the_upstream_slot(
    gateway_factory: MakeGateway, fakes: dict[str, Any]
) -> None:
    documents = manifests(fakes, timeouts={"firstToken": "2s", "total": "60s", "streamIdle": "5s"})
    for document in documents:
        if document["kind"] == "Upstream":
            document["spec"]["limits"] = {"maxConcurrent": 1}
    gateway = await gateway_factory(
        documents=documents, proxy_options={"limits": Limits(client_write_timeout=0.5)}
    )
    host, port = raw.address(gateway)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast: the proxy must wait
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    body = {**CHAT, "stream": True}
    request = raw.chat_request(body=body, headers={"x-fake-chunks": "200000"}, close=False)
    await asyncio.get_running_loop().sock_sendall(sock, request)
    try:
        # The client never reads. Within the write timeout the proxy gives up on it.
        load = gateway.proxy.load
        key = ("default", "primary")
        for _ in range(100):
            await asyncio.sleep(0.1)
            if load.in_flight(key) == 0 and gateway.hits("primary") == 1:
                break
        assert load.in_flight(key) == 0

        after = await gateway.chat()
    finally:
        sock.close()

    assert after.status == 200
    assert after.headers["x-sluice-upstream"] == "primary"  # not upstreams_busy, no failover
    assert gateway.breaker_state("primary") is State.CLOSED
    [record, _] = gateway.access_log()
    assert record["attempts"][0]["outcome"] == "ignored"  # the client's doing, not primary's


async def test_long_model_names_are_refused_not_cached_logged_or_echoed(
    gateway: Gateway,
) -> None:
    name = "m" * 5000

    response = await gateway.chat(model=name)

    assert response.status == 400
    error = (await response.json())["error"]
    assert "5000 characters" in error["message"]
    assert name not in error["message"]
    assert gateway.proxy.table._plans == {}  # nothing cached for it
    [record] = gateway.access_log()
    assert "model" not in record
    assert gateway.hits("primary") == 0


async def test_an_answer_over_the_limit_fails_fast_without_blaming_the_upstream(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(proxy_options={"limits": Limits(max_answer_bytes=2000)})

    response = await gateway.client.post(
        "/v1/embeddings", json={"model": "m1", "input": ["x"] * 200}
    )

    assert response.status == 502
    assert (await response.json())["error"]["type"] == "answer_too_large"
    assert gateway.hits("secondary") == 0  # another upstream would answer the same
    assert gateway.breaker_state("primary") is State.CLOSED
    metrics = await (await gateway.client.get("/metrics")).text()
    assert 'outcome="failure",upstream="primary"' not in metrics


async def test_a_body_that_trickles_in_is_cut_off(gateway_factory: MakeGateway) -> None:
    gateway = await gateway_factory(proxy_options={"limits": Limits(request_body_timeout=0.5)})
    host, port = raw.address(gateway)
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    writer.write(head)
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            answer = await reader.read()  # until the proxy closes
    finally:
        writer.close()

    assert raw.statuses(answer) == [408]
    assert gateway.hits("primary") == 0


async def test_requests_beyond_the_replica_limit_get_a_fast_503(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(proxy_options={"limits": Limits(max_concurrent_requests=1)})
    slow = asyncio.create_task(gateway.chat(headers={"x-fake-delay": "1"}))
    await asyncio.sleep(0.3)

    fast = await gateway.chat()

    assert fast.status == 503
    assert fast.headers["Retry-After"] == "1"
    assert (await fast.json())["error"]["type"] == "overloaded"
    assert (await slow).status == 200
    assert (await gateway.chat()).status == 200  # the slot came back


async def test_first_token_timeout_does_not_cut_a_long_non_streamed_answer(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(
        timeouts={"firstToken": "200ms", "total": "5s", "streamIdle": "2s"}
    )

    response = await gateway.chat(headers={"x-fake-delay": "0.6"})

    assert response.status == 200
    assert response.headers["x-sluice-upstream"] == "primary"
    assert gateway.proxy.breakers.get(("default", "primary")).consecutive_failures == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m1","model":"m2","messages":[]}',
        b'{"model":"m1","mod\\u0065l":"m2","messages":[]}',  # the same key, spelt with an escape
    ],
    ids=["plain", "escaped"],
)
async def test_a_key_given_twice_is_refused(gateway: Gateway, body: bytes) -> None:
    response = await gateway.client.post(
        "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )

    assert response.status == 400
    assert "duplicate keys: model" in (await response.json())["error"]["message"]
    assert gateway.hits("primary") == 0


async def test_json_endpoints_want_application_json(gateway: Gateway) -> None:
    # A web page can POST text/plain cross-origin without a CORS preflight.
    response = await gateway.client.post(
        "/v1/chat/completions", data=orjson.dumps(CHAT), headers={"Content-Type": "text/plain"}
    )

    assert response.status == 415
    assert gateway.hits("primary") == 0


async def test_unknown_host_names_and_web_origins_are_refused(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(
        proxy_options={"allowed_hosts": HostAllowlist.parse("127.0.0.1,localhost")}
    )

    rebinding = await gateway.chat(headers={"Host": "evil.example:8080"})
    web_page = await gateway.chat(headers={"Origin": "http://evil.example"})
    health = await gateway.client.get("/health", headers={"Host": "evil.example"})
    alive = await gateway.client.get("/healthz", headers={"Host": "evil.example"})
    local = await gateway.chat(headers={"Host": "localhost:8080", "Origin": "http://localhost"})

    assert rebinding.status == 421
    assert web_page.status == 403
    assert health.status == 421
    assert alive.status == 200  # kubelet probes send the pod's IP
    assert local.status == 200
    assert gateway.hits("primary") == 1


async def test_client_keys_are_required_when_configured(gateway_factory: MakeGateway) -> None:
    keys = ClientKeys.of({"team-a": "sk-team-a-000000", "team-b": "sk-team-b-000000"})
    gateway = await gateway_factory(proxy_options={"client_keys": keys}, sdk_key="sk-team-b-000000")

    missing = await gateway.chat()
    wrong = await gateway.chat(headers={"Authorization": "Bearer sk-team-c-000000"})
    anthropic_style = await gateway.chat(headers={"x-api-key": "sk-team-a-000000"})
    sdk = await gateway.openai.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hi"}]
    )
    models = await gateway.client.get("/v1/models")

    assert missing.status == 401
    assert (await missing.json())["error"]["type"] == "invalid_api_key"
    assert wrong.status == 401
    assert anthropic_style.status == 200
    assert sdk.choices[0].message.content == "hello from primary"
    assert models.status == 401
    clients = [r.get("client") for r in gateway.access_log()]
    assert clients == [None, None, "team-a", "team-b"]
    for seen in upstream_headers(gateway, "primary"):  # the client's key stays at the proxy
        assert seen["authorization"] == f"Bearer {API_KEYS['primary']}"
        assert "x-api-key" not in seen


async def test_a_502_tells_the_client_no_upstream_address(
    gateway: Gateway, fakes: dict[str, Any]
) -> None:
    for fake in fakes.values():
        await fake.stop()

    response = await gateway.chat()

    assert response.status == 502
    text = await response.text()
    assert "127.0.0.1" not in text
    attempts = (await response.json())["error"]["attempts"]
    assert attempts[0]["error"] == "connection refused"
    [record] = gateway.access_log()
    assert "127.0.0.1" in record["attempts"][0]["error"]  # the operator still sees it


async def test_a_bug_in_the_proxy_is_a_500_in_the_log_too(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Exchange) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Exchange, "run", broken)

    response = await gateway.chat()

    assert response.status == 500
    assert (await response.json())["error"]["type"] == "internal_error"
    [record] = gateway.access_log()
    assert record["status"] == 500
    assert gateway.breaker_state("primary") is State.CLOSED


async def test_admin_endpoints_can_have_a_port_of_their_own(
    gateway_factory: MakeGateway, unused_tcp_port: int
) -> None:
    gateway = await gateway_factory(app_options={"admin_port": unused_tcp_port})
    auth = {"Authorization": "Bearer admin-secret"}

    public = await gateway.client.get("/admin/breakers", headers=auth)
    reader, writer = await asyncio.open_connection("127.0.0.1", unused_tcp_port)
    writer.write(
        b"POST /admin/breakers/default/primary/open HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer admin-secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()

    assert public.status == 404
    assert raw.statuses(answer) == [200]
    assert gateway.breaker_state("primary") is State.OPEN


async def test_readiness_fails_when_the_table_is_stale(gateway: Gateway) -> None:
    gateway.proxy.stale_after = 30.0
    ready = await gateway.client.get("/readyz")
    gateway.proxy.fresh_at -= 60

    stale = await gateway.client.get("/readyz")
    metrics = await (await gateway.client.get("/metrics")).text()

    assert ready.status == 200
    assert stale.status == 503
    assert "last confirmed 60s ago" in await stale.text()
    age = next(line for line in metrics.splitlines() if line.startswith("sluice_table_age_seconds"))
    assert float(age.split()[1]) >= 60


async def test_connections_beyond_the_limit_are_closed_at_once(
    gateway: Gateway, unused_tcp_port: int
) -> None:
    port, ready = unused_tcp_port, asyncio.Event()
    serving = asyncio.create_task(
        serve(
            create_app(Proxy(table=gateway.proxy.table)),
            host="127.0.0.1",
            port=port,
            limits=Limits(max_connections=2),
            ready=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 5)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        idle.pop()[1].close()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        served = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    assert refused == b""
    assert raw.statuses(served) == [200]


async def test_the_proxys_own_shortage_is_a_503_and_never_the_upstreams_fault(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    connect = loop.create_connection
    upstream_ports = {fake.port for fake in gateway.fakes.values()}

    async def exhausted(factory: Any, *args: Any, **options: Any) -> Any:
        port = args[1] if len(args) > 1 else options.get("port")
        if port in upstream_ports:  # the proxy's connections to upstreams, not the test's own
            raise OSError(errno.EMFILE, "Too many open files")
        return await connect(factory, *args, **options)

    monkeypatch.setattr(loop, "create_connection", exhausted)

    responses = [await gateway.chat() for _ in range(4)]

    assert [r.status for r in responses] == [503] * 4
    assert (await responses[0].json())["error"]["type"] == "overloaded"
    assert gateway.hits("secondary") == 0  # no failover: it would fail the same way
    assert gateway.breaker_state("primary") is State.CLOSED


async def test_pools_of_upstreams_that_left_the_table_are_dropped(
    gateway: Gateway, fakes: dict[str, Any]
) -> None:
    assert (await gateway.chat()).status == 200
    client = gateway.proxy.client
    assert len(client._pools) == 1
    documents = [
        d for d in manifests(fakes) if d["metadata"]["name"] != "primary" or d["kind"] != "Upstream"
    ]
    secrets = {("default", f"{n}-key"): {"apiKey": k} for n, k in API_KEYS.items()}

    gateway.proxy.set_table(build_table([parse(d) for d in documents], secrets))

    assert client._pools == {}
    assert (await gateway.chat()).headers["x-sluice-upstream"] == "secondary"
