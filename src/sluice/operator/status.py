"""What the operator writes to an Upstream's status, and when a write is worth making. Pure.

A write happens when something a user would see changes: the breaker's state, reason, forced
flag, failure count or open period, the conditions, the policy, the observed generation. Health
figures (availability, latency) change on every probe, so they are written with those changes,
or on their own when availability moves by a point or p95 by half (and by 25 ms), at most once
a minute per upstream and within a budget shared by all of them (``WriteBudget``: one a second
by default). At 1,000 healthy upstreams that is a handful of writes a minute after the first,
and an operator restart that finds status as it would write it writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sluice.core import BreakerSnapshot, Reason, State
from sluice.operator.health import ProbeHistory
from sluice.resources.models import (
    BreakerStatus,
    Condition,
    Health,
    LatencyMs,
    ProbeResult,
    UpstreamStatus,
    Usage,
)
from sluice.resources.status import read_status, status_patch
from sluice.resources.times import epoch_or_none, rfc3339

__all__ = [
    "HEALTH_REFRESH_SECONDS",
    "Readiness",
    "build_status",
    "health_moved",
    "snapshot_from_status",
    "usage_moved",
    "visible",
]

HEALTH_REFRESH_SECONDS = 60.0
USAGE_REFRESH_SECONDS = 5.0  # usage figures on their own: at most this often per upstream
P95_FLOOR_MS = 25.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str


def _time(value: float | None) -> str | None:
    return None if value is None else rfc3339(value)


def build_status(
    *,
    snapshot: BreakerSnapshot,
    effective: State,
    policy_name: str,
    last_reset: str | None,
    history: ProbeHistory,
    readiness: Readiness,
    generation: int | None,
    previous_conditions: list[dict[str, Any]],
    now: float,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """The status patch (the models' JSON: ``None`` where a field has no value, so the merge
    patch deletes it). ``effective`` is what users see: ``core.effective_state`` of the
    snapshot's override and state."""
    ready = Condition(
        type="Ready",
        status="True" if readiness.ready else "False",
        reason=readiness.reason,
        message=readiness.message,
        observed_generation=generation,
    )
    available = Condition(
        type="Available",
        status="False" if effective is State.OPEN else "True",
        reason=str(effective),
        message=snapshot.message or f"circuit {effective}",
        observed_generation=generation,
    )
    status = UpstreamStatus(
        observed_generation=generation,
        breaker=_breaker(snapshot, effective, policy_name, last_reset),
        health=_health(history),
        usage=usage,
        conditions=[_since(c, previous_conditions, now) for c in (ready, available)],
    )
    return status_patch(status)


def _breaker(
    snapshot: BreakerSnapshot, effective: State, policy_name: str, last_reset: str | None
) -> BreakerStatus:
    is_open = snapshot.state is State.OPEN
    return BreakerStatus(
        state=effective.value,
        reason=None if snapshot.reason is None else str(snapshot.reason),
        message=snapshot.message or None,
        consecutive_failures=max(
            snapshot.consecutive_failures, snapshot.consecutive_probe_failures
        ),
        opened_at=_time(snapshot.opened_at) if is_open else None,
        open_until=_time(snapshot.open_until) if is_open else None,
        trip_count=snapshot.trip_count,
        trip_streak=snapshot.trip_streak,
        last_transition_time=_time(snapshot.last_transition_at),
        forced=snapshot.forced is not None,
        # Under an override, what the evidence says (restored after a restart).
        automatic_state=None if snapshot.forced is None else snapshot.state.value,
        policy=policy_name,
        last_reset=last_reset,
    )


def _health(history: ProbeHistory) -> Health:
    last = history.last
    availability = history.availability()
    return Health(
        availability=None if availability is None else round(availability, 1),
        latency_ms=LatencyMs(
            p50=_round_ms(history.latency_percentile(0.5)),
            p95=_round_ms(history.latency_percentile(0.95)),
            p99=_round_ms(history.latency_percentile(0.99)),
        ),
        last_probe=None
        if last is None
        else ProbeResult(
            at=rfc3339(last.at),
            ok=last.ok,
            latency_ms=_round_ms(last.latency_ms),
            code=last.code,
            error=last.error,
        ),
    )


def _round_ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _since(condition: Condition, previous: list[dict[str, Any]], now: float) -> Condition:
    """The condition with its lastTransitionTime: now, unless its status is the one before."""
    before = next((c for c in previous if c.get("type") == condition.type), None)
    since = rfc3339(now)
    if (
        before is not None
        and before.get("status") == condition.status
        and before.get("lastTransitionTime")
    ):
        since = before["lastTransitionTime"]
    return condition.model_copy(update={"last_transition_time": since})


def visible(status: dict[str, Any]) -> tuple[Any, ...]:
    """What a user sees besides health figures: a change here is written at once."""
    breaker = status["breaker"]
    return (
        status["observedGeneration"],
        breaker["state"],
        breaker["reason"],
        breaker["forced"],
        breaker["consecutiveFailures"],
        breaker["openUntil"],
        breaker["policy"],
        breaker["lastReset"],
        tuple((c["type"], c["status"], c["reason"], c["message"]) for c in status["conditions"]),
    )


def health_moved(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether health figures moved enough to be written on their own."""
    if before is None:
        return True
    old_a, new_a = before.get("availability"), after.get("availability")
    if (old_a is None) != (new_a is None):
        return True
    if old_a is not None and new_a is not None and abs(old_a - new_a) >= 1.0:
        return True
    old_p = (before.get("latencyMs") or {}).get("p95")
    new_p = (after.get("latencyMs") or {}).get("p95")
    if (old_p is None) != (new_p is None):
        return True
    # By half, and by enough to matter: 1 ms -> 2 ms is noise, not news.
    return bool(
        old_p is not None
        and new_p is not None
        and abs(new_p - old_p) > max(0.5 * old_p, P95_FLOOR_MS)
    )


def usage_moved(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
    """Whether usage figures moved enough to be written on their own: by more than a tenth,
    or to or from zero (so "no traffic any more" is written too)."""
    if after is None:
        return False
    if before is None:
        return True
    for key in ("requestsPerMinute", "tokensPerMinute", "costPerHour"):
        old, new = before.get(key) or 0, after.get(key) or 0
        if (old == 0) != (new == 0) or abs(new - old) > 0.1 * old:
            return True
    return False


def snapshot_from_status(status: Mapping[str, Any] | None) -> BreakerSnapshot | None:
    """The breaker state a previous operator wrote, to restore after a restart; None if there
    is none (or it cannot be read, in which case the breaker starts Closed). Read leniently:
    a field that cannot be read counts as absent."""
    breaker = read_status(status).breaker
    written = None if breaker is None else breaker.automatic_state or breaker.state
    if breaker is None or written is None:
        return None
    state = State(written)
    open_until = epoch_or_none(breaker.open_until)
    if state is State.OPEN and open_until is None:
        return None
    try:
        reason = Reason(breaker.reason) if breaker.reason else None
    except ValueError:
        reason = None
    since = epoch_or_none(breaker.last_transition_time)
    return BreakerSnapshot(
        state=state,
        forced=None,  # the override comes from spec, which is applied right after
        reason=reason,
        message=breaker.message or "",
        consecutive_failures=0,
        consecutive_probe_failures=breaker.consecutive_failures or 0,
        trip_count=breaker.trip_count or 0,
        trip_streak=breaker.trip_streak or 0,
        opened_at=epoch_or_none(breaker.opened_at),
        open_until=open_until,
        last_transition_at=since,
        closed_since=since if state is State.CLOSED else None,
        held_until=None,
    )
