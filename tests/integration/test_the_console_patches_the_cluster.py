"""The console in `sluice proxy --kubernetes` against the real API server: its buttons patch
the Upstream as the admin API does (every replica and the operator follow; it survives
restarts), and one upstream's timeline shows the Upstream's Events."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.devcluster.cluster import ControlPlane
from tests.integration.conftest import Kubectl
from tests.integration.harness import ADMIN_TOKEN, ProxyProcess, ThreadedFake, eventually, get_json
from tests.integration.test_proxy_follows_the_cluster import manifests


class Browser:
    """A person's browser, as far as cookies and forms go."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            return str(response.read().decode())

    def post(self, path: str, form: dict[str, str], *, htmx: bool = True) -> tuple[int, str]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.base + path,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Origin": self.base, **({"HX-Request": "true"} if htmx else {})},
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, str(response.read().decode())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@pytest.fixture
def console(
    kubectl: Kubectl,
    namespace: str,
    fakes: dict[str, ThreadedFake],
    control_plane: ControlPlane,
    sluice_crds: Path,
    tmp_path: Path,
) -> Iterator[tuple[ProxyProcess, Browser, str]]:
    kubectl("apply", "-f", "-", input=manifests(namespace, fakes))
    process = ProxyProcess(control_plane.kubeconfig, namespace, tmp_path / "proxy.log")
    try:
        eventually(process.ready, timeout=30, what="the proxy serving")
        browser = Browser(process.base)
        status, _ = browser.post("/ui/login", {"token": ADMIN_TOKEN}, htmx=False)
        assert status == 200  # redirected to the upstreams page
        page = browser.get(f"/ui/upstreams/{namespace}/primary")
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found is not None, page
        yield process, browser, found.group(1)
    finally:
        process.stop()


def test_the_buttons_patch_the_upstream_as_the_admin_api_does(
    kubectl: Kubectl, namespace: str, console: tuple[ProxyProcess, Browser, str]
) -> None:
    proxy, browser, csrf = console
    action = f"/ui/upstreams/{namespace}/primary"
    assert proxy.served_by() == "primary"

    status, text = browser.post(f"{action}/open", {"csrf": csrf})
    assert status == 200, text
    assert "was patched" in text
    upstream = get_json(kubectl, "upstream", "primary", "-n", namespace)
    assert upstream["spec"]["breaker"]["override"] == "Open"
    eventually(lambda: proxy.served_by() == "secondary", timeout=2, what="traffic moved")
    rows = browser.get("/ui/upstreams?state=Open")
    assert "Open (forced)" in rows

    assert browser.post(f"{action}/auto", {"csrf": csrf})[0] == 200
    upstream = get_json(kubectl, "upstream", "primary", "-n", namespace)
    assert upstream["spec"]["breaker"].get("override") is None
    eventually(lambda: proxy.served_by() == "primary", timeout=2, what="traffic back")

    assert browser.post(f"{action}/reset", {"csrf": csrf})[0] == 200
    upstream = get_json(kubectl, "upstream", "primary", "-n", namespace)
    assert "sluice.dev/reset" in upstream["metadata"]["annotations"]

    status, _ = browser.post(f"{action}/open", {})  # no CSRF token: refused, nothing patched
    assert status == 403
    upstream = get_json(kubectl, "upstream", "primary", "-n", namespace)
    assert upstream["spec"]["breaker"].get("override") is None


def test_the_timeline_shows_the_upstreams_events(
    kubectl: Kubectl, namespace: str, console: tuple[ProxyProcess, Browser, str]
) -> None:
    _, browser, _ = console
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "primary.console-test", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Upstream", "name": "primary",
            "namespace": namespace,
        },
        "reason": "ProbeFailures",
        "message": "Closed -> Open: 3 consecutive failed probes, last: connection refused",
        "type": "Warning",
        "firstTimestamp": "2030-01-01T00:00:00Z",
        "lastTimestamp": "2030-01-01T00:00:00Z",
        "count": 1,
        "source": {"component": "sluice-operator"},
        "reportingComponent": "sluice.dev/operator",
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(event))
    page = eventually(
        lambda: (
            (p := browser.get(f"/ui/upstreams/{namespace}/primary"))
            and "3 consecutive failed probes" in p
            and p
        ),
        timeout=10,
        what="the Event in the timeline",
    )
    assert "sluice.dev/operator" in page
    assert "could not be read" not in page
