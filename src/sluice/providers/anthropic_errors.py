"""Errors between Anthropic and OpenAI: the bodies both ways, and what an Anthropic status
means to the proxy.

Anthropic's error body is ``{"type": "error", "error": {"type", "message"}, "request_id"}``;
OpenAI's (and the proxy's own) is ``{"error": {"message", "type", "param", "code"}}``.
:func:`classify_anthropic` says what an answer's status asks of the proxy: fail over (529
``overloaded_error`` and every 5xx, and 408), hold the upstream off (429, with its
``retry-after``), or pass the answer back to the client (every other 4xx: 400, 401, 403, 404,
413, ...). Its ``status`` is what the proxy's breaker policy should judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "AnthropicVerdict",
    "Disposition",
    "classify_anthropic",
    "from_anthropic_error",
    "status_for_error_type",
    "to_anthropic_error",
]

# The status each Anthropic error type is answered with (docs: API errors).
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",  # request_too_large is not in the SDK's ErrorObject union
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class Disposition(StrEnum):
    """What an upstream's answer asks of the proxy."""

    SUCCESS = "success"
    FAIL_OVER = "fail_over"  # the upstream failed: try the next one, count it against this one
    RATE_LIMITED = "rate_limited"  # hold this upstream off for retry_after, try the next one
    PASS_BACK = "pass_back"  # noqa: S105 - the client's fault: its answer goes back as it is


@dataclass(frozen=True, slots=True)
class AnthropicVerdict:
    """An Anthropic answer, classified. ``status`` is the HTTP status the proxy should judge
    it by (the breaker policy's failure and rate-limit statuses); ``error_type`` is the body's
    ``error.type`` when it has one; ``retry_after`` the header's text (rate-limited only)."""

    disposition: Disposition
    status: int
    error_type: str | None = None
    retry_after: str | None = None


def status_for_error_type(error_type: str | None) -> int:
    """The HTTP status an Anthropic error type stands for: what an ``error`` event inside a
    200 stream means (``overloaded_error``: 529). An unknown type is a 500."""
    return _STATUS_OF_TYPE.get(error_type or "", 500)


def classify_anthropic(
    status: int,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | Mapping[str, Any] | None = None,
) -> AnthropicVerdict:
    """What an Anthropic answer's ``status`` (its lower-cased ``headers``, its error ``body``)
    asks of the proxy. Pure."""
    error_type = _error_fields(body)[0] if body is not None else None
    if 200 <= status < 300:
        return AnthropicVerdict(Disposition.SUCCESS, status)
    if status == 429:
        retry_after = (headers or {}).get("retry-after")
        return AnthropicVerdict(Disposition.RATE_LIMITED, status, error_type, retry_after)
    if 500 <= status < 600 or status == 408:
        return AnthropicVerdict(Disposition.FAIL_OVER, status, error_type)
    if 400 <= status < 500:
        return AnthropicVerdict(Disposition.PASS_BACK, status, error_type)
    return AnthropicVerdict(Disposition.FAIL_OVER, status, error_type)  # not an answer


def from_anthropic_error(body: bytes | Mapping[str, Any] | None, *, status: int) -> dict[str, Any]:
    """Anthropic's error body as OpenAI's. ``type`` and ``code`` are Anthropic's error type
    (``overloaded_error``, ...); a body that is not Anthropic's error gets a message naming the
    status."""
    error_type, message = _error_fields(body)
    if error_type is None:
        error_type = _TYPE_OF_STATUS.get(status, "api_error" if status >= 500 else "upstream_error")
    if message is None:
        message = f"the upstream answered HTTP {status}"
    return {"error": {"message": message, "type": error_type, "param": None, "code": error_type}}


def to_anthropic_error(body: bytes | Mapping[str, Any] | None, *, status: int) -> dict[str, Any]:
    """OpenAI's error body (or the proxy's) as Anthropic's: the type from the status (what the
    Anthropic SDK picks its exception by), OpenAI's message kept."""
    error = _openai_error(body)
    message = error.get("message") if error is not None else None
    if not isinstance(message, str) or not message:
        message = f"the upstream answered HTTP {status}"
    error_type = _TYPE_OF_STATUS.get(status)
    if error_type is None:
        error_type = "api_error" if status >= 500 or status < 400 else "invalid_request_error"
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _parsed(body: bytes | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    return body if isinstance(body, Mapping) else None


def _error_fields(body: bytes | Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """Anthropic's ``error.type`` and ``error.message`` (None for what is missing)."""
    parsed = _parsed(body)
    error = parsed.get("error") if parsed is not None else None
    if not isinstance(error, Mapping):
        return None, None
    error_type, message = error.get("type"), error.get("message")
    return (
        error_type if isinstance(error_type, str) and error_type else None,
        message if isinstance(message, str) else None,
    )


def _openai_error(body: bytes | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    parsed = _parsed(body)
    error = parsed.get("error") if parsed is not None else None
    return error if isinstance(error, Mapping) else None
