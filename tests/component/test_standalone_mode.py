"""`sluice proxy --manifests`: probes in-process, reload on change, and the README's demo."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from sluice.core import State
from sluice.devcluster.cluster import free_port
from sluice.fakes import FakeUpstream
from sluice.proxy.handlers import PROXY
from sluice.proxy.standalone import StandaloneOptions, build
from tests.component.conftest import API_KEYS, manifests

SECRETS: list[dict[str, object]] = [
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-key"},
        "stringData": {"apiKey": key},
    }
    for name, key in API_KEYS.items()
]


def write(path: Path, documents: list[dict[str, object]], *, secrets: bool = True) -> None:
    """The manifests as one file, the upstreams' credentials Secrets first."""
    path.write_text(
        "\n---\n".join(json.dumps(d) for d in [*(SECRETS if secrets else []), *documents])
    )


async def test_probes_run_in_process_and_open_a_dead_upstreams_breaker(
    tmp_path: Path,
    fakes: dict[str, FakeUpstream],
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    documents = manifests(fakes)
    for document in documents:
        if document["kind"] == "Upstream":
            document["spec"]["probe"] = {"interval": "50ms", "timeout": "50ms"}  # type: ignore[index]
    write(tmp_path / "sluice.yaml", documents)
    app = build(StandaloneOptions(paths=(tmp_path,), reload_interval=0.05))
    client = await aiohttp_client(app)
    proxy = client.app[PROXY]

    await fakes["primary"].stop()
    deadline = time.monotonic() + 10
    while proxy.breakers.get(("default", "primary")).poll(proxy.clock()) is not State.OPEN:
        assert time.monotonic() < deadline, "the probes never opened primary's breaker"
        await asyncio.sleep(0.05)

    response = await client.post("/v1/chat/completions", json={"model": "m1", "messages": []})
    assert response.headers["x-sluice-upstream"] == "secondary"
    assert response.headers["x-sluice-attempts"] == "1"  # primary was not contacted


async def test_a_changed_manifest_is_reloaded_and_a_broken_one_is_not(
    tmp_path: Path,
    fakes: dict[str, FakeUpstream],
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    path = tmp_path / "sluice.yaml"
    documents = manifests(fakes)
    write(path, documents)
    client = await aiohttp_client(build(StandaloneOptions(paths=(path,), reload_interval=0.05)))

    async def served_by() -> str:
        response = await client.post("/v1/chat/completions", json={"model": "m1", "messages": []})
        return response.headers["x-sluice-upstream"]

    assert await served_by() == "primary"
    for document in documents:
        if document["metadata"] == {"name": "primary"}:
            document["spec"]["breaker"]["override"] = "Open"  # type: ignore[index]
    write(path, documents)
    deadline = time.monotonic() + 5
    while await served_by() != "secondary":
        assert time.monotonic() < deadline, "the override was never reloaded"
        await asyncio.sleep(0.05)

    path.write_text("kind: [broken")
    await asyncio.sleep(0.3)

    assert await served_by() == "secondary"  # the last good table is still in force


def test_the_demo_serves_and_fails_over(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "demo.log").open("w")
    demo = subprocess.Popen(
        [sys.executable, "-m", "sluice", "demo", "--port", str(port), "--flaky", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]})
        deadline = time.monotonic() + 30
        while True:
            request = urllib.request.Request(
                url, data=body.encode(), headers={"content-type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                    served_by = response.headers["x-sluice-upstream"]
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()
                time.sleep(0.2)
        assert served_by == "secondary"  # primary fails every request with --flaky 1
        # The access log is flushed at least every 0.5 s.
        deadline = time.monotonic() + 5
        while '"upstream":"primary","outcome":"failure"' not in (
            output := (tmp_path / "demo.log").read_text()
        ):
            assert time.monotonic() < deadline, output
            time.sleep(0.1)
        assert "Sluice is serving the OpenAI API" in output
    finally:
        demo.terminate()
        demo.wait(timeout=10)
        log.close()
