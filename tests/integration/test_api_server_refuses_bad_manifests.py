"""Bad manifests are refused by the API server itself, with a message that names the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Kubectl

UPSTREAM = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "Upstream",
    "metadata": {"name": "bad"},
    "spec": {"provider": "openai", "baseURL": "http://127.0.0.1:9/v1", "models": [{"name": "m"}]},
}
POLICY = {"apiVersion": "sluice.dev/v1alpha1", "kind": "BreakerPolicy", "metadata": {"name": "bad"}}
ROUTE = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "ModelRoute",
    "metadata": {"name": "bad"},
    "spec": {"models": ["m1"], "targets": [{"upstream": "a"}]},
}


def upstream(**spec: object) -> dict[str, object]:
    return {**UPSTREAM, "spec": {**UPSTREAM["spec"], **spec}}  # type: ignore[dict-item]


def policy(**spec: object) -> dict[str, object]:
    return {**POLICY, "spec": spec}


def route(**spec: object) -> dict[str, object]:
    return {**ROUTE, "spec": {**ROUTE["spec"], **spec}}  # type: ignore[dict-item]


def without(manifest: dict[str, object], field: str) -> dict[str, object]:
    spec = dict(manifest["spec"])  # type: ignore[call-overload]
    del spec[field]
    return {**manifest, "spec": spec}


CASES = [
    ("upstream without provider", without(UPSTREAM, "provider"), "spec.provider: Required value"),
    (
        "apiVersion on a provider that is not Azure",
        upstream(apiVersion="2024-10-21"),
        "spec.apiVersion: Forbidden: apiVersion is Azure OpenAI's api-version",
    ),
    (
        "forwardHeaders naming a credential",
        upstream(forwardHeaders=["openai-beta", "Authorization"]),
        'spec.forwardHeaders: Invalid value: "array": forwardHeaders cannot name credentials',
    ),
    (
        "forwardHeaders prefix covering a credential",
        upstream(forwardHeaders=["x-*"]),
        'spec.forwardHeaders: Invalid value: "array": forwardHeaders cannot name credentials',
    ),
    (
        "unknown provider",
        upstream(provider="cohere"),
        'spec.provider: Unsupported value: "cohere": supported values: "openai", "anthropic", '
        '"azure-openai", "openai-compatible"',
    ),
    (
        "baseURL not http(s)",
        upstream(baseURL="ftp://example"),
        'spec.baseURL: Invalid value: "ftp://example": spec.baseURL in body should match',
    ),
    (
        "no models",
        upstream(models=[]),
        "spec.models: Invalid value: 0: spec.models in body should have at least 1 items",
    ),
    (
        "a model listed twice",
        upstream(models=[{"name": "m"}, {"name": "m"}]),
        "spec.models[1]: Duplicate value",
    ),
    (
        "negative cost",
        upstream(models=[{"name": "m", "cost": {"inputPer1M": -1}}]),
        "spec.models[0].cost.inputPer1M: Invalid value: -1: "
        "spec.models[0].cost.inputPer1M in body should be greater than or equal to 0",
    ),
    (
        "override HalfOpen",
        upstream(breaker={"override": "HalfOpen"}),
        'spec.breaker.override: Unsupported value: "HalfOpen": supported values: "Open", "Closed"',
    ),
    (
        "probe timeout longer than interval",
        upstream(probe={"interval": "1s", "timeout": "5s"}),
        'spec.probe.timeout: Invalid value: "object": probe timeout must not be longer than '
        "the interval",
    ),
    (
        "duration without unit",
        upstream(probe={"interval": "10"}),
        'spec.probe.interval: Invalid value: "10": spec.probe.interval in body should match',
    ),
    (
        "duration as a number",
        upstream(probe={"interval": 10}),
        'spec.probe.interval: Invalid value: "integer": spec.probe.interval in body must be of '
        'type string: "integer"',
    ),
    ("misspelt field", upstream(wieght=5), 'unknown field "spec.wieght"'),
    (
        "secretRef without a name",
        upstream(credentials={"secretRef": {"key": "k"}}),
        "spec.credentials.secretRef.name: Required value",
    ),
    (
        "weight out of range",
        upstream(weight=100_000),
        "spec.weight: Invalid value: 100000: spec.weight in body should be less than or equal "
        "to 10000",
    ),
    (
        "successThreshold above maxRequests",
        policy(halfOpen={"maxRequests": 1, "successThreshold": 2}),
        'spec.halfOpen.successThreshold: Invalid value: "object": successThreshold must be at '
        "most maxRequests",
    ),
    (
        "maxOpenDuration below openDuration",
        policy(openDuration="10m", maxOpenDuration="1m"),
        'spec.maxOpenDuration: Invalid value: "object": maxOpenDuration must not be shorter '
        "than openDuration",
    ),
    (
        "failure rate over 100%",
        policy(failureRate={"threshold": 120}),
        "spec.failureRate.threshold: Invalid value: 120: spec.failureRate.threshold in body "
        "should be less than or equal to 100",
    ),
    (
        "status out of range",
        policy(failureStatuses=["5xx", 700]),
        'spec.failureStatuses: Invalid value: "array": each entry must be an HTTP status '
        "number like 503 or a class like 5xx",
    ),
    (
        "unknown status class",
        policy(failureStatuses=["6xx"]),
        "each entry must be an HTTP status number like 503 or a class like 5xx",
    ),
    (
        "429 as failure and rate limit",
        policy(failureStatuses=["5xx", 429]),
        'spec.failureStatuses: Invalid value: "object": a status cannot be both a failure and '
        "a rate limit",
    ),
    (
        "jitter above 1",
        policy(jitter=2),
        "spec.jitter: Invalid value: 2: spec.jitter in body should be less than or equal to 1",
    ),
    (
        "unknown growth",
        policy(growth="Quadratic"),
        'spec.growth: Unsupported value: "Quadratic": supported values: "Exponential", '
        '"Linear", "None"',
    ),
    (
        "negative consecutive failures",
        policy(consecutiveFailures=-1),
        "spec.consecutiveFailures: Invalid value: -1: spec.consecutiveFailures in body should "
        "be greater than or equal to 0",
    ),
    (
        "target with upstream and selector",
        route(targets=[{"upstream": "a", "upstreamSelector": {"matchLabels": {"team": "a"}}}]),
        'spec.targets[0]: Invalid value: "object": set exactly one of upstream or upstreamSelector',
    ),
    (
        "target with neither",
        route(targets=[{"model": "x"}]),
        'spec.targets[0]: Invalid value: "object": set exactly one of upstream or upstreamSelector',
    ),
    (
        "fallback to itself",
        route(fallbackModels=["m1"]),
        'spec.fallbackModels: Invalid value: "object": fallbackModels must not name the '
        "route's own models (a cycle)",
    ),
    (
        "unknown strategy",
        route(strategy="Random"),
        'spec.strategy: Unsupported value: "Random": supported values: "Priority", "Weighted", '
        '"RoundRobin", "LeastLatency", "Cheapest", "LeastBusy"',
    ),
    (
        "zero attempts",
        route(retry={"maxAttempts": 0}),
        "spec.retry.maxAttempts: Invalid value: 0: spec.retry.maxAttempts in body should be "
        "greater than or equal to 1",
    ),
    (
        "no targets",
        route(targets=[]),
        "spec.targets: Invalid value: 0: spec.targets in body should have at least 1 items",
    ),
]


@pytest.mark.parametrize(
    ("manifest", "message"), [(m, msg) for _, m, msg in CASES], ids=[c[0] for c in CASES]
)
def test_the_api_server_refuses_it_naming_the_field(
    kubectl: Kubectl, sluice_crds: Path, namespace: str, manifest: dict[str, object], message: str
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)

    assert result.returncode != 0, f"accepted: {manifest}"
    assert message in result.stderr


def test_the_examples_are_accepted_and_defaulted(
    kubectl: Kubectl, sluice_crds: Path, namespace: str
) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "upstreams.yaml"

    kubectl("apply", "-n", namespace, "-f", str(examples))

    policy = json.loads(kubectl("get", "bp", "fast", "-n", namespace, "-o", "json").stdout)
    assert policy["spec"]["failureRate"] == {
        "threshold": 50,
        "minimumRequests": 10,
        "window": "60s",
    }
    assert policy["spec"]["failureStatuses"] == ["5xx", 408]
    primary = json.loads(
        kubectl("get", "upstream", "primary", "-n", namespace, "-o", "json").stdout
    )
    assert primary["spec"]["timeouts"] == {
        "connect": "5s",
        "firstToken": "60s",
        "total": "10m",
        "streamIdle": "60s",
    }
    assert primary["spec"]["models"][0]["cost"] == {"inputPer1M": 2.5, "outputPer1M": 10}
    route = yaml.safe_load(kubectl("get", "mr", "m1", "-n", namespace, "-o", "yaml").stdout)
    assert route["spec"]["whenAllOpen"] == "FailFast"


def test_kubectl_get_shows_the_breaker_and_usage_columns(
    kubectl: Kubectl, sluice_crds: Path, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(upstream()))

    header = kubectl("get", "ups", "-n", namespace).stdout.splitlines()[0].split()
    wide = kubectl("get", "upstreams", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()

    assert header == ["NAME", "STATE", "FAILURES", "AVAILABILITY", "P95", "RPM", "TPM", "AGE"]
    assert wide[len(header) :] == ["PROVIDER", "URL", "FORCED", "REASON"]
