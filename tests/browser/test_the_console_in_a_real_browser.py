"""The console in a real headless chromium against the demo: log in, watch the flaky primary
open without reloading, read its timeline, force it open and see traffic move, reset it, and
no console errors or serious accessibility violations on any page."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Console, Demo

PRIMARY = "/ui/upstreams/default/primary"


def _calm(demo: Demo, *, flaky: float) -> None:
    """No traffic, no override, counters at zero, primary failing ``flaky`` of requests."""
    demo.traffic.clear()
    demo.fakes["primary"].flaky = flaky
    demo.admin("auto")
    demo.admin("reset")


def _until(condition: object, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_wrong_token_is_refused_and_the_right_one_logs_in(console: Console) -> None:
    console.login("not-the-token")
    expect(console.page.get_by_role("alert")).to_contain_text("That is not the admin token")
    console.login()
    expect(console.page).to_have_url(console.demo.base + "/ui/upstreams")
    expect(console.page.get_by_role("heading", name="Upstreams")).to_be_visible()
    # The cookie is HttpOnly: the page's own scripts cannot read it.
    assert "sluice_console" not in console.page.evaluate("() => document.cookie")
    assert [e for e in console.errors if "401" not in e] == []  # the refusal's own 401 only


def test_the_flaky_primary_turns_open_on_the_page_without_a_reload(console: Console) -> None:
    _calm(console.demo, flaky=0.5)
    console.login()
    row = console.page.locator('tr[data-upstream="default/primary"]')
    expect(row.locator(".state")).to_have_text("Closed")
    console.page.evaluate("() => { window.sluiceNotReloaded = true }")
    console.demo.traffic.set()
    expect(row.locator(".state")).to_have_text("Open", timeout=10_000)
    # Its probe must not close it again before the reason is read (at 50% it may): from now
    # on the primary fails, so it stays Open, and the row says why.
    console.demo.fakes["primary"].flaky = 1.0
    expect(row.locator(".state")).to_have_text("Open", timeout=10_000)
    expect(row).to_contain_text(re.compile("ConsecutiveFailures|TrialFailed"))
    console.demo.traffic.clear()
    assert console.page.evaluate("() => window.sluiceNotReloaded") is True
    assert console.errors == []


def test_the_detail_page_shows_the_transition_with_its_reason(console: Console) -> None:
    _calm(console.demo, flaky=1.0)
    console.demo.traffic.set()
    _until(lambda: console.demo.health("primary")["state"] == "open", "primary never opened")
    console.demo.traffic.clear()
    console.login()
    console.go(PRIMARY)
    timeline = console.page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("Closed → Open")
    expect(timeline).to_contain_text("ConsecutiveFailures")
    assert console.errors == []


def test_force_open_moves_traffic_and_reset_brings_it_back(console: Console) -> None:
    demo = console.demo
    _calm(demo, flaky=0.0)
    assert demo.chat() == "primary"
    console.login()
    console.go(PRIMARY)
    console.page.on("dialog", lambda dialog: dialog.accept())  # each action asks first
    console.page.get_by_role("button", name="Force open").click()
    expect(console.page.get_by_role("status")).to_contain_text("Force open: done")
    health = demo.health("primary")
    assert (health["state"], health["forced"]) == ("open", True)
    assert {demo.chat() for _ in range(5)} == {"secondary"}
    expect(console.page.get_by_test_id("state")).to_have_text("Open (forced)")
    console.page.get_by_role("button", name="Auto").click()
    expect(console.page.get_by_role("status")).to_contain_text("Auto: done")
    demo.fakes["primary"].flaky = 1.0  # primary opens on its own ...
    demo.traffic.set()
    _until(lambda: demo.health("primary")["state"] == "open", "primary never opened")
    demo.traffic.clear()
    demo.fakes["primary"].flaky = 0.0  # ... and Reset brings it back at once
    console.page.get_by_role("button", name="Reset").click()
    expect(console.page.get_by_role("status")).to_contain_text("Reset: done")
    assert demo.health("primary")["state"] == "closed"
    assert demo.chat() == "primary"
    expect(console.page.get_by_test_id("state")).to_have_text("Closed")
    assert console.errors == []


def test_an_action_without_the_csrf_token_is_refused(console: Console) -> None:
    _calm(console.demo, flaky=0.0)
    console.login()
    console.go(PRIMARY)
    status = console.page.evaluate(
        """async () => (await fetch('/ui/upstreams/default/primary/open',
                                     {method: 'POST', body: new URLSearchParams()})).status"""
    )
    assert status == 403
    assert console.demo.health("primary")["forced"] is False


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("login", "/ui/login"),
        ("upstreams", "/ui/upstreams"),
        ("upstream", PRIMARY),
        ("routes", "/ui/routes"),
    ],
)
def test_each_page_has_no_console_errors_and_no_serious_accessibility_violations(
    console: Console, tmp_path: Path, name: str, path: str
) -> None:
    _calm(console.demo, flaky=0.5)
    console.demo.traffic.set()  # something in the charts and the table
    if name != "login":
        console.login()
    console.go(path)
    console.page.wait_for_timeout(2500)  # a couple of htmx polls swapped in
    console.demo.traffic.clear()
    assert console.serious_violations() == []
    console.screenshot(name, tmp_path)
    assert console.errors == []
