"""The Helm chart: lint and template for every value set, install into the real API server, and
the operator and proxy doing their whole job as the chart's ServiceAccounts - and nothing more."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.devcluster import Tools
from sluice.devcluster.cluster import ControlPlane, free_port
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


def render(tools: Tools, *args: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``helm template``'s objects by (kind, name)."""
    result = helm(tools, "template", "sluice", str(CHART), *args)
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


def proxy_pod(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return dict(objects["Deployment", "sluice-proxy"]["spec"]["template"]["spec"])


def test_both_deployments_can_run_an_image_built_here_without_pulling(tools: Tools) -> None:
    """What the e2e tier sets for the image `sluice controlplane image` imports into containerd."""
    objects = render(
        tools,
        "--set=image.repository=localhost/sluice",
        "--set=image.tag=0123456789ab",
        "--set=image.pullPolicy=Never",
    )
    for name in ("sluice-operator", "sluice-proxy"):
        pod = objects["Deployment", name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "localhost/sluice:0123456789ab"
        assert container["imagePullPolicy"] == "Never"
        assert pod["securityContext"]["runAsUser"] == 65532  # the image's USER
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


KEYS_DIR = "/etc/sluice/client-keys"


def test_by_default_the_proxy_requires_client_keys_from_a_generated_secret(tools: Tools) -> None:
    objects = render(tools)

    secret = objects["Secret", "sluice-client-keys"]
    assert list(secret["data"]) == ["default"]
    assert re.fullmatch(
        r"sk-sluice-[A-Za-z0-9]{40}", base64.b64decode(secret["data"]["default"]).decode()
    )
    pod = proxy_pod(objects)
    container = pod["containers"][0]
    assert f"--client-keys={KEYS_DIR}" in container["args"]
    assert not [a for a in container["args"] if a.startswith(("--allowed-hosts", "--admin-port"))]
    assert {"name": "client-keys", "mountPath": KEYS_DIR, "readOnly": True} in container[
        "volumeMounts"
    ]  # the whole directory, no subPath: the kubelet's updates reach the proxy
    volume = next(v for v in pod["volumes"] if v["name"] == "client-keys")
    assert volume["secret"] == {"secretName": "sluice-client-keys", "defaultMode": 0o440}
    assert [p["name"] for p in container["ports"]] == ["http"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_an_existing_secret_is_mounted_and_admin_gets_a_port_nothing_exposes(
    tools: Tools,
) -> None:
    objects = render(tools, "-f", str(CHART / "ci" / "client-auth-existing-secret-values.yaml"))

    assert not [name for kind, name in objects if kind == "Secret" and "client-keys" in name]
    pod = proxy_pod(objects)
    container = pod["containers"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == "client-keys")
    assert volume["secret"]["secretName"] == "my-client-keys"
    assert f"--client-keys={KEYS_DIR}" in container["args"]
    assert "--allowed-hosts=sluice.example.com,*.llm.example.com" in container["args"]
    assert "--admin-port=9091" in container["args"]
    assert {"name": "admin", "containerPort": 9091} in container["ports"]
    service = objects["Service", "sluice-proxy"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, "http")]
    policy = objects["NetworkPolicy", "sluice-proxy"]
    opened = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert opened == [8080]


def test_with_client_auth_off_nothing_is_mounted_or_asked_for(tools: Tools) -> None:
    objects = render(tools, "-f", str(CHART / "ci" / "client-auth-disabled-values.yaml"))

    assert not [name for kind, name in objects if kind == "Secret" and "client-keys" in name]
    pod = proxy_pod(objects)
    container = pod["containers"][0]
    assert not [a for a in container["args"] if a.startswith("--client-keys")]
    # What is left: /tmp, and the token reports to the operator carry (no Secret: projected).
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "report-token"]
    assert [m["name"] for m in container["volumeMounts"]] == ["tmp", "report-token"]
    projected = pod["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]
    assert projected["audience"] == "sluice-operator"


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"admin": {"port": 9091}}, "proxy.admin.port needs proxy.admin.enabled=true"),
        (
            {"admin": {"enabled": True, "port": 8080}},
            "proxy.admin.port must differ from proxy.port",
        ),
        ({"admin": {"enabled": True, "port": 70000}}, "/proxy/admin/port"),
        ({"allowedHosts": ["a.example,b.example"]}, "/proxy/allowedHosts/0"),
        ({"clientAuth": {"existingSecrets": "x"}}, "'existingSecrets' not allowed"),
    ],
    ids=[
        "admin-port-without-admin",
        "admin-port-is-the-public-port",
        "port-range",
        "comma",
        "typo",
    ],
)
def test_a_wrong_proxy_value_is_refused(
    tools: Tools, tmp_path: Path, values: dict[str, Any], refusal: str
) -> None:
    file = tmp_path / "values.yaml"
    file.write_text(json.dumps({"proxy": values}))

    result = helm(tools, "template", "sluice", str(CHART), "-f", str(file))

    assert result.returncode != 0
    assert refusal in result.stderr


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
        "Service/sluice-operator",
        "Service/sluice-operator-metrics",
        "Service/sluice-proxy",
        "ServiceAccount/sluice-operator",
        "ServiceAccount/sluice-proxy",
    ]
    cluster_wide = get_json(
        kubectl, "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance=sluice"
    )
    assert f"{installed}-sluice-operator-tokenreview" in {
        i["metadata"]["name"] for i in cluster_wide["items"]
    }
    proxy = get_json(kubectl, "deploy", "sluice-proxy", "-n", installed)
    container = proxy["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def client_keys(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    secret = get_json(kubectl, "secret", "sluice-client-keys", "-n", namespace)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_the_generated_client_key_and_keys_added_to_it_survive_an_upgrade(
    tools: Tools, kubectl: Kubectl, installed: str, control_plane: ControlPlane
) -> None:
    generated = client_keys(kubectl, installed)
    assert re.fullmatch(r"sk-sluice-[A-Za-z0-9]{40}", generated["default"])
    added = {"stringData": {"team-a": "sk-team-a-key"}}  # as NOTES.txt says to
    kubectl("patch", "secret", "sluice-client-keys", "-n", installed, "-p", json.dumps(added))

    values = CHART / "ci" / "least-privilege-values.yaml"
    upgrade = helm(
        tools,
        "upgrade",
        "sluice",
        str(CHART),
        "-n",
        installed,
        "-f",
        str(values),
        kubeconfig=control_plane.kubeconfig,
    )

    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert client_keys(kubectl, installed) == {**generated, "team-a": "sk-team-a-key"}


