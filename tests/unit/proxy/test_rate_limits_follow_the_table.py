"""The proxy's side of rate limits (sluice.proxy.quotas): allowances follow the table."""

from __future__ import annotations

from sluice.core.ratelimit import ProviderLimits
from sluice.core.reports import Share
from sluice.core.wire import MAX_MODELS
from sluice.proxy.quotas import RateLimits, estimate_tokens
from sluice.proxy.table import Table, build_table
from sluice.proxy.usage import UsageLedger
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


def limited_table(requests: int) -> Table:
    upstream = parse({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Upstream", "metadata": {"name": "u"},
        "spec": {"provider": "openai", "baseURL": "https://api.openai.com/v1",
                 "models": [{"name": "m"}], "limits": {"requestsPerMinute": requests}},
    })  # fmt: skip
    return build_table([upstream], {})


def test_following_a_leader_holds_a_limit_at_zero_until_its_first_answer() -> None:
    limits = RateLimits()
    limits.sync(limited_table(60))
    limits.follow_leader()
    allowance = limits.get(("default", "u"))
    assert allowance is not None
    assert not allowance.has_room(T0, 0)
    assert limits.view(("default", "u"), T0)["rateLimits"]["shareFrom"] == "awaiting"

    limits.apply([Share("default", "u", requests_per_minute=20)], T0)
    assert allowance.share_requests == 20
    assert limits.view(("default", "u"), T0)["rateLimits"]["shareFrom"] == "leader"


def test_a_changed_limit_waits_for_the_leader_and_a_lost_one_gives_the_whole_limit() -> None:
    limits = RateLimits()
    limits.sync(limited_table(60))
    limits.follow_leader()
    limits.apply([Share("default", "u", requests_per_minute=20)], T0)

    limits.sync(limited_table(90))
    allowance = limits.get(("default", "u"))
    assert allowance is not None
    assert allowance.share_requests == 0  # not 90 at every replica at once

    limits.lost_leader(T0 + 5)  # nobody answers: fail open on a limit never shared
    assert allowance.share_requests == 90


def test_a_leader_never_reached_leaves_the_whole_limit() -> None:
    limits = RateLimits()
    limits.sync(limited_table(60))
    limits.follow_leader()
    limits.lost_leader(T0)
    allowance = limits.get(("default", "u"))
    assert allowance is not None
    assert allowance.share_requests == 60
    assert limits.view(("default", "u"), T0)["rateLimits"]["shareFrom"] == "whole"


def test_a_report_holds_so_many_models_and_the_rest_in_other() -> None:
    ledger = UsageLedger()
    for i in range(MAX_MODELS + 10):
        ledger.tokens(("default", "u"), f"m{i}", input_tokens=1, output_tokens=1, cost=1.0, now=T0)
    (drained,) = ledger.drain(T0)
    assert len(drained.cost_by_model) == MAX_MODELS
    assert drained.cost_by_model["other"] == 11.0
    assert drained.cost == MAX_MODELS + 10
