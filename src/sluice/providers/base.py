"""The seam every provider fills."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sluice.core import ErrorKind
from sluice.core.ratelimit import ProviderLimits

__all__ = ["Provider", "StreamFailure", "count", "go_duration"]

# Go's time.Duration text, as OpenAI writes its resets: "1s", "6m0s", "20ms", "1h2m3.5s".
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)", re.ASCII)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(text: str | None) -> float | None:
    """Seconds in a Go-style duration (None if it is not one)."""
    if not text or len(text) > 64:
        return None
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def count(text: str | None) -> int | None:
    """A header's non-negative whole count (None if it is not one)."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 15:
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class StreamFailure:
    """Why a stream ended badly: an error the upstream sent in the stream (``status``: the HTTP
    status its type stands for, to judge it by), or a broken stream (``error``: STREAM_CUT when
    it ended before its last event, PROTOCOL when it broke its format)."""

    message: str
    status: int | None = None
    error: ErrorKind | None = None
    error_type: str | None = None


@dataclass(frozen=True)
class Provider:
    """What differs between providers when the proxy or a probe talks to one. This base is
    OpenAI's behaviour; a provider overrides what differs."""

    name: str
    # The header that carries the API key, and how the key is written into it.
    key_header: str
    key_format: str = "{key}"
    # Headers every request to this provider carries (with a key).
    fixed_headers: tuple[tuple[str, str], ...] = ()

    def auth_headers(self, api_key: str | None) -> tuple[tuple[str, str], ...]:
        """The authentication headers for ``api_key`` (without a key, only the fixed ones)."""
        if not api_key:
            return self.fixed_headers
        return ((self.key_header, self.key_format.format(key=api_key)), *self.fixed_headers)

    def path(self, operation: str, *, model: str, api_version: str | None) -> str:
        """Where an operation (``/chat/completions``) goes, below the base URL's path."""
        return operation

    def probe_params(self, api_version: str | None) -> dict[str, str]:
        """Query parameters a probe sends."""
        return {}

    def retry_after(self, headers: Mapping[str, str]) -> str | None:
        """How long a 429 asks to wait, as a Retry-After value (lower-case header names)."""
        return headers.get("retry-after")

    def rate_limits(self, headers: Mapping[str, str], now: float) -> ProviderLimits | None:
        """What the answer's headers say of the provider's own limits (None: nothing).
        OpenAI's (and Azure's) ``x-ratelimit-remaining-requests/-tokens`` with resets as Go
        durations from now (``x-ratelimit-reset-requests: 6m0s``)."""
        requests = count(headers.get("x-ratelimit-remaining-requests"))
        tokens = count(headers.get("x-ratelimit-remaining-tokens"))
        if requests is None and tokens is None:
            return None
        requests_reset = go_duration(headers.get("x-ratelimit-reset-requests"))
        tokens_reset = go_duration(headers.get("x-ratelimit-reset-tokens"))
        return ProviderLimits(
            requests_remaining=requests,
            requests_reset_at=None if requests_reset is None else now + requests_reset,
            tokens_remaining=tokens,
            tokens_reset_at=None if tokens_reset is None else now + tokens_reset,
        )