def mount_secret(directory: Path, data: dict[str, str]) -> None:
    """Lay ``data`` out as the kubelet mounts a Secret, and update it as the kubelet does: a new
    timestamped directory, the ``..data`` symlink swapped to it in one rename, one symlink per
    key through ``..data``."""
    directory.mkdir(exist_ok=True)
    payload = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    payload.mkdir()
    for name, value in data.items():
        (payload / name).write_text(value)
    previous = (directory / "..data").resolve() if (directory / "..data").exists() else None
    (directory / "..data_tmp").symlink_to(payload.name)
    (directory / "..data_tmp").rename(directory / "..data")
    for entry in directory.iterdir():
        if not entry.name.startswith(".") and entry.name not in data:
            entry.unlink()
    for name in data:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    if previous is not None:
        for file in previous.iterdir():
            file.unlink()
        previous.rmdir()


def call(proxy: ProxyProcess, path: str, **headers: str) -> tuple[int, dict[str, Any], str]:
    """Status, body (JSON, or {}) and the serving upstream of one request to the proxy."""
    data = (
        json.dumps({"model": "m1", "messages": []}).encode() if path.startswith("/v1/c") else None
    )
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"{proxy.base}{path}", data=data, headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            status, body, served = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        status, body, served = e.code, e.read(), e.headers
    try:
        parsed = json.loads(body) if path.startswith("/v1") else {}
    except ValueError:
        parsed = {}
    return status, parsed, str(served.get("x-sluice-upstream", ""))


def logged_clients(proxy: ProxyProcess) -> set[str]:
    """The ``client`` of every access log line so far."""
    clients = set()
    for line in proxy.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "client" in record:
            clients.add(str(record["client"]))
    return clients


def serving(proxy: ProxyProcess) -> bool:
    """Whether the proxy answers; an AssertionError with its log if it has exited."""
    if proxy.process.poll() is not None:
        raise AssertionError(f"the proxy exited:\n{proxy.log()[-3000:]}")
    return proxy.ready()


