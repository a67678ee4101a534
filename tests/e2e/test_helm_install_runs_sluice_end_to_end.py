"""``helm install`` of the chart with the image built here, on a real node, as a user meets it.

The tests run in order on one release: its pods become Ready; fake upstreams run as pods of the
same image; the openai SDK gets answers through ``kubectl port-forward`` to the proxy's Service;
a failing primary opens its breaker in status and traffic moves; ``override: Open`` moves it
within 2 s; deleting the leader operator pod hands the Lease over within its duration and no
breaker state is lost; ``helm upgrade`` rolls the pods; ``helm uninstall`` leaves nothing.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from openai import OpenAI

from sluice.devcluster.node import NodeCluster
from tests.e2e.conftest import CHART, Run, image_values

NS = "e2e"
RELEASE = "sluice"
LEASE_DURATION = 15.0  # the chart's default operator.leaseDuration
T = TypeVar("T")
ANY = "0.0.0.0"  # noqa: S104 - a fake in a pod listens for its Service

pytestmark = pytest.mark.timeout(300)


def eventually(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:.0f}s (last: {last!r})", pytrace=False)


def fakes_manifest(image: str) -> str:
    """Two fake upstreams, each a Deployment of the same image and a Service."""
    documents: list[dict[str, Any]] = []
    for name in ("primary", "secondary"):
        labels = {"app.kubernetes.io/name": "fake", "fake": name}
        container = {
            "name": "fake",
            "image": image,
            "imagePullPolicy": "Never",
            "args": ["fake-upstream", "--name", name, "--host", ANY, "--port", "8000"],
            "ports": [{"containerPort": 8000, "name": "http"}],
            "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
        }
        documents.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"fake-{name}", "namespace": NS},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [container]},
                    },
                },
            }
        )
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"fake-{name}", "namespace": NS},
                "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": "http"}]},
            }
        )
    return "\n---\n".join(json.dumps(d) for d in documents)


UPSTREAMS = f"""
apiVersion: sluice.dev/v1alpha1
kind: BreakerPolicy
metadata: {{name: fast, namespace: {NS}}}
spec: {{consecutiveFailures: 3, openDuration: 2s, halfOpen: {{maxRequests: 1, successThreshold: 1}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Upstream
metadata: {{name: primary, namespace: {NS}}}
spec:
  provider: openai-compatible
  baseURL: http://fake-primary:8000/v1
  models: [{{name: m1}}]
  priority: 0
  probe: {{interval: 1s, timeout: 1s}}
  breaker: {{policyRef: {{name: fast}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Upstream
metadata: {{name: secondary, namespace: {NS}}}
spec:
  provider: openai-compatible
  baseURL: http://fake-secondary:8000/v1
  models: [{{name: m1}}]
  priority: 1
  probe: {{interval: 1s, timeout: 1s}}
  breaker: {{policyRef: {{name: fast}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: ModelRoute
metadata: {{name: m1, namespace: {NS}}}
spec: {{models: [m1], strategy: Priority, targets: [{{upstream: primary}}, {{upstream: secondary}}], retry: {{maxAttempts: 3}}}}
"""


class PortForward:
    """``kubectl port-forward svc/sluice-proxy`` on a free local port, as a user reaches it."""

    def __init__(self, kubectl_path: str, kubeconfig: str) -> None:
        self.process = subprocess.Popen(
            [
                kubectl_path,
                "--kubeconfig",
                kubeconfig,
                "-n",
                NS,
                "port-forward",
                f"svc/{RELEASE}-proxy",
                "0:80",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            self.close()
            pytest.fail(f"kubectl port-forward did not start: {line}", pytrace=False)
        self.port = int(found.group(1))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def release(node: NodeCluster, image: str, kubectl: Run, helm: Run) -> Iterator[str]:
    """The chart installed into namespace e2e with the image built here, and two fakes."""
    kubectl("create", "namespace", NS)
    kubectl("apply", "-f", "-", input=fakes_manifest(image))
    started = time.monotonic()
    helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NS,
        *image_values(image),
        "--wait",
        "--timeout",
        "180s",
    )
    print(f"helm install --wait took {time.monotonic() - started:.1f}s")
    kubectl("apply", "-f", "-", input=UPSTREAMS)
    yield RELEASE
    helm("uninstall", RELEASE, "-n", NS, "--wait", check=False)
    kubectl("delete", "namespace", NS, "--wait=false", check=False)


@pytest.fixture(scope="module")
def client(release: str, node: NodeCluster, kubectl: Run, tools: Any) -> Iterator[OpenAI]:
    """The openai SDK through a port-forward to the proxy's Service, with the chart's key."""
    secret = json.loads(
        kubectl("get", "secret", f"{release}-client-keys", "-n", NS, "-o", "json").stdout
    )
    key = base64.b64decode(secret["data"]["default"]).decode()
    forward = PortForward(str(tools.kubectl), str(node.kubeconfig))
    yield OpenAI(
        base_url=f"http://127.0.0.1:{forward.port}/v1", api_key=key, max_retries=0, timeout=10
    )
    forward.close()


def served_by(client: OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="m1", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content
    return str(raw.headers["x-sluice-upstream"])


def breaker(kubectl: Run, name: str) -> dict[str, Any]:
    upstream = json.loads(kubectl("get", "upstream", name, "-n", NS, "-o", "json").stdout)
    return dict(upstream.get("status", {}).get("breaker", {}))


def test_operator_and_proxy_pods_are_ready_with_the_charts_hardening(
    release: str, kubectl: Run
) -> None:
    pods = json.loads(
        kubectl(
            "get", "pods", "-n", NS, "-l", f"app.kubernetes.io/instance={release}", "-o", "json"
        ).stdout
    )["items"]

    components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
    assert components == ["operator", "operator", "proxy", "proxy"]
    for pod in pods:
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    pdb = json.loads(kubectl("get", "pdb", f"{release}-proxy", "-n", NS, "-o", "json").stdout)
    assert eventually(
        lambda: (
            json.loads(kubectl("get", "pdb", f"{release}-proxy", "-n", NS, "-o", "json").stdout)[
                "status"
            ].get("currentHealthy")
            == 2
        ),
        timeout=30,
        what="the PDB counts both proxies",
    )
    assert pdb["spec"]["minAvailable"] == 1


def test_the_sdk_gets_answers_through_the_service(client: OpenAI, kubectl: Run) -> None:
    eventually(
        lambda: breaker(kubectl, "primary").get("state") == "Closed",
        timeout=60,
        what="the operator probes primary and closes its breaker in status",
    )

    assert eventually(
        lambda: _try(lambda: served_by(client)) == "primary",
        timeout=60,
        what="the proxy serves m1 from primary",
    )
    assert {served_by(client) for _ in range(10)} == {"primary"}


def _try(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except Exception:  # polled until it works
        return None


def test_a_failing_primary_opens_its_breaker_and_traffic_moves(
    client: OpenAI, kubectl: Run
) -> None:
    kubectl("scale", "deployment/fake-primary", "-n", NS, "--replicas=0")

    opened = eventually(
        lambda: (
            breaker(kubectl, "primary").get("tripCount", 0) >= 1 and breaker(kubectl, "primary")
        ),
        timeout=60,
        what="primary's breaker opens in status",
    )
    assert opened["state"] in {"Open", "HalfOpen"}
    assert {served_by(client) for _ in range(10)} == {"secondary"}

    kubectl("scale", "deployment/fake-primary", "-n", NS, "--replicas=1")
    eventually(
        lambda: breaker(kubectl, "primary").get("state") == "Closed",
        timeout=90,
        what="primary's breaker closes again once it answers",
    )
    eventually(
        lambda: _try(lambda: served_by(client)) == "primary",
        timeout=30,
        what="traffic returns to primary",
    )


def test_an_override_open_moves_traffic_within_two_seconds(client: OpenAI, kubectl: Run) -> None:
    assert served_by(client) == "primary"
    started = time.monotonic()
    kubectl(
        "patch",
        "upstream",
        "primary",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        '{"spec":{"breaker":{"override":"Open"}}}',
    )

    eventually(
        lambda: served_by(client) == "secondary",
        timeout=2.0,
        interval=0.05,
        what="override Open moves traffic",
    )
    took = time.monotonic() - started
    assert took < 2.0
    assert {served_by(client) for _ in range(5)} == {"secondary"}


def pod_of(identity: str, pods: list[str]) -> str:
    """The operator pod a Lease identity names: the pod's name, or <hostname>-<pid> (a pod's
    hostname is its name); '' if none of ``pods`` (``pod/NAME``) is it."""
    names = [p.removeprefix("pod/") for p in pods]
    return next((n for n in names if identity in (n, *(f"{n}-{i}" for i in range(1, 10)))), "")


def lease_holder(kubectl: Run) -> str:
    lease = json.loads(
        kubectl("get", "lease", f"{RELEASE}-operator", "-n", NS, "-o", "json").stdout
    )
    return str(lease["spec"].get("holderIdentity") or "")


def test_deleting_the_leader_pod_hands_the_lease_over_and_keeps_breaker_state(
    client: OpenAI, kubectl: Run
) -> None:
    eventually(
        lambda: breaker(kubectl, "primary").get("forced"),
        timeout=30,
        what="status shows the forced breaker",
    )
    before = breaker(kubectl, "primary")
    holder = lease_holder(kubectl)
    pods = kubectl(
        "get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=operator", "-o", "name"
    ).stdout.split()
    leader_pod = pod_of(holder, pods)
    assert leader_pod, (holder, pods)

    started = time.monotonic()
    kubectl("delete", "pod", leader_pod, "-n", NS, "--wait=false")
    new = eventually(
        lambda: (h := lease_holder(kubectl)) != holder and h,
        timeout=LEASE_DURATION + 10,
        what="another operator takes the Lease",
    )
    took = time.monotonic() - started

    assert new != holder
    assert took <= LEASE_DURATION + 5, f"handover took {took:.1f}s"
    after = breaker(kubectl, "primary")
    assert after["state"] == "Open"
    assert after.get("forced")
    assert after.get("tripCount", 0) >= before.get("tripCount", 0)
    assert served_by(client) == "secondary"
    kubectl(
        "patch",
        "upstream",
        "primary",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        '{"spec":{"breaker":{"override":null}}}',
    )


def _pod_names(kubectl: Run, component: str) -> set[str]:
    out = kubectl(
        "get", "pods", "-n", NS, "-l", f"app.kubernetes.io/component={component}", "-o", "name"
    )
    return set(out.stdout.split())


def test_helm_upgrade_with_changed_values_rolls_the_pods(
    release: str, image: str, helm: Run, kubectl: Run
) -> None:
    before = _pod_names(kubectl, "proxy") | _pod_names(kubectl, "operator")

    helm(
        "upgrade",
        release,
        str(CHART),
        "-n",
        NS,
        *image_values(image),
        "--set",
        "proxy.podAnnotations.e2e/rolled=yes",
        "--set",
        "operator.podAnnotations.e2e/rolled=yes",
        "--wait",
        "--timeout",
        "180s",
    )

    for component in ("proxy", "operator"):
        kubectl(
            "rollout",
            "status",
            f"deployment/{release}-{component}",
            "-n",
            NS,
            "--timeout=120s",
            timeout=130,
        )

    def rolled() -> bool:
        now = _pod_names(kubectl, "proxy") | _pod_names(kubectl, "operator")
        return len(now) == 4 and not now & before

    eventually(rolled, timeout=90, what="every pod is new and the old ones are gone")


def test_helm_uninstall_leaves_nothing_behind(release: str, helm: Run, kubectl: Run) -> None:
    helm("uninstall", release, "-n", NS, "--wait", "--timeout", "120s")

    def leftovers() -> str:
        kinds = (
            "all,configmaps,secrets,serviceaccounts,roles,rolebindings,pdb,leases,networkpolicies"
        )
        names = kubectl(
            "get", kinds, "-n", NS, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
        ).stdout
        cluster = kubectl(
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).stdout
        return (names + cluster).strip()

    eventually(
        lambda: not leftovers(), timeout=60, what=f"nothing of the release is left: {leftovers()}"
    )
    kubectl("delete", "namespace", NS, "--timeout=120s", timeout=130)
    assert kubectl("get", "namespace", NS, check=False).returncode != 0
