"""What a proxy replica tells the operator leader, and what the leader answers.

A replica reports, about once a second, what it saw per Upstream since its last report
(:class:`UpstreamUsage`); the leader folds every replica's reports into the cluster breaker and
the Upstream's ``status.usage``, and answers with this replica's share of each rate limit
(:class:`Share`). Counts are deltas since the last report a replica sent: a report that is
lost loses those counts, never a request. Only plain data here; the wire format (JSON, with
its bounds) and the transport live with the operator and the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Answer", "Report", "Share", "UpstreamUsage"]


@dataclass(slots=True)
class UpstreamUsage:
    """One Upstream, one replica, one report interval: deltas unless said otherwise."""

    namespace: str
    name: str
    # Attempts by outcome (the breaker's grading: success, failure, rate_limited, ignored).
    success: int = 0
    failure: int = 0
    rate_limited: int = 0
    ignored: int = 0
    slow: int = 0  # of success + failure: slow by the policy's slowCalls (duration or rate)
    last_error: str | None = None  # the last failure's detail, for the trip's message
    # Tokens the upstream reported, and what they cost at the model entries' prices.
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    cost_by_model: dict[str, float] = field(default_factory=dict)
    # Against limits.requestsPerMinute / tokensPerMinute: what was taken (settled reservations),
    # and what was wanted (taken plus what was turned away for want of a share).
    requests: int = 0
    tokens: int = 0
    wanted_requests: int = 0
    wanted_tokens: int = 0
    # Not a delta: requests and tokens this replica has taken in the last 60 s (its window).
    window_requests: int = 0
    window_tokens: int = 0


@dataclass(slots=True)
class Report:
    replica: str  # the pod's name (or any stable id of the replica)
    interval: float  # seconds this report covers
    upstreams: list[UpstreamUsage] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Share:
    """This replica's share of an Upstream's limits, per minute (None: that limit is not set)."""

    namespace: str
    name: str
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass(slots=True)
class Answer:
    leader: str  # who answered (the Lease holder)
    interval: float  # when to report next, in seconds
    shares: list[Share] = field(default_factory=list)
