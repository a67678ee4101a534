"""The end-to-end tier: a real one-node cluster (kubelet on containerd and runc, kube-proxy,
CoreDNS, the controllers), Sluice's image built here and loaded into it, the Helm chart
installed, and its pods doing their job.

Everything must already be built (``scripts/test.sh`` runs ``sluice controlplane build --node``
and ``sluice controlplane image``). If something is missing, or the host cannot run a node (not
root, no cgroups, no containerd), every test here fails with a message that says what is
missing; none is skipped.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from sluice.devcluster import AssetsError, Tools, find_binaries, find_tools
from sluice.devcluster.cluster import ControlPlaneError
from sluice.devcluster.image import ImageError, ensure_image
from sluice.devcluster.node import NodeCluster, NodeError
from sluice.devcluster.nodeassets import find_node_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sluice"
Run = Callable[..., subprocess.CompletedProcess[str]]
_CLUSTER: list[NodeCluster] = []  # for the diagnostics of a failed test


def _fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def tools() -> Tools:
    found = find_tools()
    if found is None:
        _fail(
            "helm and kubectl are not cached: run `sluice controlplane build` (scripts/test.sh does)"
        )
    assert found is not None
    return found


@pytest.fixture(scope="session")
def node() -> Iterator[NodeCluster]:
    """The one-node cluster, for the whole session (about 15 s to start)."""
    try:
        control, binaries = find_binaries(), find_node_binaries()
    except AssetsError as e:
        _fail(str(e))
    if control is None or binaries is None:
        _fail(
            "the node's binaries are not built: run `sluice controlplane build --node` "
            "(scripts/test.sh does), or set SLUICE_NODE_ASSETS and KUBEBUILDER_ASSETS"
        )
    assert control is not None
    assert binaries is not None
    try:
        cluster = NodeCluster.start(control, binaries, log=lambda m: print(m, flush=True))
    except (NodeError, ControlPlaneError) as e:
        _fail(f"the e2e tier cannot run: {e}")
    _CLUSTER.append(cluster)
    yield cluster
    _CLUSTER.clear()
    cluster.stop()


@pytest.fixture(scope="session")
def image(node: NodeCluster) -> str:
    """Sluice's image of this checkout, from the cache, imported into the node."""
    try:
        built = ensure_image(log=lambda m: print(m, flush=True))
    except ImageError as e:
        _fail(f"Sluice's image cannot be built here: {e}")
    node.import_image(built.archive)
    return str(built.reference)


def image_values(reference: str) -> list[str]:
    """helm flags that run the locally loaded image and never try to pull it."""
    repository, _, tag = reference.rpartition(":")
    return [
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
    ]


@pytest.fixture(scope="session")
def kubectl(node: NodeCluster, tools: Tools) -> Run:
    """kubectl as the cluster admin; ``check=False`` to look at a failure."""

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(node.kubeconfig)}
        result = subprocess.run(
            [str(tools.kubectl), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            _fail(f"kubectl {' '.join(args)} failed: {result.stderr}{result.stdout[-2000:]}")
        return result

    return run


@pytest.fixture(scope="session")
def helm(node: NodeCluster, tools: Tools) -> Run:
    """helm with its own state in a temp dir, against the node's cluster."""
    home = Path(tempfile.mkdtemp(prefix="sluice-e2e-helm-"))

    def run(
        *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(node.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        result = subprocess.run(
            [str(tools.helm), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            _fail(f"helm {' '.join(args)} failed: {result.stderr}{result.stdout[-2000:]}")
        return result

    return run


def diagnostics(cluster: NodeCluster, kubectl_path: Path) -> str:
    """What a person needs to see why pods did not come up: pods, their descriptions, their
    logs, the Events, and the kubelet's and containerd's last lines."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

    def run(*args: str) -> str:
        try:
            result = subprocess.run(
                [str(kubectl_path), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"(kubectl {' '.join(args)} timed out)"
        return (result.stdout + result.stderr)[-6000:]

    sections = [
        ("pods", run("get", "pods", "-A", "-o", "wide")),
        ("describe pods", run("describe", "pods", "-A")),
        *(
            (
                f"logs in {ns}",
                run(
                    "logs",
                    "-n",
                    ns,
                    "-l",
                    "app.kubernetes.io/name",
                    "--all-containers",
                    "--tail=30",
                    "--prefix",
                ),
            )
            for ns in sorted(
                set(run("get", "pods", "-A", "-o", "jsonpath={..metadata.namespace}").split())
            )
        ),
        ("events", run("get", "events", "-A", "--sort-by=.lastTimestamp")),
        ("kubelet", cluster.logs("kubelet")),
        ("containerd", cluster.logs("containerd", 20)),
    ]
    return "\n".join(f"----- {title} -----\n{text}" for title, text in sections)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    tools = find_tools()
    if report.failed and _CLUSTER and tools is not None and call.when in ("setup", "call"):
        report.sections.append(("e2e diagnostics", diagnostics(_CLUSTER[0], tools.kubectl)))
    return report
