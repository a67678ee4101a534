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

from dataclasses import dataclass
from typing import Any

from sluice.core import BreakerSnapshot, Reason, State
from sluice.kube import parse_rfc3339, rfc3339
from sluice.operator.health import ProbeHistory

__all__ = [
    "HEALTH_REFRESH_SECONDS",
    "Readiness",
    "build_status",
    "health_moved",
    "snapshot_from_status",
    "visible",
]

HEALTH_REFRESH_SECONDS = 60.0
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
) -> dict[str, Any]:
    last = history.last
    availability = history.availability()
    health: dict[str, Any] = {
        "availability": None if availability is None else round(availability, 1),
        "latencyMs": {
            name: _round_ms(history.latency_percentile(q))
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        },
        "lastProbe": None
        if last is None
        else {
            "at": rfc3339(last.at),
            "ok": last.ok,
            "latencyMs": _round_ms(last.latency_ms),
            "code": last.code,
            "error": last.error,
        },
    }
    available = effective is not State.OPEN
    conditions = [
        _condition(
            "Ready",
            ok=readiness.ready,
            reason=readiness.reason,
            message=readiness.message,
            generation=generation,
            previous=previous_conditions,
            now=now,
        ),
        _condition(
            "Available",
            ok=available,
            reason=str(effective),
            message=snapshot.message or f"circuit {effective}",
            generation=generation,
            previous=previous_conditions,
            now=now,
        ),
    ]
    return {
        "observedGeneration": generation,
        "breaker": {
            "state": str(effective),
            "reason": None if snapshot.reason is None else str(snapshot.reason),
            "message": snapshot.message or None,
            "consecutiveFailures": max(
                snapshot.consecutive_failures, snapshot.consecutive_probe_failures
            ),
            "openedAt": _time(snapshot.opened_at) if snapshot.state is State.OPEN else None,
            "openUntil": _time(snapshot.open_until) if snapshot.state is State.OPEN else None,
            "tripCount": snapshot.trip_count,
            "tripStreak": snapshot.trip_streak,
            "lastTransitionTime": _time(snapshot.last_transition_at),
            "forced": snapshot.forced is not None,
            # Under an override, what the evidence says (restored after a restart).
            "automaticState": None if snapshot.forced is None else str(snapshot.state),
            "policy": policy_name,
            "lastReset": last_reset,
        },
        "health": health,
        "conditions": conditions,
    }


def _round_ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _condition(
    kind: str,
    *,
    ok: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: list[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = rfc3339(now)
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        since = before["lastTransitionTime"]
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


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


def snapshot_from_status(status: dict[str, Any] | None) -> BreakerSnapshot | None:
    """The breaker state a previous operator wrote, to restore after a restart; None if there
    is none (or it cannot be read, in which case the breaker starts Closed)."""
    breaker = (status or {}).get("breaker") or {}
    try:
        state = State(breaker.get("automaticState") or breaker["state"])
    except (KeyError, ValueError):
        return None
    if state is State.OPEN and not breaker.get("openUntil"):
        return None

    def when(key: str) -> float | None:
        value = breaker.get(key)
        return parse_rfc3339(value) if value else None

    try:
        reason = Reason(breaker["reason"]) if breaker.get("reason") else None
    except ValueError:
        reason = None
    failures = int(breaker.get("consecutiveFailures") or 0)
    return BreakerSnapshot(
        state=state,
        forced=None,  # the override comes from spec, which is applied right after
        reason=reason,
        message=breaker.get("message") or "",
        consecutive_failures=0,
        consecutive_probe_failures=failures,
        trip_count=int(breaker.get("tripCount") or 0),
        trip_streak=int(breaker.get("tripStreak") or 0),
        opened_at=when("openedAt"),
        open_until=when("openUntil"),
        last_transition_at=when("lastTransitionTime"),
        closed_since=when("lastTransitionTime") if state is State.CLOSED else None,
        held_until=None,
    )
