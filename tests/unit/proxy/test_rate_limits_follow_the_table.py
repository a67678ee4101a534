"""The proxy's side of rate limits (sluice.proxy.quotas): allowances follow the table."""

from __future__ import annotations

from sluice.core.ratelimit import ProviderLimits
from sluice.proxy.quotas import RateLimits, estimate_tokens
from sluice.proxy.table import build_table
from sluice.resources import parse

T0 = 1_000_000.0


def test_a_providers_token_count_turns_on_estimates_even_without_a_token_limit() -> None:
    upstream = parse({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Upstream", "metadata": {"name": "u"},
        "spec": {"provider": "openai", "baseURL": "https://api.openai.com/v1",
                 "models": [{"name": "m"}]},
    })  # fmt: skip
    table = build_table([upstream], {})
    limits = RateLimits()
    limits.sync(table)
    assert not limits.has_token_limits
    limits.heed(table.targets[("default", "u")], ProviderLimits(tokens_remaining=10), T0)
    assert limits.has_token_limits
    limits.sync(table)  # a reload keeps what the provider said
    assert limits.has_token_limits


def test_a_request_is_estimated_by_its_bytes_and_its_output_cap() -> None:
    raw = b"x" * 400
    assert estimate_tokens({"max_tokens": 50}, raw) == 150
    assert estimate_tokens({"max_completion_tokens": 10}, raw) == 110
    assert estimate_tokens({"max_output_tokens": 7}, raw) == 107
    assert estimate_tokens({}, raw) == 100 + 256
    assert estimate_tokens({"max_tokens": "lots"}, raw) == 100 + 256
    assert estimate_tokens({"max_tokens": True}, raw) == 100 + 256
