"""The seam every provider fills."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sluice.core import ErrorKind

__all__ = ["Provider", "StreamFailure"]


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
