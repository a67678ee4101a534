"""The report endpoint: only the proxy's ServiceAccount may report, a standby says who leads,
a bad report is refused naming its field, and a report feeds the worker and comes back with
this replica's shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sluice.core.reports import Report, UpstreamUsage
from sluice.core.wire import decode_answer, encode_report
from sluice.kube import KubeError, TokenReview
from sluice.operator.metrics import OperatorMetrics
from sluice.operator.reports import AUDIENCE, Refused, ReportBook, ReportEndpoint, TokenCheck
from sluice.resources import Ref
from sluice.resources.models import Limits

PROXY = "system:serviceaccount:sluice:sluice-proxy"
Client = Callable[..., Awaitable[TestClient]]


@dataclass
class Reviewer:
    users: dict[str, str] = field(default_factory=lambda: {"proxy-token": PROXY})
    calls: int = 0
    down: bool = False
    pod: str | None = None

    async def review_token(self, token: str, audiences: list[str]) -> TokenReview:
        self.calls += 1
        if self.down:
            raise KubeError(0, "connection refused")
        user = self.users.get(token)
        audiences_ = tuple(audiences) if user else ()
        return TokenReview(user is not None, user, audiences_, pod_name=self.pod)


@dataclass
class Leadership:
    holder: str | None = "op-1"
    address: str | None = "10.0.0.7:9091"

    def holder_annotation(self, key: str) -> str | None:
        return self.address


@dataclass
class Worker:
    limits: Limits | None = None
    taken: list[tuple[UpstreamUsage, str]] = field(default_factory=list)

    def take_report(self, usage: UpstreamUsage, now: float, *, source: str) -> None:
        self.taken.append((usage, source))


def report(replica: str = "p-0", **counts: int) -> bytes:
    return encode_report(Report(replica, 1.0, [UpstreamUsage("ns", "a", **counts)]))


async def endpoint_client(aiohttp_client: Client, endpoint: ReportEndpoint) -> TestClient:
    app = web.Application()
    app.router.add_post("/v1/reports", endpoint.handle)
    return await aiohttp_client(app)


def leader(workers: dict[Ref, Worker], reviewer: Reviewer | None = None) -> ReportEndpoint:
    endpoint = ReportEndpoint(
        TokenCheck(reviewer or Reviewer(), frozenset({PROXY})), Leadership(), OperatorMetrics()
    )
    endpoint.book = ReportBook(workers, "op-0", clock=lambda: 100.0)
    return endpoint


BEARER = {"Authorization": "Bearer proxy-token"}


async def test_a_report_feeds_the_worker_and_the_answer_carries_the_share(
    aiohttp_client: Client,
) -> None:
    worker = Worker(Limits(requests_per_minute=60))
    client = await endpoint_client(aiohttp_client, leader({Ref("ns", "a"): worker}))
    response = await client.post("/v1/reports", data=report(failure=1), headers=BEARER)
    assert response.status == 200
    answer = decode_answer(await response.read())
    assert answer.leader == "op-0"
    assert [(s.name, s.requests_per_minute, s.tokens_per_minute) for s in answer.shares] == [
        ("a", 60.0, None)
    ]
    assert worker.taken[0][0].failure == 1
    assert worker.taken[0][1] == "p-0"


async def test_an_upstream_left_out_of_a_report_still_gets_its_share(
    aiohttp_client: Client,
) -> None:
    workers = {Ref("ns", "a"): Worker(), Ref("ns", "b"): Worker(Limits(tokens_per_minute=900))}
    client = await endpoint_client(aiohttp_client, leader(workers))
    response = await client.post("/v1/reports", data=report(), headers=BEARER)
    shares = decode_answer(await response.read()).shares
    assert [(s.name, s.tokens_per_minute) for s in shares] == [("b", 900.0)]


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "a bearer token is required"),
        ({"Authorization": "Basic eDp5"}, 401, "a bearer token is required"),
        ({"Authorization": "Bearer forged"}, 401, f"not valid for audience {AUDIENCE}"),
        ({"Authorization": "Bearer other"}, 403, "system:serviceaccount:sluice:intruder may"),
    ],
)
async def test_only_the_proxys_service_account_may_report(
    aiohttp_client: Client, headers: dict[str, str], status: int, message: str
) -> None:
    reviewer = Reviewer(
        users={"proxy-token": PROXY, "other": "system:serviceaccount:sluice:intruder"}
    )
    worker = Worker()
    client = await endpoint_client(aiohttp_client, leader({Ref("ns", "a"): worker}, reviewer))
    response = await client.post("/v1/reports", data=report(failure=1), headers=headers)
    assert response.status == status
    assert message in (await response.json())["error"]
    assert worker.taken == []


async def test_a_token_is_reviewed_once_a_minute_not_once_a_report(
    aiohttp_client: Client,
) -> None:
    reviewer = Reviewer()
    client = await endpoint_client(aiohttp_client, leader({}, reviewer))
    for _ in range(5):
        assert (await client.post("/v1/reports", data=report(), headers=BEARER)).status == 200
    assert reviewer.calls == 1


async def test_tokens_cannot_be_checked_while_the_api_server_is_away(
    aiohttp_client: Client,
) -> None:
    client = await endpoint_client(aiohttp_client, leader({}, Reviewer(down=True)))
    response = await client.post("/v1/reports", data=report(), headers=BEARER)
    assert response.status == 503
    assert (await response.json()) == {"error": "cannot check the token now"}


async def test_a_standby_says_who_leads_and_where(aiohttp_client: Client) -> None:
    endpoint = ReportEndpoint(
        TokenCheck(Reviewer(), frozenset({PROXY})), Leadership(), OperatorMetrics()
    )
    client = await endpoint_client(aiohttp_client, endpoint)
    response = await client.post("/v1/reports", data=report(), headers=BEARER)
    assert response.status == 503
    assert await response.json() == {
        "error": "not leader",
        "leader": "op-1",
        "address": "10.0.0.7:9091",
    }


async def test_a_bad_report_is_refused_naming_its_field(aiohttp_client: Client) -> None:
    client = await endpoint_client(aiohttp_client, leader({}))
    body = orjson.loads(report())
    body["upstreams"][0]["failure"] = -3
    response = await client.post("/v1/reports", data=orjson.dumps(body), headers=BEARER)
    assert response.status == 400
    assert (await response.json())["error"].startswith("upstreams[0].failure:")


async def test_the_review_cache_is_bounded_and_refusals_never_push_out_the_accepted() -> None:
    reviewer = Reviewer(users={f"good-{i}": PROXY for i in range(3)})
    check = TokenCheck(reviewer, frozenset({PROXY}), max_entries=2)
    for i in range(2):
        await check.user(f"Bearer good-{i}")
    for i in range(5):
        with pytest.raises(Refused, match="not valid"):
            await check.user(f"Bearer made-up-{i}")
    assert len(check._refused) == 2
    calls = reviewer.calls
    for i in range(2):
        await check.user(f"Bearer good-{i}")  # still cached, not reviewed again
    assert reviewer.calls == calls


async def test_unknown_tokens_are_reviewed_at_a_bounded_rate() -> None:
    clock = Clock()
    reviewer = Reviewer()
    check = TokenCheck(reviewer, frozenset({PROXY}), reviews_per_second=5, clock=clock)
    statuses = []
    for i in range(30):
        try:
            await check.user(f"Bearer made-up-{i}")
        except Refused as e:
            statuses.append(e.status)
    assert reviewer.calls == 10  # the burst: two seconds' worth
    assert statuses.count(429) == 20
    clock.now += 1
    with pytest.raises(Refused, match="not valid"):
        await check.user("Bearer made-up-again")


async def test_one_review_at_a_time_per_token() -> None:
    reviewer = SlowReviewer()
    check = TokenCheck(reviewer, frozenset({PROXY}))
    users = await asyncio.gather(*(check.user("Bearer proxy-token") for _ in range(10)))
    assert {u.username for u in users} == {PROXY}
    assert reviewer.calls == 1


async def test_a_pods_token_reports_only_under_that_pods_name(aiohttp_client: Client) -> None:
    reviewer = Reviewer()
    reviewer.pod = "sluice-proxy-abc"
    client = await endpoint_client(aiohttp_client, leader({}, reviewer))
    mine = await client.post("/v1/reports", data=report("sluice-proxy-abc"), headers=BEARER)
    other = await client.post("/v1/reports", data=report("sluice-proxy-xyz"), headers=BEARER)
    assert mine.status == 200
    assert other.status == 403
    assert "only as itself" in (await other.json())["error"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class SlowReviewer(Reviewer):
    async def review_token(self, token: str, audiences: list[str]) -> TokenReview:
        await asyncio.sleep(0.05)
        return await super().review_token(token, audiences)
