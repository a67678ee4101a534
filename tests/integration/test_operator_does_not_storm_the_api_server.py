"""1,000 healthy Upstreams probed every 10 s must not turn into a stream of status writes.

Bounded: 1,000 objects, one minute of measurement, all on loopback. The figure is printed
(``-s`` or the junit report shows it) and goes into the notes; the assertion is a ceiling far
below one write per upstream per minute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.devcluster.cluster import ControlPlane
from tests.integration.conftest import Kubectl
from tests.integration.harness import OperatorProcess, ThreadedFake, eventually

COUNT = 1000
MEASURE_SECONDS = 60.0


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    upstream = ThreadedFake("shared")
    upstream.start()
    yield upstream
    upstream.close()


def upstreams(namespace: str, base_url: str) -> str:
    items = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": f"u{i:04d}", "namespace": namespace},
            "spec": {
                "provider": "openai-compatible",
                "baseURL": base_url,
                "models": [{"name": "m1"}],
                "probe": {"interval": "10s", "timeout": "5s"},
            },
        }
        for i in range(COUNT)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def status_resource_versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    listed = json.loads(kubectl("get", "upstreams", "-n", namespace, "-o", "json").stdout)
    return {
        item["metadata"]["name"]: item["metadata"]["resourceVersion"]
        for item in listed["items"]
        if (item.get("status") or {}).get("health", {}).get("availability") is not None
    }


@pytest.mark.timeout(420)
def test_a_thousand_healthy_upstreams_cause_almost_no_status_writes(
    kubectl: Kubectl,
    namespace: str,
    fake: ThreadedFake,
    control_plane: ControlPlane,
    sluice_crds: Path,
    tmp_path: Path,
) -> None:
    kubectl("create", "-f", "-", input=upstreams(namespace, fake.base_url))
    operator = OperatorProcess(control_plane.kubeconfig, namespace, tmp_path / "operator.log")

    def writes() -> float:
        return operator.metric("sluice_operator_status_writes_total", namespace=namespace)

    try:
        eventually(
            lambda: operator.metric("sluice_operator_upstreams") == COUNT,
            timeout=60,
            interval=1,
            what=f"{COUNT} upstreams managed",
        )
        # Every upstream has probed and written its first figures (first probes are spread
        # over one 10 s interval).
        eventually(
            lambda: len(status_resource_versions(kubectl, namespace)) == COUNT,
            timeout=90,
            interval=2,
            what="first health figures for every upstream",
        )
        time.sleep(5)  # let the last start-up writes land
        # Each snapshot of the objects is bracketed by reads of the write counter, so the
        # counter and the API server can be compared exactly.
        w0 = writes()
        probes_before = operator.metric("sluice_probes_total")
        versions_before = status_resource_versions(kubectl, namespace)
        w1 = writes()

        time.sleep(MEASURE_SECONDS)

        w2 = writes()
        probes = operator.metric("sluice_probes_total") - probes_before
        failed = operator.metric("sluice_probes_total", result="failure")
        versions_after = status_resource_versions(kubectl, namespace)
        w3 = writes()
        changed = sum(versions_after[n] != v for n, v in versions_before.items())
    finally:
        operator.stop()

    print(  # the measured figure, for the notes
        f"\n{COUNT} healthy upstreams, 10 s probes, {MEASURE_SECONDS:.0f} s: {changed} objects "
        f"written (counter: {w2 - w1:.0f} to {w3 - w0:.0f}), {probes:.0f} probes, {failed:.0f} failed"
    )
    assert probes > COUNT * 4, "the probes must actually have run during the minute"
    assert w2 - w1 <= changed <= w3 - w0, "the counter and the API server disagree"
    # Healthy upstreams change no state: only health refreshes, within the shared budget of
    # one a second plus its burst of 10.
    assert changed <= 70, f"{changed} status writes in a minute is a write storm"
