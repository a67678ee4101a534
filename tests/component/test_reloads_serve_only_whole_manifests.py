"""`--manifests` reloads: a file caught mid-write, an Upstream whose Secret is not there yet, or
a YAML error is never served; the last good table stays, and the log names the problem
without quoting the file (it may hold a key)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sluice.fakes import FakeUpstream
from sluice.proxy import manifests as manifest_files
from sluice.proxy.handlers import PROXY
from sluice.proxy.standalone import StandaloneOptions, build
from sluice.proxy.table import Table
from tests.component.conftest import API_KEYS, manifests
from tests.component.test_standalone_mode import SECRETS, write

AppClient = Callable[..., Awaitable[TestClient]]


async def eventually(condition: Callable[[], bool], what: str, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def served_by(client: TestClient) -> str:
    response = await client.post("/v1/chat/completions", json={"model": "m1", "messages": []})
    assert response.status == 200
    return response.headers["x-sluice-upstream"]


def last_authorization(fake: FakeUpstream) -> str | None:
    chats = fake.requests_to("/v1/chat/completions")
    return chats[-1].headers.get("authorization") if chats else None


async def test_a_file_caught_mid_write_is_not_read_until_it_holds_still(
    tmp_path: Path,
    fakes: dict[str, FakeUpstream],
    aiohttp_client: AppClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "sluice.yaml"
    documents = manifests(fakes)  # the policy, the route, primary, then secondary
    write(path, documents)
    client = await aiohttp_client(build(StandaloneOptions(paths=(path,), reload_interval=0.05)))
    proxy = client.app[PROXY]
    served: list[Table] = []
    set_table = proxy.set_table

    def record(table: Table) -> None:
        served.append(table)
        set_table(table)

    monkeypatch.setattr(proxy, "set_table", record)
    checked = asyncio.Event()
    signature = manifest_files.signature

    def spy(paths: Any) -> Any:
        checked.set()
        return signature(paths)

    monkeypatch.setattr(manifest_files, "signature", spy)

    documents[-1]["spec"]["weight"] = 7
    write(path, documents)
    text = path.read_text()
    cut = text.rindex("\n---\n")  # the first part alone is a valid manifest, without secondary
    path.write_text(text[:cut])
    checked.clear()
    await checked.wait()  # the reload loop has looked at the half-written file
    with path.open("a") as rest:
        rest.write(text[cut:])

    def reloaded() -> bool:
        target = proxy.table.targets.get(("default", "secondary"))
        return target is not None and target.spec.weight == 7

    await eventually(reloaded, "the finished file was never reloaded")
    assert served, "the reload did not go through set_table"
    assert all(("default", "secondary") in table.targets for table in served), (
        "the half-written file was served"
    )


def test_the_first_load_refuses_an_upstream_whose_secret_is_missing(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    path = tmp_path / "sluice.yaml"
    write(path, [*SECRETS[1:], *manifests(fakes)], secrets=False)  # no primary-key

    with pytest.raises(
        manifest_files.ManifestError,
        match='Upstream default/primary: credentials secret "primary-key" not found '
        r'\(key "apiKey"\)',
    ):
        build(StandaloneOptions(paths=(path,)))


async def test_a_reload_missing_a_secret_keeps_the_last_good_table_and_says_why(
    tmp_path: Path,
    fakes: dict[str, FakeUpstream],
    aiohttp_client: AppClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "sluice.yaml"
    documents = manifests(fakes)
    write(path, documents)
    client = await aiohttp_client(build(StandaloneOptions(paths=(path,), reload_interval=0.05)))
    assert await served_by(client) == "primary"

    documents[-1]["spec"]["weight"] = 7  # a change that would show if it were served
    write(path, [*SECRETS[1:], *documents], secrets=False)  # the Secret not written yet
    message = 'Upstream default/primary: credentials secret "primary-key" not found (key "apiKey")'
    with caplog.at_level(logging.ERROR, logger="sluice.proxy"):
        await eventually(lambda: message in caplog.text, "the missing Secret was never reported")

    proxy = client.app[PROXY]
    assert proxy.table.targets["default", "secondary"].spec.weight != 7
    assert proxy.table.targets["default", "primary"].api_key == API_KEYS["primary"]
    assert await served_by(client) == "primary"
    assert last_authorization(fakes["primary"]) == f"Bearer {API_KEYS['primary']}"


SECRET_WITH_A_SYNTAX_ERROR = """\
apiVersion: v1
kind: Secret
metadata: {name: primary-key}
stringData:
  apiKey: sk-live-do-not-print-me: oops
"""


async def test_a_yaml_error_on_reload_is_logged_by_line_and_column_never_quoting_the_file(
    tmp_path: Path,
    fakes: dict[str, FakeUpstream],
    aiohttp_client: AppClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write(tmp_path / "sluice.yaml", manifests(fakes), secrets=False)
    secret = tmp_path / "secret.yaml"
    write(secret, [], secrets=True)
    client = await aiohttp_client(build(StandaloneOptions(paths=(tmp_path,), reload_interval=0.05)))

    secret.write_text(SECRET_WITH_A_SYNTAX_ERROR)
    with caplog.at_level(logging.DEBUG):
        await eventually(lambda: "not valid YAML" in caplog.text, "the YAML error was not logged")

    assert (
        f"{secret}: not valid YAML at line 5, column 34: mapping values are not allowed here"
        in caplog.text
    )
    assert "do-not-print-me" not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    assert await served_by(client) == "primary"
