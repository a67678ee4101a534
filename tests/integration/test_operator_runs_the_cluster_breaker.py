"""The operator against a real API server: kubectl apply, probes, status, Events, overrides."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.devcluster.cluster import ControlPlane
from tests.integration.conftest import Kubectl
from tests.integration.harness import (
    OperatorProcess,
    ThreadedFake,
    eventually,
    get_json,
    set_override,
)

API_KEY = "sk-sluice-test-0123456789abcdefghij"  # a fake key that must never leak


def manifests(namespace: str, base_url: str, *, open_duration: str = "2s") -> str:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "BreakerPolicy",
            "metadata": {"name": "fast", "namespace": namespace},
            "spec": {
                "consecutiveFailures": 3,
                "openDuration": open_duration,
                "jitter": 0,
                "halfOpen": {"maxRequests": 1, "successThreshold": 1},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "primary-key", "namespace": namespace},
            "stringData": {"apiKey": API_KEY},
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": "primary", "namespace": namespace},
            "spec": {
                "provider": "openai-compatible",
                "baseURL": base_url,
                "credentials": {"secretRef": {"name": "primary-key", "key": "apiKey"}},
                "models": [{"name": "m1", "cost": {"inputPer1M": 2.5, "outputPer1M": 10}}],
                "probe": {"interval": "500ms", "timeout": "500ms"},
                "breaker": {"policyRef": {"name": "fast"}},
            },
        },
    ]
    return "\n---\n".join(json.dumps(d) for d in documents)


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    upstream = ThreadedFake("primary")
    upstream.start()
    yield upstream
    upstream.close()


@pytest.fixture
def operator(
    control_plane: ControlPlane, sluice_crds: Path, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(control_plane.kubeconfig, namespace, tmp_path / "operator.log")
    yield process
    process.stop()


def breaker(kubectl: Kubectl, namespace: str, name: str = "primary") -> dict[str, Any]:
    status = get_json(kubectl, "upstream", name, "-n", namespace).get("status") or {}
    return dict(status.get("breaker") or {})


def condition(kubectl: Kubectl, namespace: str, kind: str) -> dict[str, Any]:
    status = get_json(kubectl, "upstream", "primary", "-n", namespace).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def event_reasons(kubectl: Kubectl, namespace: str) -> list[str]:
    events = get_json(
        kubectl, "events", "-n", namespace, "--field-selector", "involvedObject.name=primary"
    )["items"]
    # creationTimestamp has second precision; the operator posts Events one after another, so
    # against one etcd the resourceVersion orders them.
    return [
        e["reason"] for e in sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))
    ]


def test_an_upstream_goes_closed_open_half_open_closed_with_events(
    kubectl: Kubectl, namespace: str, fake: ThreadedFake, operator: OperatorProcess
) -> None:
    kubectl("apply", "-f", "-", input=manifests(namespace, fake.base_url))

    eventually(
        lambda: (
            breaker(kubectl, namespace).get("state") == "Closed"
            and condition(kubectl, namespace, "Ready").get("status") == "True"
        ),
        timeout=20,
        what="Closed and Ready",
    )
    assert breaker(kubectl, namespace)["policy"] == "fast"

    fake.stop()  # connection refused from now on
    # 3 failed probes at 500 ms: about 1.5 s; allow for a loaded CI machine.
    eventually(
        lambda: breaker(kubectl, namespace).get("state") == "Open",
        timeout=10,
        what="Open after the upstream stopped",
    )
    opened = breaker(kubectl, namespace)
    assert opened["reason"] == "ProbeFailures"
    assert opened["message"].startswith("3 consecutive failed probes, last: connection refused")
    assert condition(kubectl, namespace, "Available")["status"] == "False"

    fake.start()
    eventually(
        lambda: breaker(kubectl, namespace).get("state") == "Closed",
        timeout=20,
        what="Closed again after the upstream came back",
    )
    assert breaker(kubectl, namespace)["reason"] == "TrialSucceeded"

    reasons = eventually(
        lambda: (r := event_reasons(kubectl, namespace)) and "TrialSucceeded" in r and r,
        timeout=10,
        what="an Event for every transition",
    )
    assert reasons[0] == "ProbeFailures"
    assert "OpenElapsed" in reasons  # Open -> HalfOpen
    assert reasons[-1] == "TrialSucceeded"
    described = kubectl("describe", "upstream", "primary", "-n", namespace).stdout
    assert "Closed -> Open: 3 consecutive failed probes" in described
    assert "HalfOpen -> Closed: 1 probe succeeded; closed" in described


def test_an_override_forces_the_state_at_once_and_lifting_it_restores_automatic(
    kubectl: Kubectl, namespace: str, fake: ThreadedFake, operator: OperatorProcess
) -> None:
    kubectl("apply", "-f", "-", input=manifests(namespace, fake.base_url))
    eventually(
        lambda: breaker(kubectl, namespace).get("state") == "Closed", timeout=20, what="Closed"
    )

    set_override(kubectl, namespace, "primary", "Open")

    forced = eventually(
        lambda: (b := breaker(kubectl, namespace)).get("state") == "Open" and b,
        timeout=2,
        what="Open and forced within two seconds",
    )
    assert forced["forced"] is True
    assert forced["reason"] == "ForcedOpen"
    assert forced["automaticState"] == "Closed"

    set_override(kubectl, namespace, "primary", None)

    lifted = eventually(
        lambda: (b := breaker(kubectl, namespace)).get("forced") is False and b,
        timeout=2,
        what="override lifted",
    )
    assert lifted["state"] == "Closed"
    assert lifted["reason"] == "OverrideLifted"
    assert lifted.get("automaticState") is None


def test_the_reset_annotation_resets_once(
    kubectl: Kubectl, namespace: str, fake: ThreadedFake, operator: OperatorProcess
) -> None:
    kubectl("apply", "-f", "-", input=manifests(namespace, fake.base_url, open_duration="5m"))
    eventually(
        lambda: breaker(kubectl, namespace).get("state") == "Closed", timeout=20, what="Closed"
    )
    fake.stop()
    eventually(lambda: breaker(kubectl, namespace).get("state") == "Open", timeout=10, what="Open")
    fake.start()

    kubectl("annotate", "upstream", "primary", "-n", namespace, "sluice.dev/reset=first")

    reset = eventually(
        lambda: (b := breaker(kubectl, namespace)).get("reason") == "Reset" and b,
        timeout=5,
        what="reset by annotation",
    )
    assert reset["state"] == "Closed"
    assert reset["lastReset"] == "first"
    assert reset["tripCount"] == 0
    assert event_reasons(kubectl, namespace).count("Reset") == 1


def test_open_stays_open_across_an_operator_restart(
    kubectl: Kubectl,
    namespace: str,
    fake: ThreadedFake,
    control_plane: ControlPlane,
    sluice_crds: Path,
    tmp_path: Path,
) -> None:
    kubectl("apply", "-f", "-", input=manifests(namespace, fake.base_url, open_duration="5m"))
    first = OperatorProcess(control_plane.kubeconfig, namespace, tmp_path / "first.log")
    try:
        eventually(
            lambda: breaker(kubectl, namespace).get("state") == "Closed", timeout=20, what="Closed"
        )
        fake.stop()
        before = eventually(
            lambda: (b := breaker(kubectl, namespace)).get("state") == "Open" and b,
            timeout=10,
            what="Open",
        )
    finally:
        assert first.stop() == 0
    fake.start()  # healthy again, but the open period has minutes to run

    second = OperatorProcess(control_plane.kubeconfig, namespace, tmp_path / "second.log")
    try:
        eventually(
            lambda: second.metric("sluice_probes_total") > 3,
            timeout=20,
            what="the new operator probing",
        )
        after = breaker(kubectl, namespace)
    finally:
        second.stop()

    assert after["state"] == "Open"
    assert after["openUntil"] == before["openUntil"]
    assert after["tripCount"] == before["tripCount"]


def test_a_missing_policy_makes_it_not_ready_until_the_policy_exists(
    kubectl: Kubectl, namespace: str, fake: ThreadedFake, operator: OperatorProcess
) -> None:
    documents = manifests(namespace, fake.base_url).split("\n---\n")
    kubectl("apply", "-f", "-", input="\n---\n".join(documents[1:]))  # no BreakerPolicy "fast"

    ready = eventually(
        lambda: (c := condition(kubectl, namespace, "Ready")).get("status") == "False" and c,
        timeout=20,
        what="Ready=False",
    )
    assert ready["reason"] == "PolicyNotFound"
    assert ready["message"] == 'BreakerPolicy "fast" not found; keeping (built-in defaults)'

    kubectl("apply", "-f", "-", input=documents[0])

    eventually(
        lambda: (
            condition(kubectl, namespace, "Ready").get("status") == "True"
            and breaker(kubectl, namespace).get("policy") == "fast"
        ),
        timeout=10,
        what="Ready with the policy once it exists",
    )


def test_the_api_key_is_sent_upstream_and_appears_nowhere_else(
    kubectl: Kubectl, namespace: str, fake: ThreadedFake, operator: OperatorProcess
) -> None:
    kubectl("apply", "-f", "-", input=manifests(namespace, fake.base_url))
    eventually(
        lambda: breaker(kubectl, namespace).get("state") == "Closed", timeout=20, what="Closed"
    )
    fake.stop()  # make transitions, so Events and messages exist
    eventually(lambda: breaker(kubectl, namespace).get("state") == "Open", timeout=10, what="Open")
    fake.start()
    eventually(
        lambda: breaker(kubectl, namespace).get("state") == "Closed", timeout=20, what="Closed"
    )

    probes = [r for r in fake.seen() if r.path == "/v1/models"]
    assert probes
    assert probes[-1].headers["authorization"] == f"Bearer {API_KEY}"
    places = {
        "status": kubectl("get", "upstream", "primary", "-n", namespace, "-o", "json").stdout,
        "events": kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "describe": kubectl("describe", "upstream", "primary", "-n", namespace).stdout,
        "operator log": operator.log(),
        "metrics": operator.metrics(),
    }
    for place, text in places.items():
        assert API_KEY not in text, f"the API key leaked into the {place}"
        assert API_KEY[3:15] not in text, f"part of the API key leaked into the {place}"


def test_two_replicas_never_both_probe_and_the_standby_takes_over(
    kubectl: Kubectl,
    namespace: str,
    fake: ThreadedFake,
    control_plane: ControlPlane,
    sluice_crds: Path,
    tmp_path: Path,
) -> None:
    kubectl("apply", "-f", "-", input=manifests(namespace, fake.base_url))
    a = OperatorProcess(control_plane.kubeconfig, namespace, tmp_path / "a.log", identity="a")
    eventually(lambda: a.metric("sluice_operator_leader") == 1, timeout=20, what="a leads")
    b = OperatorProcess(control_plane.kubeconfig, namespace, tmp_path / "b.log", identity="b")
    try:
        eventually(lambda: a.metric("sluice_probes_total") > 5, timeout=20, what="a probing")
        eventually(b.serving, timeout=20, what="b up")
        seen_before = len(fake.seen())
        # Both run for a while: only the leader works.
        eventually(lambda: len(fake.seen()) > seen_before + 6, timeout=20, what="more probes")
        assert b.metric("sluice_operator_leader") == 0
        assert b.metric("sluice_probes_total") == 0
        lease = get_json(kubectl, "lease", "sluice-operator", "-n", namespace)
        assert lease["spec"]["holderIdentity"] == "a"

        a.stop(signal.SIGKILL)  # no release: b must wait for the lease to expire (3 s)

        eventually(lambda: b.metric("sluice_operator_leader") == 1, timeout=20, what="b leads")
        eventually(lambda: b.metric("sluice_probes_total") > 3, timeout=20, what="b probing")
        lease = get_json(kubectl, "lease", "sluice-operator", "-n", namespace)
        assert lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 1  # created by a (0), taken over by b
    finally:
        a.stop()
        b.stop()
