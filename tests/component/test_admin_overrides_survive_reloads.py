"""`--manifests`: an admin's open/close/auto lasts until the next admin action, a restart, or a
change of that upstream's spec.breaker.override in the files; /health, admission and the
metrics all report the override in force."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from sluice.core import State
from sluice.fakes import FakeUpstream
from sluice.proxy.handlers import PROXY
from sluice.proxy.standalone import StandaloneOptions, build
from tests.component.conftest import manifests
from tests.component.test_standalone_mode import write

TOKEN = "admin-token"
PRIMARY = ("default", "primary")

AppClient = Callable[..., Awaitable[TestClient]]


class Standalone:
    def __init__(self, client: TestClient, path: Path, documents: list[dict[str, Any]]) -> None:
        self.client = client
        self.path = path
        self.documents = documents
        self.proxy = client.app[PROXY]
        self.version = 0

    @classmethod
    async def start(
        cls,
        tmp_path: Path,
        fakes: dict[str, FakeUpstream],
        aiohttp_client: AppClient,
        *,
        primary_override: str | None = None,
    ) -> Standalone:
        path = tmp_path / "sluice.yaml"
        documents = manifests(fakes)
        if primary_override is not None:
            documents[2]["spec"]["breaker"]["override"] = primary_override
        write(path, documents)
        options = StandaloneOptions(paths=(path,), admin_token=TOKEN, reload_interval=0.05)
        return cls(await aiohttp_client(build(options)), path, documents)

    async def admin(self, action: str) -> None:
        response = await self.client.post(
            f"/admin/breakers/default/primary/{action}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status == 200, await response.text()

    async def set_override_in_the_files(self, override: str | None) -> None:
        self.documents[2]["spec"]["breaker"]["override"] = override
        await self.reload()

    async def reload(self) -> None:
        """Change the files (secondary's weight, at least) and wait until they are served."""
        self.version += 1
        self.documents[3]["spec"]["weight"] = 100 + self.version
        write(self.path, self.documents)
        deadline = time.monotonic() + 5
        while self.proxy.table.targets["default", "secondary"].spec.weight != 100 + self.version:
            assert time.monotonic() < deadline, "the files were never reloaded"
            await asyncio.sleep(0.02)

    def forced(self) -> State | None:
        return self.proxy.breakers.get(PRIMARY).forced

    async def health(self) -> dict[str, Any]:
        response = await self.client.get("/health")
        body = await response.json()
        (primary,) = [u for u in body["upstreams"] if u["name"] == "primary"]
        return {"state": primary["state"], "forced": primary["forced"]}

    async def metric_state(self) -> str:
        text = await (await self.client.get("/metrics")).text()
        for line in text.splitlines():
            if (
                line.startswith("sluice_breaker_state{")
                and 'upstream="primary"' in line
                and line.endswith(" 1.0")
            ):
                return line.split('state="')[1].split('"')[0]
        raise AssertionError(f"no breaker state for primary in {text}")

    async def served_by(self) -> str:
        response = await self.client.post(
            "/v1/chat/completions", json={"model": "m1", "messages": []}
        )
        return response.headers["x-sluice-upstream"]


async def test_an_admin_open_survives_a_reload_and_health_says_it_is_forced(
    tmp_path: Path, fakes: dict[str, FakeUpstream], aiohttp_client: AppClient
) -> None:
    proxy = await Standalone.start(tmp_path, fakes, aiohttp_client)

    await proxy.admin("open")
    assert await proxy.health() == {"state": "open", "forced": True}

    await proxy.reload()

    assert proxy.forced() is State.OPEN
    assert proxy.proxy.table.targets[PRIMARY].override is State.OPEN  # one source of truth
    assert await proxy.health() == {"state": "open", "forced": True}
    assert await proxy.served_by() == "secondary"
    assert fakes["primary"].requests_to("/v1/chat/completions") == []


async def test_an_admin_auto_survives_a_reload_over_the_files_override(
    tmp_path: Path, fakes: dict[str, FakeUpstream], aiohttp_client: AppClient
) -> None:
    proxy = await Standalone.start(tmp_path, fakes, aiohttp_client, primary_override="Open")
    assert await proxy.served_by() == "secondary"

    await proxy.admin("auto")
    await proxy.reload()  # primary's override in the files is still Open: the admin's stays

    assert proxy.forced() is None
    assert await proxy.health() == {"state": "closed", "forced": False}
    assert await proxy.served_by() == "primary"


async def test_a_change_of_the_override_in_the_files_replaces_the_admins(
    tmp_path: Path, fakes: dict[str, FakeUpstream], aiohttp_client: AppClient
) -> None:
    proxy = await Standalone.start(tmp_path, fakes, aiohttp_client)
    await proxy.admin("open")

    await proxy.set_override_in_the_files("Closed")  # the files spoke last: they win

    assert proxy.forced() is State.CLOSED
    assert await proxy.health() == {"state": "closed", "forced": True}
    assert await proxy.metric_state() == "Closed"

    await proxy.reload()  # and nothing brings the admin's Open back
    assert proxy.forced() is State.CLOSED

    await proxy.admin("open")  # until the admin speaks again
    await proxy.reload()
    assert proxy.forced() is State.OPEN
    assert await proxy.metric_state() == "Open"
    assert await proxy.served_by() == "secondary"


async def test_a_reset_is_a_one_off_and_leaves_the_admins_override(
    tmp_path: Path, fakes: dict[str, FakeUpstream], aiohttp_client: AppClient
) -> None:
    proxy = await Standalone.start(tmp_path, fakes, aiohttp_client)
    await proxy.admin("close")

    await proxy.admin("reset")
    await proxy.reload()

    assert proxy.forced() is State.CLOSED
    assert await proxy.health() == {"state": "closed", "forced": True}
