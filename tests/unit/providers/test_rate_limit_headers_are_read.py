"""Each provider's own rate-limit headers, read into one shape (sluice.core.ratelimit
.ProviderLimits): OpenAI and Azure say resets as Go durations, Anthropic as RFC 3339 times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sluice.providers import provider
from sluice.providers.base import go_duration

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0s", 0.0)],
)
def test_go_durations_are_read(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-1s", "1s later", "9" * 80 + "s", None])
def test_anything_else_is_no_duration(text: str | None) -> None:
    assert go_duration(text) is None


@pytest.mark.parametrize("name", ["openai", "openai-compatible", "azure-openai"])
def test_openai_style_headers_are_read(name: str) -> None:
    said = provider(name).rate_limits(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-remaining-tokens": "159976",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        NOW,
    )
    assert said is not None
    assert said.requests_remaining == 0
    assert said.requests_reset_at == pytest.approx(NOW + 0.012)
    assert said.tokens_remaining == 159976
    assert said.tokens_reset_at == pytest.approx(NOW + 360)


def test_a_provider_that_says_nothing_gives_nothing() -> None:
    assert provider("openai").rate_limits({"content-type": "application/json"}, NOW) is None


def test_nonsense_counts_are_not_read() -> None:
    said = provider("openai").rate_limits(
        {"x-ratelimit-remaining-requests": "-3", "x-ratelimit-remaining-tokens": "\u00b2"}, NOW
    )
    assert said is None


def test_anthropic_headers_are_read_with_absolute_resets() -> None:
    said = provider("anthropic").rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": "999",
            "anthropic-ratelimit-requests-reset": "2026-12-01T12:00:01Z",
            "anthropic-ratelimit-tokens-remaining": "96000",
            "anthropic-ratelimit-tokens-reset": "2026-12-01T12:00:30Z",
            "anthropic-ratelimit-input-tokens-remaining": "80000",
            "anthropic-ratelimit-input-tokens-reset": "2026-12-01T12:00:20Z",
            "anthropic-ratelimit-output-tokens-remaining": "16000",
            "anthropic-ratelimit-output-tokens-reset": "2026-12-01T12:00:05Z",
        },
        NOW,
    )
    assert said is not None
    assert said.requests_remaining == 999
    assert said.requests_reset_at == pytest.approx(NOW + 1)
    # The most restrictive token count wins: here the output tokens'.
    assert said.tokens_remaining == 16000
    assert said.tokens_reset_at == pytest.approx(NOW + 5)


def test_an_anthropic_reset_without_a_zone_is_not_guessed() -> None:
    said = provider("anthropic").rate_limits(
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2026-12-01T12:00:01",
        },
        NOW,
    )
    assert said is not None
    assert said.requests_reset_at is None
