"""The integration tier: a real kube-apiserver and etcd on loopback, shared by the session.

The binaries must already be there (``scripts/test.sh`` runs ``sluice controlplane build``
first, or ``KUBEBUILDER_ASSETS`` points at them); if they are not, every test here fails with a
message that says how to get them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sluice.devcluster import AssetsError, Tools, find_binaries, find_tools
from sluice.devcluster.cluster import ControlPlane
from tests.integration.harness import ThreadedFake

pytestmark = pytest.mark.integration

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tools() -> Tools:
    found = find_tools()
    if found is None:
        pytest.fail(
            "helm and kubectl are not in Sluice's cache: run `sluice controlplane build` "
            "(scripts/test.sh does) to fetch them",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    try:
        binaries = find_binaries()
    except AssetsError as e:
        pytest.fail(str(e), pytrace=False)
    if binaries is None:
        pytest.fail(
            "etcd and kube-apiserver are not built: run `sluice controlplane build` "
            "(scripts/test.sh does) or set KUBEBUILDER_ASSETS",
            pytrace=False,
        )
    with ControlPlane.start(binaries) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane, tools: Tools) -> Kubectl:
    """Run kubectl as the cluster admin; ``check=False`` to inspect a refusal."""

    def run(
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or control_plane.kubeconfig)}
        result = subprocess.run(
            [str(tools.kubectl), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr}", pytrace=False)
        return result

    return run


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sluice_crds(kubectl: Kubectl) -> Path:
    """Sluice's CRDs, applied with kubectl from crds/ and ready to use."""
    crds = REPO / "crds"
    kubectl("apply", "-f", str(crds))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=sluice",
    )
    deadline = time.monotonic() + 30
    while kubectl("get", "sluice", "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, "Sluice's kinds never became discoverable"
        time.sleep(0.2)
    return crds


@pytest.fixture
def fakes() -> Iterator[dict[str, ThreadedFake]]:
    """Two fake upstreams, primary and secondary, each on its own thread and port."""
    started = {name: ThreadedFake(name) for name in ("primary", "secondary")}
    for fake in started.values():
        fake.start()
    yield started
    for fake in started.values():
        fake.close()


_namespaces = itertools.count()


@pytest.fixture
def namespace(kubectl: Kubectl) -> str:
    """A fresh namespace per test, so tests sharing the control plane do not see each other."""
    name = f"test-{os.getpid()}-{next(_namespaces)}"
    kubectl("create", "namespace", name)
    return name
