"""The access log: one JSON object per API request, with its route, outcome and attempts."""

from __future__ import annotations

import io
import json

from sluice.proxy.accesslog import AccessLog
from tests.component.conftest import API_KEYS, Gateway


async def test_a_failover_is_one_line_with_both_attempts_and_the_tokens(gateway: Gateway) -> None:
    await gateway.chat(headers={"x-fake-status-primary": "503"})

    [record] = gateway.access_log()

    assert record["route"] == "default/m1"
    assert record["model"] == "m1"
    assert record["status"] == 200
    assert record["stream"] is False
    assert record["latency_ms"] >= 0
    assert [(a["upstream"], a["outcome"], a.get("status")) for a in record["attempts"]] == [
        ("primary", "failure", 503),
        ("secondary", "success", 200),
    ]
    assert record["tokens"] == {"input": 1, "output": 4}  # the fake's usage


async def test_a_stream_records_its_time_to_first_token(gateway: Gateway) -> None:
    response = await gateway.chat(stream=True)
    await response.read()

    [record] = gateway.access_log()

    assert record["stream"] is True
    assert record["status"] == 200
    assert record["ttft_ms"] >= 0
    assert record["attempts"][0]["outcome"] == "success"


async def test_a_refusal_and_a_bad_request_are_logged_too(gateway: Gateway) -> None:
    for name in ("primary", "secondary"):
        await gateway.client.post(
            f"/admin/breakers/default/{name}/open",
            headers={"Authorization": "Bearer admin-secret"},
        )
    refused = await gateway.chat()
    bad = await gateway.client.post(
        "/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
    )

    records = gateway.access_log()

    assert (refused.status, bad.status) == (503, 400)
    assert [(r["status"], r["route"]) for r in records] == [(503, "default/m1"), (400, "none")]
    assert records[0]["attempts"] == []


async def test_api_keys_never_reach_the_log(gateway: Gateway) -> None:
    await gateway.chat(headers={"Authorization": "Bearer client-key"})
    await gateway.chat(headers={"x-fake-status-primary": "401"})

    text = json.dumps(gateway.access_log())

    assert "client-key" not in text
    assert all(key not in text for key in API_KEYS.values())


def test_lines_are_written_in_batches_and_on_flush() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, batch=3)

    log.write({"n": 1})
    log.write({"n": 2})
    held = stream.getvalue()
    log.write({"n": 3})
    log.write({"n": 4})
    batched = stream.getvalue()
    log.flush()

    assert held == ""
    assert batched == '{"n":1}\n{"n":2}\n{"n":3}\n'
    assert stream.getvalue().splitlines() == ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']


def test_a_broken_stream_loses_lines_but_not_the_proxy() -> None:
    stream = io.StringIO()
    log = AccessLog(stream, batch=10)
    log.write({"n": 1})
    stream.close()

    log.flush()  # must not raise
    log.write({"n": 2})
    log.flush()
