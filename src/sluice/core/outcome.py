"""What one attempt at an upstream means to its breaker, decided once, here.

- failure: the upstream could not be reached or broke (refused, reset, DNS, TLS, timeouts of
  every kind, a stream cut or stalled after its first byte) or answered with a failure status
  (5xx and 408 by default, :attr:`BreakerPolicy.failure_statuses`).
- rate-limited: 429 (:attr:`BreakerPolicy.rate_limit_statuses`); holds the upstream off for its
  ``Retry-After``; counts toward tripping only if the policy says so.
- ignored: any other 4xx (the client's fault), a 5xx the policy excludes, a client that went
  away, the proxy's own shortage (out of file descriptors or memory: ``local``) and an answer
  over the proxy's size limit (``answer_too_large``: a client can ask for a huge embedding
  batch, and that is no fault of the upstream's).
- success: everything else.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from enum import StrEnum

from sluice.core.policy import BreakerPolicy

__all__ = [
    "ErrorKind",
    "Outcome",
    "OutcomeKind",
    "classify_error",
    "classify_status",
    "parse_retry_after",
]


class OutcomeKind(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    RATE_LIMITED = "rate_limited"
    IGNORED = "ignored"


class ErrorKind(StrEnum):
    """Ways an attempt can end without an HTTP status to judge it by."""

    CONNECT_REFUSED = "connect_refused"
    CONNECT_RESET = "connect_reset"
    DNS = "dns"
    TLS = "tls"
    CONNECT_TIMEOUT = "connect_timeout"
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"  # noqa: S105 - not a password
    TOTAL_TIMEOUT = "total_timeout"
    STREAM_IDLE_TIMEOUT = "stream_idle_timeout"
    STREAM_CUT = "stream_cut"  # the upstream closed a stream after its first byte
    PROTOCOL = "protocol"  # the upstream answered something that is not HTTP / not the API
    CLIENT_DISCONNECT = "client_disconnect"  # our client left: not the upstream's fault
    LOCAL = "local"  # the proxy's own fault: out of file descriptors or memory
    ANSWER_TOO_LARGE = "answer_too_large"  # over the proxy's limit for an answer read whole


_ERROR_TEXT = {
    ErrorKind.CONNECT_REFUSED: "connection refused",
    ErrorKind.CONNECT_RESET: "connection reset",
    ErrorKind.DNS: "DNS lookup failed",
    ErrorKind.TLS: "TLS handshake failed",
    ErrorKind.CONNECT_TIMEOUT: "connect timeout",
    ErrorKind.FIRST_TOKEN_TIMEOUT: "first-token timeout",
    ErrorKind.TOTAL_TIMEOUT: "total timeout",
    ErrorKind.STREAM_IDLE_TIMEOUT: "stream idle timeout",
    ErrorKind.STREAM_CUT: "stream cut after first byte",
    ErrorKind.PROTOCOL: "invalid upstream response",
    ErrorKind.CLIENT_DISCONNECT: "client disconnected",
    ErrorKind.LOCAL: "the proxy's own fault: out of file descriptors or memory",
    ErrorKind.ANSWER_TOO_LARGE: "answer over the proxy's size limit",
}

# Never counted against an upstream: neither a failure nor a success.
_NOT_THE_UPSTREAMS_FAULT = frozenset(
    {ErrorKind.CLIENT_DISCONNECT, ErrorKind.LOCAL, ErrorKind.ANSWER_TOO_LARGE}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One classified attempt. ``retry_after`` is a delay in seconds (rate-limited only)."""

    kind: OutcomeKind
    detail: str = ""
    retry_after: float | None = None
    status: int | None = None
    error: ErrorKind | None = None


_HTTP_200 = Outcome(OutcomeKind.SUCCESS, "HTTP 200", status=200)  # shared: the common case


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    ``now`` is wall-clock time (seconds since the epoch), needed only for the date form.
    Returns None for a missing or unreadable header; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        seconds = float(text)  # some providers send "1.5"; RFC 9110 says integer, be lenient
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def classify_status(
    status: int,
    policy: BreakerPolicy,
    *,
    retry_after: str | None = None,
    now: float = 0.0,
) -> Outcome:
    """Classify an HTTP status (and ``Retry-After`` header text, wall-clock ``now``)."""
    if status in policy.failure_statuses:
        return Outcome(OutcomeKind.FAILURE, f"HTTP {status}", status=status)
    if status in policy.rate_limit_statuses:
        return Outcome(
            OutcomeKind.RATE_LIMITED,
            f"HTTP {status}",
            retry_after=parse_retry_after(retry_after, now=now),
            status=status,
        )
    if 200 <= status < 400:
        if status == 200:
            return _HTTP_200
        return Outcome(OutcomeKind.SUCCESS, f"HTTP {status}", status=status)
    if 400 <= status < 600:
        # Other 4xx are the client's fault. A 5xx the policy leaves out of failure_statuses
        # was excluded on purpose: it neither trips nor resets the consecutive count.
        return Outcome(OutcomeKind.IGNORED, f"HTTP {status}", status=status)
    # 1xx cannot end an attempt, and anything else is not an HTTP status: the upstream is broken.
    return Outcome(OutcomeKind.FAILURE, f"invalid HTTP status {status}", status=status)


def classify_error(error: ErrorKind, detail: str = "") -> Outcome:
    """Classify an attempt that ended without a status; ``detail`` adds to the message."""
    text = _ERROR_TEXT[error] + (f": {detail}" if detail else "")
    if error in _NOT_THE_UPSTREAMS_FAULT:
        return Outcome(OutcomeKind.IGNORED, text, error=error)
    return Outcome(OutcomeKind.FAILURE, text, error=error)
