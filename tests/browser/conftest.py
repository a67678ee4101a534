"""The browser tier: the demo (example manifests, a flaky primary, fake upstreams on loopback)
in a thread of this process, and Debian's chromium driven by Playwright (``executable_path``:
Playwright's own browser download is never used). No chromium, or one that cannot start, fails
the tier with what is missing: it never skips."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from sluice.fakes import FakeUpstream
from sluice.proxy.access import LOOPBACK_HOSTS, HostAllowlist
from sluice.proxy.server import Serving
from sluice.proxy.standalone import StandaloneOptions, build

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "demo"  # the demo's admin token
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "img" / "console"


@dataclass
class Demo:
    """`sluice demo` on free ports: what the browser tests look at and steer."""

    base: str
    fakes: dict[str, FakeUpstream]
    loop: asyncio.AbstractEventLoop
    traffic: threading.Event = field(default_factory=threading.Event)

    def request(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any, Any]:
        """(status, JSON body, headers) of a request to the proxy (POST with ``body``)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data)  # noqa: S310 - loopback
        if body is not None:
            request.add_header("content-type", "application/json")
        if path.startswith("/admin"):
            request.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read()), response.headers
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null"), e.headers

    def chat(self) -> str:
        """One chat request; the upstream that served it."""
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
        _, _, headers = self.request("/v1/chat/completions", body)
        return str(headers.get("x-sluice-upstream"))

    def health(self, name: str) -> dict[str, Any]:
        _, body, _ = self.request("/health")
        return next(u for u in body["upstreams"] if u["name"] == name)

    def admin(self, action: str, name: str = "primary") -> None:
        status, body, _ = self.request(f"/admin/breakers/default/{name}/{action}", {})
        assert status == 200, body


def _examples(fakes: dict[str, FakeUpstream], into: Path) -> Path:
    """examples/upstreams.yaml with the fakes' ports instead of 18101 and 18102."""
    text = (ROOT / "examples" / "upstreams.yaml").read_text()
    text = text.replace("18101", str(fakes["primary"].port))
    text = text.replace("18102", str(fakes["secondary"].port))
    (into / "upstreams.yaml").write_text(text)
    return into


async def _serve(directory: Path, ready: list[Any], stop: asyncio.Event, flaky: float) -> None:
    fakes = {"primary": FakeUpstream(name="primary", flaky=flaky),
             "secondary": FakeUpstream(name="secondary")}  # fmt: skip
    for fake in fakes.values():
        await fake.start()
    options = StandaloneOptions(
        paths=(_examples(fakes, directory),),
        admin_token=TOKEN,
        serving=Serving(allowed_hosts=HostAllowlist.parse(LOOPBACK_HOSTS)),
    )
    runner = web.AppRunner(build(options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ready.append(Demo(f"http://127.0.0.1:{port}", fakes, asyncio.get_running_loop()))
    await stop.wait()
    await runner.cleanup()
    for fake in fakes.values():
        await fake.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    ready: list[Any] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    directory = tmp_path_factory.mktemp("demo")
    thread = threading.Thread(
        target=loop.run_until_complete, args=(_serve(directory, ready, stop, 0.5),), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not ready:
        assert thread.is_alive(), "the demo stopped before it served"
        assert time.monotonic() < deadline, "the demo did not start within 20 s"
        time.sleep(0.02)
    demo: Demo = ready[0]
    traffic = threading.Thread(target=_traffic, args=(demo,), daemon=True)
    traffic.start()
    yield demo
    demo.traffic.clear()
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=20)
    loop.close()


def _traffic(demo: Demo) -> None:
    """Requests while ``demo.traffic`` is set, about twenty a second (the demo's curl loop)."""
    while True:
        if demo.traffic.wait(timeout=0.5):
            with contextlib.suppress(OSError):  # the demo stopping under it
                demo.chat()
            time.sleep(0.05)


def chromium_path() -> str:
    found = os.environ.get("SLUICE_CHROMIUM") or shutil.which("chromium")
    if found is None:
        pytest.fail(
            "Debian's chromium is missing: the browser tier cannot run. Install it with "
            "`apt-get install chromium` (scripts/test.sh does, as root), or set SLUICE_CHROMIUM",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
            )
        except Exception as e:
            pytest.fail(f"chromium did not start: {e}", pytrace=False)
        yield launched
        launched.close()


@dataclass
class Console:
    """A browser page on the console, with what it logged to its console."""

    page: Page
    demo: Demo
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        self.page.goto(self.demo.base + path)

    def login(self, token: str = TOKEN) -> None:
        self.go("/ui/login")
        self.page.get_by_label("Admin token").fill(token)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_load_state()

    def serious_violations(self) -> list[str]:
        """axe-core's serious and critical findings on the page as it is now."""
        self.page.evaluate(AXE.read_text())  # over DevTools: the page's CSP does not apply
        result = self.page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
        assert result["testEngine"]["name"] == "axe-core", result  # it really ran
        return [
            f"{v['id']} ({v['impact']}): {v['help']}: {[n['target'] for n in v['nodes']]}"
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]

    def screenshot(self, name: str, tmp_path: Path) -> None:
        """Into tmp always; into docs/img/console with SLUICE_WRITE_SCREENSHOTS=1."""
        self.page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        if os.environ.get("SLUICE_WRITE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def console(browser: Browser, demo: Demo) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    found = Console(page, demo)

    def logged(message: ConsoleMessage) -> None:
        if message.type == "error":
            found.errors.append(message.text)

    page.on("console", logged)
    page.on("pageerror", lambda error: found.errors.append(f"uncaught: {error}"))
    yield found
    context.close()
