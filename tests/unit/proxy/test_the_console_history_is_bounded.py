"""The console's history of each upstream: the recent past in fixed memory, summed up the way
the upstreams page shows it."""

from __future__ import annotations

from sluice.core import Outcome, OutcomeKind, Reason, State, Transition
from sluice.proxy.history import CHANGES, MINUTES, History

KEY = ("default", "primary")
SUCCESS = Outcome(OutcomeKind.SUCCESS, "ok", status=200)
FAILURE = Outcome(OutcomeKind.FAILURE, "HTTP 503", status=503)
IGNORED = Outcome(OutcomeKind.IGNORED, "client went away")
T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the start of a minute


def _transition(at: float) -> Transition:
    return Transition(State.CLOSED, State.OPEN, Reason.CONSECUTIVE_FAILURES, "3 in a row", at, None)


def test_only_the_last_transitions_are_kept_newest_first() -> None:
    history = History()
    for i in range(CHANGES + 20):
        history.transition(KEY, _transition(T0 + i))
    changes = history.changes(KEY)
    assert len(changes) == CHANGES
    assert changes[0].at == T0 + CHANGES + 19
    assert changes[-1].at == T0 + 20


def test_only_the_last_minutes_are_kept_and_empty_minutes_show_as_zero() -> None:
    history = History()
    for minute in range(MINUTES * 3):
        history.attempt(KEY, SUCCESS, T0 + minute * 60, 0.02)
    history.attempt(KEY, FAILURE, T0 + (MINUTES * 3 + 2) * 60, None)  # two quiet minutes before
    minutes = history.minutes(KEY, T0 + (MINUTES * 3 + 2) * 60)
    assert len(minutes) == MINUTES
    assert [m.total for m in minutes[-4:]] == [1, 0, 0, 1]
    assert minutes[-1].count(OutcomeKind.FAILURE) == 1
    assert len(history._upstreams[KEY].minutes) <= MINUTES


def test_the_summary_counts_the_last_sixty_seconds_and_judges_by_what_was_judged() -> None:
    history = History()
    for _ in range(30):
        history.attempt(KEY, SUCCESS, T0 + 10, 0.02)  # the previous minute
    for _ in range(10):
        history.attempt(KEY, FAILURE, T0 + 70, None)  # this minute
        history.attempt(KEY, IGNORED, T0 + 70, None)
    summary = history.summary(KEY, T0 + 90)  # half of this minute gone
    assert summary.per_minute == 20 + 30 * 0.5
    assert summary.availability == 30 / 40  # ignored attempts say nothing about the upstream
    assert summary.p95_ms == 25  # the bucket that holds 20 ms: at most 25 ms


def test_latency_is_counted_for_successes_only() -> None:
    history = History()
    history.attempt(KEY, FAILURE, T0, 9.0)
    assert history.summary(KEY, T0).p95_ms is None
    assert history.summary(KEY, T0).availability == 0.0


def test_upstreams_that_leave_the_table_are_forgotten() -> None:
    history = History()
    history.attempt(KEY, SUCCESS, T0, 0.01)
    history.transition(("default", "gone"), _transition(T0))
    history.keep([KEY])
    assert history.changes(("default", "gone")) == []
    assert history.summary(KEY, T0).per_minute == 1
