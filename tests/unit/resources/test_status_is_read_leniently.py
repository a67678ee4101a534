"""Status is written and read through the models: the operator's patch is the models' JSON
(None deletes a field), and readers never raise on what anyone may have written there."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sluice.core import BreakerPolicy, CircuitBreaker, Outcome, OutcomeKind, State
from sluice.operator.health import ProbeHistory
from sluice.operator.status import Readiness, build_status, snapshot_from_status
from sluice.resources.models import BreakerStatus, UpstreamStatus
from sluice.resources.status import BreakerView, breaker_view, read_status, status_patch

NOW = 1_800_000_000.0
UNTIL = "2027-01-15T08:00:31Z"  # NOW + 31


def written(breaker: CircuitBreaker) -> dict[str, Any]:
    snapshot = breaker.snapshot()
    return build_status(
        snapshot=snapshot,
        effective=breaker.state,
        policy_name="p",
        last_reset=None,
        history=ProbeHistory(),
        readiness=Readiness(True, "Ready", "ok"),
        generation=1,
        previous_conditions=[],
        now=NOW,
    )


def tripped() -> CircuitBreaker:
    breaker = CircuitBreaker(BreakerPolicy(probe_failures=1, jitter=0), now=NOW)
    breaker.record_probe(Outcome(OutcomeKind.FAILURE, "HTTP 503", status=503), NOW + 1)
    return breaker


def test_what_the_operator_writes_the_proxy_reads() -> None:
    view = breaker_view(written(tripped()))

    assert view == BreakerView(State.OPEN, None, NOW + 31)
    assert view.automatic is State.OPEN


def test_under_an_override_the_automatic_state_is_what_the_evidence_says() -> None:
    breaker = tripped()
    breaker.force(State.CLOSED, NOW + 2)

    view = breaker_view(written(breaker))

    assert view is not None
    assert (view.state, view.automatic_state, view.automatic) == (
        State.CLOSED,
        State.OPEN,
        State.OPEN,
    )


def test_the_patch_carries_every_field_so_a_merge_patch_deletes_what_no_longer_applies() -> None:
    patch = status_patch(UpstreamStatus(breaker=BreakerStatus(state="Closed")))

    assert patch["breaker"]["openUntil"] is None
    assert patch["breaker"]["automaticState"] is None
    assert patch["health"] is None
    assert written(CircuitBreaker(BreakerPolicy(), now=NOW))["breaker"]["openUntil"] is None


@pytest.mark.parametrize(
    "status",
    [
        None,
        "Open",
        [],
        {},
        {"breaker": None},
        {"breaker": "Open"},
        {"breaker": ["Open"]},
        {"breaker": {}},
        {"breaker": {"state": "Sideways"}},
        {"breaker": {"state": 3}},
        {"breaker": {"openUntil": UNTIL}},
    ],
)
def test_no_readable_state_is_no_view(status: object) -> None:
    problems: list[str] = []

    assert breaker_view(status, problems) is None
    assert problems == []


def test_an_unknown_or_malformed_field_is_ignored() -> None:
    status = {
        "breaker": {
            "state": "Open",
            "openUntil": UNTIL,
            "automaticState": "Sideways",
            "consecutiveFailures": "many",
            "fromTheFuture": {"x": 1},
        },
        "health": "fine",
        "conditions": [{"type": "Ready"}, 7, {"type": "Available", "status": "True"}],
    }
    before = copy.deepcopy(status)

    assert breaker_view(status) == BreakerView(State.OPEN, None, NOW + 31)
    read = read_status(status)
    assert read.breaker is not None
    assert (read.breaker.state, read.breaker.consecutive_failures) == ("Open", None)
    assert read.health is None
    assert [c.type for c in read.conditions or []] == ["Available"]
    assert status == before  # the caller's object is left alone


@pytest.mark.parametrize("until", ["soon", 1_800_000_031, "2027-13-45T99:00:00Z"])
def test_an_open_until_that_is_not_a_time_ignores_the_breaker_and_says_so(until: object) -> None:
    problems: list[str] = []

    assert breaker_view({"breaker": {"state": "Open", "openUntil": until}}, problems) is None
    assert problems == [
        f"status.breaker.openUntil {until!r} is not an RFC 3339 time; the operator's breaker "
        "state is ignored"
    ]


def test_an_empty_open_until_is_none() -> None:
    view = breaker_view({"breaker": {"state": "HalfOpen", "openUntil": ""}})

    assert view == BreakerView(State.HALF_OPEN, None, None)


def test_a_restart_restores_nothing_from_an_open_until_that_is_not_a_time() -> None:
    status = written(tripped())
    status["breaker"]["openUntil"] = "soon"

    assert snapshot_from_status(status) is None
    status["breaker"].update(state="Closed", lastTransitionTime="yesterday")
    snapshot = snapshot_from_status(status)
    assert snapshot is not None
    assert (snapshot.state, snapshot.last_transition_at, snapshot.trip_count) == (
        State.CLOSED,
        None,
        1,
    )
