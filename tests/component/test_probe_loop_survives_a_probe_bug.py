"""`--manifests`: an unexpected error in one probe is logged, and that upstream is probed
again at its interval; the probe loop never ends silently."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sluice import probe as probes
from sluice.fakes import FakeUpstream
from sluice.proxy import standalone
from sluice.proxy.standalone import StandaloneOptions, build
from tests.component.conftest import manifests
from tests.component.test_standalone_mode import write


async def test_a_probe_that_raises_is_logged_and_the_upstream_is_probed_again(
    tmp_path: Path,
    fakes: dict[str, FakeUpstream],
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    documents = manifests(fakes)
    for document in documents:
        if document["kind"] == "Upstream":
            # Short, but not so short that a busy machine times the probe out.
            document["spec"]["probe"] = {"interval": "100ms", "timeout": "100ms"}
    write(tmp_path / "sluice.yaml", documents)
    calls: list[str] = []

    async def buggy_once(session: Any, spec: Any, **options: Any) -> probes.ProbeResult:
        calls.append(spec.base_url)
        if calls.count(spec.base_url) == 1:
            raise RuntimeError("a bug in the probe")
        return await probes.probe(session, spec, **options)

    monkeypatch.setattr(standalone, "probe", buggy_once)
    with caplog.at_level(logging.ERROR, logger="sluice.proxy"):
        await aiohttp_client(build(StandaloneOptions(paths=(tmp_path,), reload_interval=0.05)))
        deadline = time.monotonic() + 5
        # Probed again after the bug: the fake sees probes (a busy machine may time one out).
        while len(fakes["primary"].requests_to("/v1/models")) < 2:
            assert time.monotonic() < deadline, f"probing stopped after {calls}"
            await asyncio.sleep(0.02)

    assert "probe of default/primary failed unexpectedly" in caplog.text
    assert "RuntimeError: a bug in the probe" in caplog.text
    assert len(fakes["primary"].requests_to("/v1/models")) >= 2
