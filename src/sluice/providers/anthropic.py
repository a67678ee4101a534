"""Anthropic: the key in ``x-api-key``, with the API version every request must name; and
Anthropic's Messages API beside OpenAI's Chat Completions, translated both ways.

OpenAI client, Anthropic upstream: :func:`to_anthropic_request`, then
:func:`from_anthropic_response`, :class:`AnthropicStreamTranslator` or
:func:`from_anthropic_error` for what comes back, :func:`classify_anthropic` for what it means.
Anthropic client (``/v1/messages``), OpenAI-format upstream: :func:`to_openai_request`, then
:func:`to_anthropic_response`, :class:`OpenAIStreamTranslator` or :func:`to_anthropic_error`.

The translations live in ``anthropic_request``, ``anthropic_response``, ``anthropic_stream``
and ``anthropic_errors``; they are pure functions of dicts and bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sluice.core.ratelimit import ProviderLimits
from sluice.providers.anthropic_errors import (
    AnthropicVerdict,
    Disposition,
    classify_anthropic,
    from_anthropic_error,
    status_for_error_type,
    to_anthropic_error,
)
from sluice.providers.anthropic_request import (
    DEFAULT_MAX_TOKENS,
    FIRST_TURN_PLACEHOLDER,
    to_anthropic_request,
    to_openai_request,
    wants_usage,
)
from sluice.providers.anthropic_response import (
    anthropic_stop_reason,
    anthropic_usage,
    from_anthropic_response,
    openai_finish_reason,
    openai_usage,
    to_anthropic_response,
)
from sluice.providers.anthropic_stream import (
    AnthropicStreamTranslator,
    OpenAIStreamTranslator,
    StreamFailure,
)
from sluice.providers.base import Provider, count
from sluice.providers.translation import TranslationError, UpstreamFormatError

__all__ = [
    "ANTHROPIC",
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "FIRST_TURN_PLACEHOLDER",
    "AnthropicStreamTranslator",
    "AnthropicVerdict",
    "Disposition",
    "OpenAIStreamTranslator",
    "StreamFailure",
    "TranslationError",
    "UpstreamFormatError",
    "anthropic_stop_reason",
    "anthropic_usage",
    "classify_anthropic",
    "from_anthropic_error",
    "from_anthropic_response",
    "openai_finish_reason",
    "openai_usage",
    "status_for_error_type",
    "to_anthropic_error",
    "to_anthropic_request",
    "to_anthropic_response",
    "to_openai_request",
    "wants_usage",
]

ANTHROPIC_VERSION = "2023-06-01"


def _instant(text: str | None) -> float | None:
    """An RFC 3339 time (Anthropic's resets) as seconds since the epoch."""
    if not text or len(text) > 64:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


@dataclass(frozen=True)
class AnthropicProvider(Provider):
    def rate_limits(self, headers: Mapping[str, str], now: float) -> ProviderLimits | None:
        """``anthropic-ratelimit-requests-*`` and ``-tokens-*`` (the most restrictive of its
        token limits; else the lower of the input and output ones), resets in RFC 3339."""
        prefix = "anthropic-ratelimit-"
        requests = count(headers.get(prefix + "requests-remaining"))
        tokens, tokens_reset = count(headers.get(prefix + "tokens-remaining")), "tokens-reset"
        for kind in ("input-tokens", "output-tokens"):
            remaining = count(headers.get(f"{prefix}{kind}-remaining"))
            if remaining is not None and (tokens is None or remaining < tokens):
                tokens, tokens_reset = remaining, f"{kind}-reset"
        if requests is None and tokens is None:
            return None
        return ProviderLimits(
            requests_remaining=requests,
            requests_reset_at=_instant(headers.get(prefix + "requests-reset")),
            tokens_remaining=tokens,
            tokens_reset_at=_instant(headers.get(prefix + tokens_reset)),
        )


ANTHROPIC = AnthropicProvider(
    "anthropic", key_header="x-api-key", fixed_headers=(("anthropic-version", ANTHROPIC_VERSION),)
)
