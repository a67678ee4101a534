"""Breaker policies: what trips a circuit, how long it stays open, how it recovers.

Durations are seconds (floats) here; :func:`parse_duration` reads the strings users write in
manifests (``500ms``, ``2s``, ``5m``, ``1h30m``). Every policy is validated when it is built: a
bad value raises :class:`PolicyError`, whose ``field`` is the manifest path of the culprit
(``halfOpen.successThreshold``), so the operator and the proxy can report it as is.

Defaults are those of docs/configuration.md (and DESIGN.md "Breaker semantics").
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

from sluice.errors import ConfigurationError

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "BreakerPolicy",
    "FailureRate",
    "Growth",
    "HalfOpen",
    "PolicyError",
    "SlowCalls",
    "format_duration",
    "parse_duration",
    "parse_status_set",
]


class PolicyError(ConfigurationError):
    """A policy value is invalid; ``field`` names it as a manifest path (``failureRate.window``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@functools.lru_cache(maxsize=4096)  # the proxy reads timeouts per attempt: parse each once
def parse_duration(text: str, *, field: str = "duration") -> float:
    """Seconds in a duration string: ``500ms``, ``2s``, ``1.5m``, ``1h30m`` (Go's spelling).

    A bare number is refused: ``30`` could be seconds or milliseconds, so the unit is required.
    """
    value = text.strip()
    if not value:
        raise PolicyError(field, "empty duration; write e.g. 500ms, 2s, 5m or 1h")
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise PolicyError(
            field,
            f"{text!r} is not a duration; write e.g. 500ms, 2s, 5m or 1h (a unit is required)",
        )
    return total


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for messages: ``500ms``, ``30s``, ``1m30s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds != int(seconds) else f"{int(seconds)}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)


def parse_status_set(items: list[str | int], *, field: str = "failureStatuses") -> frozenset[int]:
    """HTTP statuses from ``["5xx", 408]``-style lists: exact codes or a class like ``5xx``."""
    statuses: set[int] = set()
    for index, item in enumerate(items):
        text = str(item).strip().lower()
        if re.fullmatch(r"[1-5]xx", text):
            first = int(text[0]) * 100
            statuses.update(range(first, first + 100))
        elif re.fullmatch(r"[1-5]\d\d", text):
            statuses.add(int(text))
        else:
            raise PolicyError(
                f"{field}[{index}]",
                f"{item!r} is not an HTTP status (e.g. 503) or class (e.g. 5xx)",
            )
    return frozenset(statuses)


DEFAULT_FAILURE_STATUSES = frozenset(range(500, 600)) | {408}


class Growth(StrEnum):
    """How the open duration grows on consecutive trips."""

    EXPONENTIAL = "Exponential"  # base, 2xbase, 4xbase, ...
    LINEAR = "Linear"  # base, 2xbase, 3xbase, ...
    NONE = "None"  # always base


@dataclass(frozen=True, slots=True)
class FailureRate:
    """Trip when failures / requests ≥ ``threshold`` % over ``window`` seconds, once at least
    ``minimum_requests`` were seen in it. The window slides in ``window / 10`` steps."""

    threshold: float = 50.0
    minimum_requests: int = 10
    window: float = 60.0

    def validate(self, prefix: str) -> None:
        _percent(f"{prefix}.threshold", self.threshold)
        _positive_int(f"{prefix}.minimumRequests", self.minimum_requests)
        _positive(f"{prefix}.window", self.window)


@dataclass(frozen=True, slots=True)
class SlowCalls:
    """Trip when slow calls make up ``rate_threshold`` % of the failure-rate window, with its
    minimum number of requests. A call is slow when it took at least ``duration`` (time to
    first token for streams), or, with ``min_output_tokens_per_second``, when a stream's
    output came slower than that after its first token."""

    duration: float = 30.0
    rate_threshold: float = 80.0
    min_output_tokens_per_second: float | None = None

    def is_slow(self, duration: float | None, tokens_per_second: float | None) -> bool:
        """Whether a call that took ``duration`` (and streamed at ``tokens_per_second``) is."""
        minimum = self.min_output_tokens_per_second
        return (duration is not None and duration >= self.duration) or (
            minimum is not None and tokens_per_second is not None and tokens_per_second < minimum
        )

    def validate(self, prefix: str) -> None:
        _positive(f"{prefix}.duration", self.duration)
        _percent(f"{prefix}.rateThreshold", self.rate_threshold)
        if self.min_output_tokens_per_second is not None:
            _positive(f"{prefix}.minOutputTokensPerSecond", self.min_output_tokens_per_second)


@dataclass(frozen=True, slots=True)
class HalfOpen:
    """``max_requests`` trials are admitted per half-open period (one at a time by default);
    ``success_threshold`` of them must succeed to close; a trial running longer than
    ``max_duration`` counts as failed."""

    max_requests: int = 1
    success_threshold: int = 1
    max_duration: float = 60.0

    def validate(self, prefix: str) -> None:
        _positive_int(f"{prefix}.maxRequests", self.max_requests)
        _positive_int(f"{prefix}.successThreshold", self.success_threshold)
        _positive(f"{prefix}.maxDuration", self.max_duration)
        if self.success_threshold > self.max_requests:
            raise PolicyError(
                f"{prefix}.successThreshold",
                f"{self.success_threshold} successes can never be reached with "
                f"maxRequests {self.max_requests} trials; make it at most maxRequests",
            )


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Everything that decides a breaker's transitions. ``None`` disables a trigger."""

    consecutive_failures: int | None = 5
    failure_rate: FailureRate | None = field(default_factory=FailureRate)
    slow_calls: SlowCalls | None = None
    probe_failures: int | None = 3
    open_duration: float = 30.0
    max_open_duration: float = 300.0
    growth: Growth = Growth.EXPONENTIAL
    # Each open period is stretched by up to this fraction at random, so replicas and
    # upstreams that tripped together do not all probe at the same instant.
    jitter: float = 0.1
    # After this long Closed with no trip, the next trip starts again from open_duration.
    # None: max_open_duration.
    healthy_period: float | None = None
    half_open: HalfOpen = field(default_factory=HalfOpen)
    failure_statuses: frozenset[int] = DEFAULT_FAILURE_STATUSES
    rate_limit_statuses: frozenset[int] = frozenset({429})
    # Whether a 429 also counts toward tripping (it always holds the upstream off).
    rate_limited_is_failure: bool = False
    # Hold off for the upstream's Retry-After (capped at max_open_duration); when False, or
    # when the header is absent, hold off for open_duration.
    respect_retry_after: bool = True

    def __post_init__(self) -> None:
        if self.consecutive_failures is not None:
            _positive_int("consecutiveFailures", self.consecutive_failures)
        if self.probe_failures is not None:
            _positive_int("probeFailures", self.probe_failures)
        if self.failure_rate is not None:
            self.failure_rate.validate("failureRate")
        if self.slow_calls is not None:
            self.slow_calls.validate("slowCalls")
        self.half_open.validate("halfOpen")
        _positive("openDuration", self.open_duration)
        _positive("maxOpenDuration", self.max_open_duration)
        if self.max_open_duration < self.open_duration:
            raise PolicyError(
                "maxOpenDuration",
                f"{_fmt(self.max_open_duration)} is shorter than openDuration "
                f"{_fmt(self.open_duration)}",
            )
        if not 0.0 <= self.jitter <= 1.0 or math.isnan(self.jitter):
            raise PolicyError("jitter", f"{self.jitter} is not a fraction between 0 and 1")
        if self.healthy_period is not None:
            _positive("healthyPeriod", self.healthy_period)
        overlap = self.failure_statuses & self.rate_limit_statuses
        if overlap:
            raise PolicyError(
                "failureStatuses",
                f"{sorted(overlap)} also listed as rate-limit statuses; a status is one or the "
                "other (use rateLimitedIsFailure to count 429 toward tripping)",
            )

    @property
    def effective_healthy_period(self) -> float:
        return self.max_open_duration if self.healthy_period is None else self.healthy_period

    def open_duration_for(self, streak: int) -> float:
        """The open duration (before jitter) for the ``streak``-th consecutive trip, from 0."""
        if self.growth is Growth.EXPONENTIAL:
            grown = self.open_duration * 2.0 ** min(streak, 62)
        elif self.growth is Growth.LINEAR:
            grown = self.open_duration * (streak + 1)
        else:
            grown = self.open_duration
        return min(grown, self.max_open_duration)


def _fmt(seconds: float) -> str:
    return f"{seconds:g}s"


def _positive(name: str, value: float) -> None:
    if math.isnan(value) or value <= 0 or math.isinf(value):
        raise PolicyError(name, f"{value:g} is not a positive duration")


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(name, f"{value!r} is not a whole number of at least 1")


def _percent(name: str, value: float) -> None:
    if math.isnan(value) or not 0 < value <= 100:
        raise PolicyError(name, f"{value:g}% is not a percentage above 0 and at most 100")
