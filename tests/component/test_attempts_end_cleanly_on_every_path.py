"""Every attempt ends recorded, whatever ends it: a HalfOpen trial's slot is never lost, a
refused gateway key fails over, a Responses stream that fails says so."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from sluice.core import State
from sluice.proxy import attempt as attempt_module
from sluice.proxy.breakers import Breakers
from tests.component.conftest import Gateway


async def test_a_client_gone_before_the_first_token_gives_a_trial_back(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway.fakes["primary"].default_status = 503
    for _ in range(3):
        await gateway.chat()  # primary opens
    gateway.fakes["primary"].default_status = None
    gateway.clock.now += 3  # HalfOpen: the next request is its one trial

    class Gone(web.StreamResponse):
        async def prepare(self, request: web.BaseRequest) -> Any:
            raise ConnectionResetError("the client went away")

    # Only the proxy's answer fails to start (the fake upstream is aiohttp too).
    monkeypatch.setattr(attempt_module, "web", SimpleNamespace(StreamResponse=Gone))
    await gateway.chat(stream=True)
    monkeypatch.undo()

    breaker = gateway.proxy.breakers.get(("default", "primary"))
    assert breaker.trials_in_flight == 0  # given back, not held until halfOpen.maxDuration
    assert gateway.breaker_state("primary") is State.HALF_OPEN
    assert (await gateway.chat()).headers["x-sluice-upstream"] == "primary"  # the next trial


async def test_an_upstream_refusing_the_gateways_key_fails_over_and_counts(
    gateway: Gateway,
) -> None:
    answer = await gateway.chat(headers={"x-fake-status-primary": "401"})

    assert answer.status == 200
    assert answer.headers["x-sluice-upstream"] == "secondary"
    record = gateway.access_log()[-1]
    assert record["attempts"][0]["outcome"] == "failure"
    assert "gateway's credentials" in record["attempts"][0]["error"]


async def test_a_responses_stream_that_fails_midway_counts_as_a_failure(gateway: Gateway) -> None:
    answer = await gateway.client.post(
        "/v1/responses",
        json={"model": "m1", "input": "hi", "stream": True},
        headers={"x-fake-stream-error": "1"},
    )
    body = await answer.text()

    assert answer.status == 200
    assert body.count("event: error") == 1  # the upstream's own, and no second one of ours
    assert gateway.access_log()[-1]["attempts"][0]["outcome"] == "failure"


def test_an_upstream_gone_from_the_table_is_not_admitted(gateway: Gateway) -> None:
    target = gateway.proxy.table.targets["default", "primary"]

    assert Breakers().admit(target, 0.0) is None
    assert Breakers().available_in(target, 0.0) == float("inf")
