"""`sluice proxy --kubernetes` against the real API server: overrides and the operator's status
reach the request path within seconds; admin actions patch the resources."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.devcluster import find_binaries
from sluice.devcluster.cluster import ControlPlane
from tests.integration.conftest import Kubectl
from tests.integration.harness import (
    ProxyProcess,
    ThreadedFake,
    eventually,
    get_json,
    patch_status,
    set_override,
)


def manifests(namespace: str, fakes: dict[str, ThreadedFake]) -> str:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "m1", "namespace": namespace},
            "spec": {"models": ["m1"], "targets": [{"upstream": n} for n in fakes]},
        }
    ]
    for priority, (name, fake) in enumerate(fakes.items()):
        documents.append(
            {
                "apiVersion": "sluice.dev/v1alpha1",
                "kind": "Upstream",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "provider": "openai-compatible",
                    "baseURL": fake.base_url,
                    "models": [{"name": "m1"}],
                    "priority": priority,
                },
            }
        )
    return "\n---\n".join(json.dumps(d) for d in documents)


@pytest.fixture
def proxy(
    kubectl: Kubectl,
    namespace: str,
    fakes: dict[str, ThreadedFake],
    control_plane: ControlPlane,
    sluice_crds: Path,
    tmp_path: Path,
) -> Iterator[ProxyProcess]:
    kubectl("apply", "-f", "-", input=manifests(namespace, fakes))
    process = ProxyProcess(control_plane.kubeconfig, namespace, tmp_path / "proxy.log")
    try:
        eventually(process.ready, timeout=30, what="the proxy serving")
        yield process
    finally:
        process.stop()


def within(seconds: float, check: Any, what: str) -> float:
    """How long ``check`` took to come true; fails past ``seconds``."""
    started = time.monotonic()
    eventually(check, timeout=seconds, interval=0.05, what=what)
    return time.monotonic() - started


def test_an_override_patched_with_kubectl_stops_traffic_within_two_seconds(
    kubectl: Kubectl, namespace: str, proxy: ProxyProcess
) -> None:
    assert proxy.served_by() == "primary"

    set_override(kubectl, namespace, "primary", "Open")
    took = within(2, lambda: proxy.served_by() == "secondary", "traffic moved off primary")
    for _ in range(10):
        assert proxy.served_by() == "secondary"

    set_override(kubectl, namespace, "primary", None)
    within(2, lambda: proxy.served_by() == "primary", "traffic back on primary")
    print(f"\noverride reached the proxy in {took:.2f}s")


def test_the_operators_open_breaker_in_status_keeps_traffic_away(
    kubectl: Kubectl, namespace: str, proxy: ProxyProcess
) -> None:
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch_status(
        kubectl,
        namespace,
        "primary",
        {"breaker": {"state": "Open", "openUntil": until, "reason": "ProbeFailures"}},
    )

    within(2, lambda: proxy.served_by() == "secondary", "traffic moved off primary")
    patch_status(kubectl, namespace, "primary", {"breaker": {"state": "Closed", "openUntil": None}})
    within(2, lambda: proxy.served_by() == "primary", "traffic back on primary")


def test_admin_actions_patch_the_upstream_so_every_replica_sees_them(
    kubectl: Kubectl, namespace: str, proxy: ProxyProcess
) -> None:
    proxy.admin(f"/admin/breakers/{namespace}/primary/open")

    upstream = get_json(kubectl, "upstream", "primary", "-n", namespace)
    assert upstream["spec"]["breaker"]["override"] == "Open"
    within(2, lambda: proxy.served_by() == "secondary", "traffic moved off primary")

    proxy.admin(f"/admin/breakers/{namespace}/primary/reset")
    upstream = get_json(kubectl, "upstream", "primary", "-n", namespace)
    assert "sluice.dev/reset" in upstream["metadata"]["annotations"]


def test_a_binary_secret_does_not_stop_the_proxy_following_the_cluster(
    kubectl: Kubectl, namespace: str, fakes: dict[str, ThreadedFake], proxy: ProxyProcess
) -> None:
    binary = base64.b64encode(b"\xff\xfe").decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "binary"}}
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({**secret, "data": {"apiKey": binary}}),
    )
    keyed = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Upstream",
        "metadata": {"name": "keyed"},
        "spec": {
            "provider": "openai-compatible",
            "baseURL": fakes["primary"].base_url,
            "models": [{"name": "m2"}],
            "credentials": {"secretRef": {"name": "binary", "key": "apiKey"}},
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(keyed))
    eventually(
        lambda: 'secret "binary" key "apiKey" is not UTF-8 text' in proxy.log(),
        timeout=5,
        what="the binary key reported",
    )

    set_override(kubectl, namespace, "primary", "Open")
    within(2, lambda: proxy.served_by() == "secondary", "a later override applied")


def test_an_upstream_is_served_only_once_its_credentials_secret_exists(
    kubectl: Kubectl, namespace: str, fakes: dict[str, ThreadedFake], proxy: ProxyProcess
) -> None:
    assert proxy.served_by() == "primary"
    credentials = {"credentials": {"secretRef": {"name": "primary-key", "key": "apiKey"}}}
    patch = json.dumps({"spec": credentials})
    kubectl("patch", "upstream", "primary", "-n", namespace, "--type", "merge", "-p", patch)
    within(2, lambda: proxy.served_by() == "secondary", "primary left out without its key")
    assert (
        f'Upstream {namespace}/primary: credentials secret "primary-key" key "apiKey" not '
        "found; the upstream is not served until it exists"
    ) in proxy.log()
    literal = "--from-literal=apiKey=sk-primary-from-the-secret"
    kubectl("create", "secret", "generic", "primary-key", "-n", namespace, literal)
    within(10, lambda: proxy.served_by() == "primary", "primary joined with its key")
    headers = {k.lower(): v for k, v in fakes["primary"].seen()[-1].headers.items()}
    assert headers["authorization"] == "Bearer sk-primary-from-the-secret"


def test_it_keeps_serving_the_last_known_state_when_the_api_server_goes_away(
    fakes: dict[str, ThreadedFake], tools: Any, tmp_path: Path
) -> None:
    binaries = find_binaries()
    assert binaries is not None
    plane = ControlPlane.start(binaries)  # our own, so we can stop it
    try:
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
        crds = Path(__file__).resolve().parents[2] / "crds"
        for args in (
            ["apply", "-f", str(crds)],
            ["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
        ):
            subprocess.run([str(tools.kubectl), *args], env=env, check=True, capture_output=True)
        eventually(
            lambda: (
                subprocess.run(
                    [str(tools.kubectl), "get", "sluice"], env=env, capture_output=True, check=False
                ).returncode
                == 0
            ),
            timeout=30,
            what="discovery",
        )
        subprocess.run(
            [str(tools.kubectl), "apply", "-f", "-"],
            env=env,
            check=True,
            capture_output=True,
            input=manifests("default", fakes).encode(),
        )
        subprocess.run(
            [
                str(tools.kubectl),
                "patch",
                "upstream",
                "primary",
                "--type",
                "merge",
                "-p",
                '{"spec":{"breaker":{"override":"Open"}}}',
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        proxy = ProxyProcess(plane.kubeconfig, "default", tmp_path / "proxy.log")
        try:
            eventually(proxy.ready, timeout=30, what="the proxy serving")
            eventually(lambda: proxy.served_by() == "secondary", timeout=5, what="override seen")

            plane.stop()
            time.sleep(2)  # the watches notice and retry

            assert [proxy.served_by() for _ in range(5)] == ["secondary"] * 5
            assert "serving the last known table" in proxy.log()
        finally:
            proxy.stop()
    finally:
        plane.stop()
