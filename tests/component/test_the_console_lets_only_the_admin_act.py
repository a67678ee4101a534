"""The console under /ui: off without an admin token; the token once, then an HttpOnly,
SameSite=Strict cookie; every action needs the session's CSRF token and the console's own
origin; the pages show what /health shows; it goes where /admin goes (--admin-port)."""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient

from sluice.core import State
from sluice.fakes import FakeUpstream
from sluice.proxy.console.auth import COOKIE, SESSION_SECONDS
from sluice.proxy.handlers import PROXY
from sluice.proxy.server import Serving
from sluice.proxy.standalone import StandaloneOptions, build
from tests.component.conftest import Gateway, MakeGateway, manifests
from tests.component.test_standalone_mode import write

TOKEN = "admin-secret"
AppClient = Callable[..., Awaitable[TestClient]]


async def _login(client: TestClient, token: str = TOKEN) -> aiohttp.ClientResponse:
    return await client.post("/ui/login", data={"token": token}, allow_redirects=False)


async def _csrf(client: TestClient, path: str = "/ui/upstreams/default/primary") -> str:
    page = await (await client.get(path)).text()
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found.group(1)


async def test_the_console_is_off_without_an_admin_token(gateway_factory: MakeGateway) -> None:
    gateway = await gateway_factory(admin_token=None)
    for path in ("/ui/login", "/ui/upstreams"):
        response = await gateway.client.get(path)
        assert response.status == 403
        assert "No admin token is configured" in await response.text()


async def test_a_wrong_token_is_refused_with_a_page_that_says_so(gateway: Gateway) -> None:
    response = await _login(gateway.client, "not-the-token")
    assert response.status == 401
    assert "That is not the admin token" in await response.text()
    assert COOKIE not in response.cookies
    response = await gateway.client.get("/ui/upstreams", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/ui/login?next=/ui/upstreams"


async def test_the_right_token_gives_an_httponly_strict_cookie_for_the_console_only(
    gateway: Gateway,
) -> None:
    response = await _login(gateway.client)
    assert response.status == 303
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert int(cookie["max-age"]) == SESSION_SECONDS
    assert TOKEN not in cookie.value  # the token itself is never stored in the browser
    page = await gateway.client.get("/ui/upstreams")
    assert page.status == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in await page.text()  # no inline script: the CSP allows none


async def test_a_session_ends_after_its_time_or_with_a_new_token(gateway: Gateway) -> None:
    await _login(gateway.client)
    gateway.clock.now += SESSION_SECONDS + 1
    response = await gateway.client.get("/ui/upstreams", headers={"HX-Request": "true"})
    assert response.status == 401
    assert response.headers["HX-Redirect"] == "/ui/login"  # htmx goes to the login page
    await _login(gateway.client)
    gateway.proxy.admin_token = "rotated"
    response = await gateway.client.get("/ui/upstreams", allow_redirects=False)
    assert response.status == 303


async def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(
    gateway: Gateway,
) -> None:
    await _login(gateway.client)
    for data in ({}, {"csrf": "0" * 64}):
        response = await gateway.client.post("/ui/upstreams/default/primary/open", data=data)
        assert response.status == 403
        assert "CSRF" in await response.text()
    assert gateway.proxy.breakers.get(("default", "primary")).forced is None


async def test_an_action_from_another_origin_is_refused_even_with_the_token(
    gateway: Gateway,
) -> None:
    await _login(gateway.client)
    csrf = await _csrf(gateway.client)
    response = await gateway.client.post(
        "/ui/upstreams/default/primary/open",
        data={"csrf": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert response.status == 403
    assert gateway.proxy.breakers.get(("default", "primary")).forced is None


async def test_force_open_with_the_csrf_token_goes_through_the_admin_actions(
    gateway: Gateway,
) -> None:
    await _login(gateway.client)
    csrf = await _csrf(gateway.client)
    response = await gateway.client.post(
        "/ui/upstreams/default/primary/open", data={"csrf": csrf}, headers={"HX-Request": "true"}
    )
    assert response.status == 200, await response.text()
    assert "Force open: done" in await response.text()
    assert gateway.proxy.breakers.get(("default", "primary")).forced is State.OPEN
    response = await gateway.client.post(
        "/ui/upstreams/default/primary/close", headers={"X-CSRF-Token": csrf}
    )
    assert response.status == 200  # a plain form post: redirected to the page
    assert gateway.proxy.breakers.get(("default", "primary")).forced is State.CLOSED


async def test_the_pages_show_what_health_shows(gateway: Gateway) -> None:
    gateway.fakes["primary"].flaky = 1.0  # every request to primary fails: 503
    for _ in range(3):
        assert (await gateway.chat()).status == 200  # failed over to secondary
    await _login(gateway.client)
    rows = await (
        await gateway.client.get("/ui/upstreams?state=Open", headers={"HX-Request": "true"})
    ).text()
    assert 'data-upstream="default/primary"' in rows
    assert 'data-upstream="default/secondary"' not in rows  # filtered by state
    assert "ConsecutiveFailures" in rows
    detail = await (await gateway.client.get("/ui/upstreams/default/primary")).text()
    assert "Closed → Open" in detail
    assert "consecutive_failures" in detail  # the policy in force
    assert "failure" in detail  # attempts by outcome
    routes = await (await gateway.client.get("/ui/routes")).text()
    assert "skipped: circuit open" in routes
    assert (await gateway.client.get("/ui/upstreams/default/nobody")).status == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_with_an_admin_port_the_console_is_served_there_only(
    tmp_path: Path, fakes: dict[str, FakeUpstream], aiohttp_client: AppClient
) -> None:
    path = tmp_path / "sluice.yaml"
    write(path, manifests(fakes))
    port = _free_port()
    options = StandaloneOptions(paths=(path,), admin_token=TOKEN, serving=Serving(admin_port=port))
    client = await aiohttp_client(build(options))
    assert (await client.get("/ui/login")).status == 404
    # unsafe: aiohttp's client keeps cookies from IP addresses only when told to (browsers do)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        base = f"http://127.0.0.1:{port}"
        response = await session.post(f"{base}/ui/login", data={"token": TOKEN})
        assert response.status == 200
        assert 'data-upstream="default/primary"' in await response.text()
    assert client.app[PROXY].admin_token == TOKEN
