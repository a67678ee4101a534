"""The component tier: the proxy in-process, fake upstreams on loopback, real HTTP clients."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openai import AsyncOpenAI

from sluice.core import State
from sluice.fakes import FakeUpstream
from sluice.proxy.accesslog import AccessLog
from sluice.proxy.server import create_app
from sluice.proxy.state import Proxy
from sluice.proxy.table import Key, build_table
from sluice.resources import parse

API_KEYS = {
    "primary": "sk-primary-test-key-000000000000",
    "secondary": "sk-secondary-test-key-0000",
}


class Clock:
    """Wall-clock seconds that only move when a test moves them."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    proxy: Proxy
    client: TestClient
    clock: Clock
    fakes: dict[str, FakeUpstream]
    openai: AsyncOpenAI

    def breaker_state(self, name: str) -> State:
        return self.proxy.breakers.get(("default", name)).poll(self.clock())

    def access_log(self) -> list[dict[str, Any]]:
        """Every access-log record so far (flushing the batch first)."""
        log = self.proxy.access_log
        assert log is not None
        assert isinstance(log.stream, io.StringIO)
        log.flush()
        return [json.loads(line) for line in log.stream.getvalue().splitlines()]

    def hits(self, name: str) -> int:
        return len([r for r in self.fakes[name].seen if r.path != "/v1/models"])

    async def chat(self, *, headers: dict[str, str] | None = None, **body: Any) -> Any:
        payload = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], **body}
        return await self.client.post("/v1/chat/completions", json=payload, headers=headers or {})


def manifests(
    fakes: dict[str, FakeUpstream],
    *,
    policy: dict[str, Any] | None = None,
    route: dict[str, Any] | None = None,
    timeouts: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "BreakerPolicy",
            "metadata": {"name": "fast"},
            "spec": {
                "consecutiveFailures": 3,
                "openDuration": "2s",
                "jitter": 0,
                "failureRate": {"threshold": 0},
                "halfOpen": {"maxRequests": 1, "successThreshold": 1},
                **(policy or {}),
            },
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "m1"},
            "spec": {
                "models": ["m1"],
                "strategy": "Priority",
                "targets": [{"upstream": name} for name in fakes],
                "retry": {"maxAttempts": 3},
                **(route or {}),
            },
        },
    ]
    for priority, (name, fake) in enumerate(fakes.items()):
        documents.append(
            {
                "apiVersion": "sluice.dev/v1alpha1",
                "kind": "Upstream",
                "metadata": {"name": name},
                "spec": {
                    "provider": "openai-compatible",
                    "baseURL": fake.base_url,
                    "credentials": {"secretRef": {"name": f"{name}-key"}},
                    "models": [{"name": "m1", "upstreamModel": f"{name}-model"}],
                    "priority": priority,
                    "timeouts": timeouts
                    or {"firstToken": "2s", "total": "10s", "streamIdle": "2s"},
                    "breaker": {"policyRef": {"name": "fast"}},
                    # The fakes are steered by request headers (x-fake-status, ...).
                    "forwardHeaders": ["x-fake-*"],
                },
            }
        )
    return documents


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeUpstream]]:
    started = {"primary": FakeUpstream(name="primary"), "secondary": FakeUpstream(name="secondary")}
    for fake in started.values():
        await fake.start()
    yield started
    for fake in started.values():
        await fake.stop()


@pytest.fixture
async def gateway_factory(
    aiohttp_client: Callable[..., Awaitable[TestClient]], fakes: dict[str, FakeUpstream]
) -> AsyncIterator[MakeGateway]:
    sdk_clients: list[AsyncOpenAI] = []

    async def make(
        *,
        admin_token: str | None = "admin-secret",
        documents: list[dict[str, Any]] | None = None,
        proxy_options: dict[str, Any] | None = None,
        app_options: dict[str, Any] | None = None,
        sdk_key: str = "client-key",
        **options: Any,
    ) -> Gateway:
        clock = Clock()
        resources = [parse(d) for d in (documents or manifests(fakes, **options))]
        secrets: dict[Key, dict[str, str]] = {
            ("default", f"{name}-key"): {"apiKey": key} for name, key in API_KEYS.items()
        }
        proxy = Proxy(
            table=build_table(resources, secrets),
            clock=clock,
            admin_token=admin_token,
            access_log=AccessLog(io.StringIO()),
            **(proxy_options or {}),
        )

        async def admin(key: Key, action: str) -> None:
            forced = {"open": State.OPEN, "close": State.CLOSED, "auto": None}
            if action not in forced:
                raise ValueError(f"unknown action {action!r}")
            proxy.breakers.get(key).force(forced[action], clock())

        client = await aiohttp_client(create_app(proxy, admin=admin, **(app_options or {})))
        sdk = AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=sdk_key, max_retries=0)
        sdk_clients.append(sdk)
        return Gateway(proxy, client, clock, fakes, sdk)

    yield make
    for sdk in sdk_clients:
        await sdk.close()


@pytest.fixture
async def gateway(gateway_factory: MakeGateway) -> Gateway:
    return await gateway_factory()
