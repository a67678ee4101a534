"""The Helm chart: lint and template for every value set, install into the real API server, and
the operator and proxy doing their whole job as the chart's ServiceAccounts - and nothing more."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from sluice.devcluster import Tools
from sluice.devcluster.cluster import ControlPlane
from tests.integration.conftest import Kubectl
from tests.integration.harness import (
    OperatorProcess,
    ProxyProcess,
    ThreadedFake,
    eventually,
    get_json,
)

CHART = Path(__file__).resolve().parents[2] / "charts" / "sluice"
VALUE_SETS = sorted((CHART / "ci").glob("*.yaml"))
HELM_HOME = Path(tempfile.mkdtemp(prefix="sluice-helm-"))


def helm(
    tools: Tools, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,  # helm's own state goes to a temp dir: no user's helm config leaks in
        "HELM_CACHE_HOME": str(HELM_HOME / "cache"),
        "HELM_CONFIG_HOME": str(HELM_HOME / "config"),
        "HELM_DATA_HOME": str(HELM_HOME / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [str(tools.helm), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "values", [None, *VALUE_SETS], ids=["defaults", *(v.stem for v in VALUE_SETS)]
)
def test_the_chart_lints_and_templates(tools: Tools, values: Path | None) -> None:
    extra = ["-f", str(values)] if values else []

    lint = helm(tools, "lint", "--strict", str(CHART), *extra)
    rendered = helm(tools, "template", "sluice", str(CHART), *extra)

    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert rendered.returncode == 0, rendered.stderr
    kinds = {
        line.split(":", 1)[1].strip()
        for line in rendered.stdout.splitlines()
        if line.startswith("kind:")
    }
    assert {"Deployment", "Service", "ServiceAccount"} <= kinds


def test_a_misspelt_value_is_refused_by_the_schema(tools: Tools) -> None:
    result = helm(tools, "template", "sluice", str(CHART), "--set", "proxy.replicass=3")

    assert result.returncode != 0
    assert "additional properties 'replicass' not allowed" in result.stderr


def upstream(namespace: str, fake: ThreadedFake) -> str:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "primary-key", "namespace": namespace},
            "stringData": {"apiKey": "sk-chart-test-key"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "unrelated", "namespace": namespace},
            "stringData": {"password": "not for sluice"},
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": "primary", "namespace": namespace},
            "spec": {
                "provider": "openai-compatible",
                "baseURL": fake.base_url,
                "credentials": {"secretRef": {"name": "primary-key"}},
                "models": [{"name": "m1"}],
                "probe": {"interval": "500ms", "timeout": "500ms"},
            },
        },
    ]
    return "\n---\n".join(json.dumps(d) for d in documents)


@pytest.fixture
def installed(tools: Tools, control_plane: ControlPlane, sluice_crds: Path, namespace: str) -> str:
    values = CHART / "ci" / "least-privilege-values.yaml"
    result = helm(
        tools,
        "install",
        "sluice",
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values),
        kubeconfig=control_plane.kubeconfig,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Point applications' OpenAI SDK at the proxy" in result.stdout  # NOTES.txt
    return namespace


def test_helm_install_creates_every_object(kubectl: Kubectl, installed: str) -> None:
    listed = get_json(
        kubectl,
        "deploy,sa,role,rolebinding,svc",
        "-n",
        installed,
        "-l",
        "app.kubernetes.io/instance=sluice",
    )
    names = sorted(f"{i['kind']}/{i['metadata']['name']}" for i in listed["items"])

    assert names == [
        "Deployment/sluice-operator",
        "Deployment/sluice-proxy",
        "Role/sluice-operator",
        "Role/sluice-operator-leader",
        "Role/sluice-proxy",
        "RoleBinding/sluice-operator",
        "RoleBinding/sluice-operator-leader",
        "RoleBinding/sluice-proxy",
        "Service/sluice-operator-metrics",
        "Service/sluice-proxy",
        "ServiceAccount/sluice-operator",
        "ServiceAccount/sluice-proxy",
    ]
    proxy = get_json(kubectl, "deploy", "sluice-proxy", "-n", installed)
    container = proxy["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_operator_and_proxy_do_their_job_as_the_charts_service_accounts(
    kubectl: Kubectl, installed: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace = installed
    fake = ThreadedFake("primary")
    fake.start()
    as_operator = control_plane.service_account_kubeconfig(
        namespace, "sluice-operator", tmp_path / "operator.kubeconfig"
    )
    as_proxy = control_plane.service_account_kubeconfig(
        namespace, "sluice-proxy", tmp_path / "proxy.kubeconfig"
    )
    kubectl("apply", "-f", "-", input=upstream(namespace, fake))
    operator = OperatorProcess(as_operator, namespace, tmp_path / "operator.log")
    proxy = ProxyProcess(as_proxy, namespace, tmp_path / "proxy.log")
    try:
        # The operator: leader Lease, probes with the Secret's key, status, Events.
        probed = eventually(
            lambda: [r.headers.get("authorization") for r in fake.seen()],
            timeout=30,
            what="a probe with the Secret's key",
        )
        assert probed[0] == "Bearer sk-chart-test-key"
        eventually(
            lambda: (
                (get_json(kubectl, "upstream", "primary", "-n", namespace).get("status") or {})
                .get("breaker", {})
                .get("state")
                == "Closed"
            ),
            timeout=30,
            what="the operator writing status as its ServiceAccount",
        )
        # The proxy: watches and reads the Secret it needs, and serves.
        eventually(proxy.ready, timeout=30, what="the proxy serving as its ServiceAccount")
        eventually(lambda: proxy.served_by() == "primary", timeout=20, what="a request served")
        fake.stop()
        eventually(
            lambda: any(
                e["reason"] == "ProbeFailures"
                for e in get_json(
                    kubectl,
                    "events",
                    "-n",
                    namespace,
                    "--field-selector",
                    "involvedObject.name=primary",
                )["items"]
            ),
            timeout=15,
            what="an Event posted as the operator's ServiceAccount",
        )
        lease = get_json(kubectl, "lease", "sluice-operator", "-n", namespace)
        assert lease["spec"]["holderIdentity"] == "op"

        assert "Forbidden" not in operator.log() + proxy.log()
    finally:
        proxy.stop()
        operator.stop()
        fake.close()


@pytest.mark.parametrize(
    ("account", "args", "refusal"),
    [
        (
            "sluice-proxy",
            [
                "patch",
                "upstream",
                "primary",
                "--subresource=status",
                "--type",
                "merge",
                "-p",
                '{"status":{"breaker":{"state":"Open"}}}',
            ],
            'resource "upstreams/status"',  # kubectl reads it first: refused already
        ),
        (
            "sluice-proxy",
            [
                "patch",
                "upstream",
                "primary",
                "--type",
                "merge",
                "-p",
                '{"spec":{"breaker":{"override":"Open"}}}',
            ],
            'cannot patch resource "upstreams"',
        ),  # admin endpoints are off in this value set
        ("sluice-proxy", ["get", "secret", "unrelated"], 'cannot get resource "secrets"'),
        ("sluice-operator", ["get", "secret", "unrelated"], 'cannot get resource "secrets"'),
        (
            "sluice-operator",
            [
                "patch",
                "upstream",
                "primary",
                "--type",
                "merge",
                "-p",
                '{"spec":{"breaker":{"override":"Open"}}}',
            ],
            'cannot patch resource "upstreams"',
        ),
        (
            "sluice-operator",
            ["delete", "upstream", "primary"],
            'cannot delete resource "upstreams"',
        ),
        (
            "sluice-operator",
            ["get", "upstreams", "-n", "kube-system"],
            'cannot list resource "upstreams"',
        ),
    ],
    ids=[
        "proxy-writes-status",
        "proxy-patches-spec",
        "proxy-reads-unrelated-secret",
        "operator-reads-unrelated-secret",
        "operator-patches-spec",
        "operator-deletes",
        "operator-looks-elsewhere",
    ],
)
def test_each_is_refused_what_it_must_not_have(
    kubectl: Kubectl,
    installed: str,
    control_plane: ControlPlane,
    tmp_path: Path,
    account: str,
    args: list[str],
    refusal: str,
) -> None:
    fake = ThreadedFake("primary")
    kubectl("apply", "-f", "-", input=upstream(installed, fake))
    as_account = control_plane.service_account_kubeconfig(installed, account, tmp_path / "kc")

    result = kubectl(*args, kubeconfig=as_account, check=False)

    fake.close()
    assert result.returncode != 0
    assert "Forbidden" in result.stderr
    assert refusal in result.stderr
