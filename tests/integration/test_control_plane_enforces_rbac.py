"""The test control plane is a real API server: CRDs, storage, RBAC and ServiceAccount tokens."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path

import pytest

from sluice.devcluster.cluster import ControlPlane
from tests.integration.conftest import Kubectl

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.sluice.dev
spec:
  group: test.sluice.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
"""


@pytest.fixture(scope="module")
def widget_crd(kubectl: Kubectl) -> str:
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/widgets.test.sluice.dev",
    )
    # Established can precede discovery by a moment; kubectl resolves kinds through discovery.
    deadline = time.monotonic() + 30
    while kubectl("get", "widgets", "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, "widgets never became discoverable"
        time.sleep(0.2)
    return "widgets.test.sluice.dev"


def _widget(namespace: str, name: str, size: int) -> str:
    return json.dumps(
        {
            "apiVersion": "test.sluice.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"size": size},
        }
    )


def test_applied_crd_stores_and_returns_objects(
    kubectl: Kubectl, widget_crd: str, namespace: str
) -> None:
    kubectl("apply", "-f", "-", input=_widget(namespace, "w1", 3))

    got = json.loads(kubectl("get", "widget", "w1", "-n", namespace, "-o", "json").stdout)

    assert got["spec"] == {"size": 3}
    assert got["metadata"]["uid"]


def test_crd_schema_is_enforced_by_the_api_server(
    kubectl: Kubectl, widget_crd: str, namespace: str
) -> None:
    result = kubectl("apply", "-f", "-", input=_widget(namespace, "bad", 0), check=False)

    assert result.returncode != 0
    assert (
        "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        in (result.stderr)
    )


def test_service_account_without_rbac_is_forbidden_and_a_role_allows_it(
    kubectl: Kubectl,
    widget_crd: str,
    namespace: str,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    kubectl("apply", "-f", "-", input=_widget(namespace, "w1", 1))
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    as_reader = control_plane.service_account_kubeconfig(namespace, "reader", tmp_path / "kc")

    refused = kubectl("get", "widgets", "-n", namespace, kubeconfig=as_reader, check=False)

    assert refused.returncode != 0
    assert "Error from server (Forbidden)" in refused.stderr
    assert f'User "system:serviceaccount:{namespace}:reader" cannot list resource "widgets"' in (
        refused.stderr
    )

    kubectl(
        "create",
        "role",
        "widget-reader",
        "-n",
        namespace,
        "--verb=get,list",
        "--resource=widgets.test.sluice.dev",
    )
    kubectl(
        "create",
        "rolebinding",
        "reader-reads-widgets",
        "-n",
        namespace,
        "--role=widget-reader",
        f"--serviceaccount={namespace}:reader",
    )

    allowed = kubectl("get", "widgets", "-n", namespace, "-o", "name", kubeconfig=as_reader)
    assert allowed.stdout.split() == ["widget.test.sluice.dev/w1"]

    # The Role grants reading only: writing is still refused with 403.
    write = kubectl("delete", "widget", "w1", "-n", namespace, kubeconfig=as_reader, check=False)
    assert write.returncode != 0
    assert "cannot delete resource" in write.stderr


def test_raw_requests_get_403_not_401_for_an_authenticated_service_account(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    """403 (authenticated, not authorized) proves the token is accepted and RBAC decides."""
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = control_plane.service_account_token(namespace, "nobody")
    host, port = control_plane.server.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(control_plane.pki.ca_cert))
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        conn.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/secrets",
            headers={"Authorization": f"Bearer {token}"},
        )
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()

    assert response.status == 403
    assert body["reason"] == "Forbidden"
