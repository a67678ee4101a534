"""The image works as the chart runs it: uid 65532, a read-only root filesystem, /tmp writable.

The proof that nothing writes outside /tmp is the read-only root itself: the first test shows
the harness really refuses writes there, the others that each command starts and serves anyway.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sluice.devcluster.image import REPOSITORY, ImageBuild
from tests.image.runc import Runc, Started

# A cold cache builds the image inside the first test (the base and the image: minutes).
pytestmark = pytest.mark.timeout(1800)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"content-type": "application/json"}
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_for(url: str, started: Started, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            pytest.fail(f"the container exited ({started.process.returncode}):\n{started.stop()}")
        try:
            if _get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f}s:\n{started.stop()}")


def test_the_image_is_named_by_its_hash_and_runs_sluice_as_65532(
    image: ImageBuild, containers: Runc
) -> None:
    assert image.reference == f"{REPOSITORY}:{image.key}"
    assert image.archive.is_file()
    assert containers.config.user == "65532:65532"
    assert containers.config.entrypoint == ["sluice"]
    passwd = (containers.rootfs / "etc" / "passwd").read_text()
    assert "sluice:x:65532:65532:" in passwd


def test_the_root_filesystem_is_read_only_and_tmp_is_not(containers: Runc) -> None:
    root = containers.run(["/bin/sh", "-c", "touch /opt/sluice/x"])
    assert root.returncode != 0
    assert "Read-only file system" in root.stderr
    tmp = containers.run(["/bin/sh", "-c", "touch /tmp/x && id -u && id -g"])
    assert tmp.returncode == 0, tmp.stderr
    assert tmp.stdout.split() == ["65532", "65532"]


def test_sluice_help_runs(containers: Runc) -> None:
    done = containers.run([*containers.config.entrypoint, *containers.config.cmd])
    assert done.returncode == 0, done.stderr
    assert "usage: sluice" in done.stdout
    assert done.stderr == ""


def test_the_fake_upstream_serves(containers: Runc) -> None:
    port = _free_port()
    fake = containers.start(["sluice", "fake-upstream", "--port", str(port)])
    try:
        _wait_for(f"http://127.0.0.1:{port}/v1/models", fake)
    finally:
        output = fake.stop()
    assert "fake openai upstream fake on" in output


def _write_manifests(directory: Path, fake_port: int) -> None:
    (directory / "sluice.yaml").write_text(
        f"""apiVersion: sluice.dev/v1alpha1
kind: Upstream
metadata: {{name: fake}}
spec:
  provider: openai-compatible
  baseURL: http://127.0.0.1:{fake_port}/v1
  models: [{{name: m1}}]
---
apiVersion: sluice.dev/v1alpha1
kind: ModelRoute
metadata: {{name: m1}}
spec:
  models: [m1]
  targets: [{{upstream: fake}}]
"""
    )


def test_the_proxy_serves_from_manifests(containers: Runc, manifests: Path) -> None:
    fake_port, proxy_port = _free_port(), _free_port()
    _write_manifests(manifests, fake_port)
    fake = containers.start(["sluice", "fake-upstream", "--port", str(fake_port), "--model", "m1"])
    proxy = containers.start(
        ["sluice", "proxy", "--manifests", "/etc/sluice/manifests", "--port", str(proxy_port)],
        binds={"/etc/sluice/manifests": manifests},
    )
    try:
        _wait_for(f"http://127.0.0.1:{fake_port}/v1/models", fake)
        _wait_for(f"http://127.0.0.1:{proxy_port}/readyz", proxy)
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
        url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        status, answer = _get(url, json.dumps(body).encode())
    finally:
        output = proxy.stop()
        fake.stop()
    assert status == 200, answer
    assert json.loads(answer)["choices"], answer
    assert "Read-only file system" not in output
