"""A probe carries the API key to baseURL and nowhere else: a redirect is a failed probe, never
followed, so a key never reaches another origin (or plain http)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sluice.core import BreakerPolicy, OutcomeKind
from sluice.probe import probe
from sluice.resources.models import UpstreamSpec

KEY = "sk-probe-key-must-stay-home"


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """Another origin (another loopback port) that records every request's headers."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner, url = await serve(app)
    yield url, seen
    await runner.cleanup()


@pytest.fixture
async def redirecting(elsewhere: tuple[str, list[dict[str, str]]]) -> AsyncIterator[str]:
    """The upstream: every request is redirected to ``elsewhere`` (status from x-test-status)."""
    target, _ = elsewhere

    async def redirect(request: web.Request) -> web.Response:
        status = int(request.headers.get("x-test-status", "302"))
        return web.Response(status=status, headers={"Location": f"{target}{request.path}"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner, url = await serve(app)
    yield url
    await runner.cleanup()


def spec(base_url: str, provider: str, **probe_settings: Any) -> UpstreamSpec:
    return UpstreamSpec.model_validate(
        {
            "provider": provider,
            "baseURL": f"{base_url}/v1",
            "models": [{"name": "m1"}],
            "probe": {"interval": "10s", "timeout": "2s", **probe_settings},
        }
    )


@pytest.mark.parametrize(
    ("provider", "method", "status"),
    [
        ("openai-compatible", "GET", 302),
        ("anthropic", "GET", 301),
        ("azure-openai", "GET", 303),
        ("openai-compatible", "POST", 307),
        ("openai-compatible", "POST", 308),
    ],
)
async def test_a_redirect_is_a_failed_probe_and_the_key_goes_nowhere_else(
    redirecting: str,
    elsewhere: tuple[str, list[dict[str, str]]],
    provider: str,
    method: str,
    status: int,
) -> None:
    _, seen = elsewhere
    async with aiohttp.ClientSession(headers={"x-test-status": str(status)}) as session:
        result = await probe(
            session,
            spec(redirecting, provider, method=method),
            api_key=KEY,
            policy=BreakerPolicy(),
        )

    assert seen == []  # the other origin received nothing: no key, no request at all
    assert result.outcome.kind is OutcomeKind.FAILURE
    assert result.code == status
    assert result.error == f"HTTP {status} (expected 200)"


async def test_a_redirect_listed_in_expect_status_is_healthy_and_still_not_followed(
    redirecting: str, elsewhere: tuple[str, list[dict[str, str]]]
) -> None:
    _, seen = elsewhere
    async with aiohttp.ClientSession() as session:
        result = await probe(
            session,
            spec(redirecting, "openai-compatible", expectStatus=[200, 302]),
            api_key=KEY,
            policy=BreakerPolicy(),
        )

    assert result.ok
    assert result.code == 302
    assert seen == []
