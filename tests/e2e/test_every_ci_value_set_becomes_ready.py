"""Every value set under charts/sluice/ci/ installs on the node and its pods become Ready.

Each set gets a namespace of its own, the Secrets it names (``existingSecret``), and the
Prometheus Operator's two kinds its ServiceMonitor and PrometheusRule need; the image values
are overridden with the image built here. The sets install a few at a time (the node has two
cores), each is uninstalled, and its namespace deleted, once it was Ready.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import CHART, Run, image_values

VALUE_SETS = sorted((CHART / "ci").glob("*.yaml"))
AT_ONCE = 3  # each release is up to four Python processes starting on two cores

pytestmark = pytest.mark.timeout(600)


def monitoring_crd(kind: str, plural: str) -> dict[str, object]:
    """Just enough of the Prometheus Operator's CRD for the chart's objects to be stored."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def secrets_for(namespace: str) -> str:
    """The Secrets the value sets name instead of letting the chart make them."""
    secrets = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "my-client-keys", "namespace": namespace},
            "stringData": {"ci": "sk-ci-key"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "my-admin-token", "namespace": namespace},
            "stringData": {"token": "ci-admin-token"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "primary-key", "namespace": namespace},
            "stringData": {"apiKey": "sk-fake"},
        },
    ]
    return "\n---\n".join(json.dumps(s) for s in secrets)


def install_and_check(values: Path, image: str, helm: Run, kubectl: Run) -> str:
    """Install one set, wait for its pods, uninstall it; a failure message, or ''."""
    namespace = f"ci-{values.stem.removesuffix('-values')}"[:63]
    kubectl("create", "namespace", namespace)
    kubectl("apply", "-f", "-", input=secrets_for(namespace))
    started = time.monotonic()
    installed = helm(
        "install",
        "sluice",
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(values),
        *image_values(image),
        "--wait",
        "--timeout",
        "240s",
        check=False,
        timeout=260,
    )
    took = time.monotonic() - started
    problem = ""
    if installed.returncode != 0:
        pods = kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        problem = f"{values.name}: helm install --wait failed after {took:.0f}s: {installed.stderr}\n{pods}"
    else:
        pods = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        unready = [
            p["metadata"]["name"]
            for p in pods
            if not any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        if unready or not pods:
            problem = f"{values.name}: pods not Ready: {unready or 'none at all'}"
        print(f"{values.name}: {len(pods)} pods Ready in {took:.0f}s")
    helm("uninstall", "sluice", "-n", namespace, "--wait", "--timeout", "120s", check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return problem


def test_every_ci_value_set_installs_and_becomes_ready(image: str, helm: Run, kubectl: Run) -> None:
    assert VALUE_SETS, "charts/sluice/ci/ has no value sets"
    crds = [
        monitoring_crd("ServiceMonitor", "servicemonitors"),
        monitoring_crd("PrometheusRule", "prometheusrules"),
    ]
    kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(c) for c in crds))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    )

    with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
        problems = [
            p
            for p in pool.map(lambda v: install_and_check(v, image, helm, kubectl), VALUE_SETS)
            if p
        ]

    assert not problems, "\n\n".join(problems)
