"""A replica's reporter against fake operator replicas: it reports, installs its shares,
follows a standby to the leader, fails static when nobody answers, reports early after a
failed attempt, and sends the token the kubelet rotated."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from sluice.core.reports import Answer, Share, UpstreamUsage
from sluice.core.wire import decode_report, encode_answer
from sluice.devcluster.cluster import free_port
from sluice.proxy.metrics import ProxyMetrics
from sluice.proxy.reporting import Reporter, ReporterOptions

Server = Callable[..., Awaitable[TestServer]]


@dataclass
class StubReplica:
    failed: int = 0
    pending: int = 0  # failures not drained yet
    applied: list[list[Share]] = field(default_factory=list)
    lost: int = 0

    def drain(self) -> list[UpstreamUsage]:
        usage = [UpstreamUsage("ns", "a", failure=self.pending)]
        self.pending = 0
        return usage

    def apply(self, shares: list[Share]) -> None:
        self.applied.append(shares)

    def lost_leader(self) -> None:
        self.lost += 1

    def failures(self) -> int:
        return self.failed


@dataclass
class FakeOperator:
    leading: bool = True
    leader_address: str | None = None
    interval: float = 0.2
    reports: list[tuple[Any, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        if not self.leading:
            body = {"error": "not leader", "leader": "op-1", "address": self.leader_address}
            return web.json_response(body, status=503)
        report = decode_report(await request.read())
        self.reports.append((report, request.headers.get("Authorization")))
        answer = Answer("op-1", self.interval, [Share("ns", "a", requests_per_minute=20.0)])
        return web.Response(body=encode_answer(answer), content_type="application/json")


async def operator_server(aiohttp_server: Server, fake: FakeOperator) -> TestServer:
    app = web.Application()
    app.router.add_post("/v1/reports", fake.handle)
    return await aiohttp_server(app)


def options(server: TestServer, **changes: Any) -> ReporterOptions:
    return ReporterOptions(url=str(server.make_url("")), replica="p-0", **changes)


async def test_a_report_goes_out_and_its_shares_come_back(aiohttp_server: Server) -> None:
    fake = FakeOperator()
    server = await operator_server(aiohttp_server, fake)
    replica = StubReplica(pending=2)
    async with aiohttp.ClientSession() as session:
        reporter = Reporter(replica, options(server), session)
        assert await reporter.report_once()
    assert fake.reports[0][0].upstreams[0].failure == 2
    assert replica.applied == [[Share("ns", "a", requests_per_minute=20.0)]]
    assert reporter.interval == 0.2  # the leader says when to report next
    assert reporter.link.view(reporter.clock())["reachable"] is True


async def test_a_standby_sends_the_replica_to_the_leader(aiohttp_server: Server) -> None:
    leader = FakeOperator()
    leader_server = await operator_server(aiohttp_server, leader)
    standby = FakeOperator(leading=False, leader_address=f"127.0.0.1:{leader_server.port}")
    standby_server = await operator_server(aiohttp_server, standby)
    async with aiohttp.ClientSession() as session:
        reporter = Reporter(StubReplica(pending=1), options(standby_server), session)
        assert await reporter.report_once()
        assert await reporter.report_once()  # straight to the leader now
    assert len(leader.reports) == 2
    assert leader.reports[0][0].upstreams[0].failure == 1


async def serve_on(fake: FakeOperator, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/v1/reports", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_without_an_operator_the_replica_fails_static_and_comes_back() -> None:
    fake = FakeOperator()
    port = free_port()
    runner = await serve_on(fake, port)
    replica = StubReplica()
    metrics = ProxyMetrics()
    opts = ReporterOptions(url=f"http://127.0.0.1:{port}", replica="p-0", timeout=0.5)
    async with aiohttp.ClientSession() as session:
        reporter = Reporter(replica, opts, session, metrics=metrics)
        assert await reporter.report_once()
        await runner.cleanup()
        replica.pending = 5
        assert not await reporter.report_once()
        assert not await reporter.report_once()
        assert replica.lost == 1  # once, when it went away
        assert reporter.link.view(0)["failStatic"] is True
        assert metrics.report_failures._value.get() == 2
        assert metrics.operator_reachable._value.get() == 0
        runner = await serve_on(fake, port)
        assert await reporter.report_once()
        await runner.cleanup()
    assert [r.upstreams[0].failure for r, _ in fake.reports] == [0, 0]  # the 5 were lost
    assert metrics.operator_reachable._value.get() == 1


async def test_a_failed_attempt_is_reported_early(aiohttp_server: Server) -> None:
    fake = FakeOperator(interval=30.0)
    server = await operator_server(aiohttp_server, fake)
    replica = StubReplica()
    async with aiohttp.ClientSession() as session:
        reporter = Reporter(replica, options(server, interval=30.0), session)
        task = asyncio.create_task(reporter.run())
        await asyncio.sleep(0.15)
        assert fake.reports == []
        replica.failed, replica.pending = 1, 1
        await asyncio.sleep(0.3)
        task.cancel()
    assert [r.upstreams[0].failure for r, _ in fake.reports] == [1]


async def test_the_rotated_token_is_sent(aiohttp_server: Server, tmp_path: Path) -> None:
    fake = FakeOperator()
    server = await operator_server(aiohttp_server, fake)
    token = tmp_path / "token"
    token.write_text("first\n")
    async with aiohttp.ClientSession() as session:
        reporter = Reporter(StubReplica(), options(server, token_file=token), session)
        await reporter.report_once()
        token.write_text("second")
        os.utime(token, (1, 1))  # a new mtime, as the kubelet's atomic swap gives
        await reporter.report_once()
    assert [auth for _, auth in fake.reports] == ["Bearer first", "Bearer second"]


async def test_no_token_file_means_no_report(aiohttp_server: Server, tmp_path: Path) -> None:
    fake = FakeOperator()
    server = await operator_server(aiohttp_server, fake)
    async with aiohttp.ClientSession() as session:
        reporter = Reporter(StubReplica(), options(server, token_file=tmp_path / "absent"), session)
        assert not await reporter.report_once()
    assert fake.reports == []