def test_the_proxy_asks_for_the_keys_in_the_charts_secret_mounted_as_the_kubelet_does(
    kubectl: Kubectl, installed: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace = installed
    fake = ThreadedFake("primary")
    fake.start()
    kubectl("apply", "-f", "-", input=upstream(namespace, fake))
    mounted = tmp_path / "client-keys"
    mount_secret(mounted, {**client_keys(kubectl, namespace), "team-a": "sk-team-a-key"})
    key = client_keys(kubectl, namespace)["default"]
    as_proxy = control_plane.service_account_kubeconfig(
        namespace, "sluice-proxy", tmp_path / "proxy.kubeconfig"
    )
    proxy = ProxyProcess(as_proxy, namespace, tmp_path / "proxy.log", "--client-keys", str(mounted))
    chat = "/v1/chat/completions"
    try:
        eventually(
            lambda: serving(proxy), timeout=30, what="the proxy serving as its ServiceAccount"
        )
        eventually(
            lambda: call(proxy, chat, Authorization=f"Bearer {key}")[2] == "primary",
            timeout=20,
            what="a request with the generated key served",
        )

        status, body, _ = call(proxy, chat)
        assert (status, body["error"]["type"]) == (401, "invalid_api_key")
        status, body, _ = call(proxy, chat, Authorization="Bearer sk-not-a-client")
        assert (status, body["error"]["type"]) == (401, "invalid_api_key")
        assert call(proxy, chat, **{"x-api-key": "sk-team-a-key"})[:1] == (200,)
        for path in ("/healthz", "/readyz", "/metrics"):  # the probes and Prometheus: no key
            assert call(proxy, path)[0] == 200, path
        seen_before = len(fake.seen())
        assert call(proxy, chat)[0] == 401
        assert len(fake.seen()) == seen_before  # refused before any upstream is called

        # A rotation, as the kubelet applies an edited Secret: no restart.
        mount_secret(mounted, {"default": key, "team-b": "sk-team-b-key"})
        eventually(
            lambda: call(proxy, chat, **{"x-api-key": "sk-team-b-key"})[0] == 200,
            timeout=15,
            what="the added key accepted",
        )
        eventually(
            lambda: call(proxy, chat, **{"x-api-key": "sk-team-a-key"})[0] == 401,
            timeout=15,
            what="the removed key refused",
        )

        eventually(  # the access log is flushed every half second
            lambda: {"default", "team-a", "team-b"} <= logged_clients(proxy),
            timeout=5,
            what="each client's data key name in the access log",
        )
        assert "Forbidden" not in proxy.log()
        assert key not in proxy.log()
    finally:
        proxy.stop()
        fake.close()


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
    # Reports: the proxy proves who it is with a token for the operator's audience (the
    # chart projects one), and the operator checks it with a TokenReview.
    token = tmp_path / "report-token"
    token.write_text(
        control_plane.service_account_token(
            namespace, "sluice-proxy", audiences=["sluice-operator"]
        )
    )
    port = free_port()
    operator = OperatorProcess(
        as_operator,
        namespace,
        tmp_path / "operator.log",
        f"--report-port={port}",
        f"--report-address=127.0.0.1:{port}",
        f"--report-user=system:serviceaccount:{namespace}:sluice-proxy",
    )
    proxy = ProxyProcess(
        as_proxy,
        namespace,
        tmp_path / "proxy.log",
        f"--report-to=http://127.0.0.1:{port}",
        f"--report-token-file={token}",
    )
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
        # The proxy reports, and the operator reviews its token, as their ServiceAccounts.
        eventually(
            lambda: operator.metric("sluice_operator_reports_total", result="accepted") > 0,
            timeout=15,
            what="a report taken (TokenReview as the operator's ServiceAccount)",
        )

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
        (
            "sluice-proxy",
            ["get", "secret", "sluice-client-keys"],
            'cannot get resource "secrets"',
        ),  # a volume, not an API read: the proxy's RBAC does not grow for it
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
        "proxy-reads-client-keys",
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


@pytest.mark.parametrize(
    ("account", "answer"), [("sluice-operator", "yes"), ("sluice-proxy", "no")]
)
def test_only_the_operator_may_review_tokens(
    kubectl: Kubectl,
    installed: str,
    control_plane: ControlPlane,
    tmp_path: Path,
    account: str,
    answer: str,
) -> None:
    as_account = control_plane.service_account_kubeconfig(installed, account, tmp_path / "kc")
    result = kubectl("auth", "can-i", "create", "tokenreviews", kubeconfig=as_account, check=False)
    assert result.stdout.strip() == answer
