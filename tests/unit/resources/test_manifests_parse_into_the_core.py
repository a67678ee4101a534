"""Manifests parse into typed resources, and policies into the breaker core's policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from sluice.core import FailureRate, Growth, PolicyError
from sluice.resources import BreakerPolicy, BreakerPolicySpec, ModelRoute, Upstream, parse

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "upstreams.yaml"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLES.read_text()) if d["apiVersion"] != "v1"]


def test_the_examples_parse() -> None:
    parsed = [parse(d) for d in documents()]

    assert [type(p) for p in parsed] == [BreakerPolicy, Upstream, Upstream, ModelRoute]
    primary = parsed[1]
    assert isinstance(primary, Upstream)
    assert primary.spec.base_url == "http://127.0.0.1:18101/v1"
    assert primary.spec.credentials is not None
    assert primary.spec.credentials.secret_ref.key == "apiKey"
    assert primary.spec.breaker.policy_ref is not None
    assert primary.spec.breaker.policy_ref.name == "fast"


def test_a_policy_becomes_the_core_policy() -> None:
    fast = parse(documents()[0])
    assert isinstance(fast, BreakerPolicy)

    core = fast.spec.to_core()

    assert core.consecutive_failures == 3
    assert core.open_duration == 2.0
    assert core.max_open_duration == 300.0
    assert core.failure_rate == FailureRate(threshold=50, minimum_requests=10, window=60)
    assert core.growth is Growth.EXPONENTIAL
    assert 503 in core.failure_statuses
    assert 408 in core.failure_statuses


def test_zero_turns_a_trigger_off() -> None:
    spec = BreakerPolicySpec.model_validate(
        {"consecutiveFailures": 0, "probeFailures": 0, "failureRate": {"threshold": 0}}
    )

    core = spec.to_core()

    assert core.consecutive_failures is None
    assert core.probe_failures is None
    assert core.failure_rate is None


def test_what_only_the_core_can_check_is_reported_with_the_field() -> None:
    spec = BreakerPolicySpec.model_validate({"failureStatuses": ["4xx"]})  # 4xx holds 429

    with pytest.raises(PolicyError, match="failureStatuses: \\[429\\] also listed"):
        spec.to_core()


def test_pydantic_names_the_field_of_a_bad_manifest() -> None:
    document = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Upstream",
        "metadata": {"name": "x"},
        "spec": {
            "provider": "openai",
            "baseURL": "http://h/v1",
            "models": [{"name": "m"}],
            "probe": {"interval": "10"},
        },
    }

    with pytest.raises(ValidationError) as error:
        parse(document)

    assert error.value.errors()[0]["loc"] == ("spec", "probe", "interval")


def test_a_foreign_manifest_is_refused_by_kind() -> None:
    with pytest.raises(ValueError, match="not a Sluice resource: apiVersion 'v1', kind 'Secret'"):
        parse({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})


def upstream_with_headers(names: list[str]) -> dict[str, Any]:
    document = next(d for d in documents() if d["kind"] == "Upstream")
    return {**document, "spec": {**document["spec"], "forwardHeaders": names}}


def test_an_upstream_may_forward_named_and_prefixed_headers() -> None:
    parsed = parse(upstream_with_headers(["OpenAI-Beta", "x-team-*"]))

    assert isinstance(parsed, Upstream)
    assert parsed.spec.forward_headers == ["OpenAI-Beta", "x-team-*"]


@pytest.mark.parametrize(
    "names",
    [["Authorization"], ["x-api-key"], ["Transfer-Encoding"], ["x-*"], ["content-*"], ["Host"]],
)
def test_credentials_and_framing_headers_are_never_forwarded(names: list[str]) -> None:
    with pytest.raises(ValidationError, match=f"forwardHeaders cannot name {names[0]}"):
        parse(upstream_with_headers(names))


def test_a_header_name_must_be_a_token() -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        parse(upstream_with_headers(["x bad"]))
