"""The circuit breaker state machine: Closed, Open, HalfOpen, and forced overrides.

One instance per upstream, per place that judges it (the operator's cluster breaker, each proxy
replica's local breaker). It never reads a clock: every call takes ``now`` in seconds on any one
clock the caller keeps to (the operator uses wall-clock time so snapshots can be written to
status; a proxy may use its event loop's clock). Time-driven changes (Open -> HalfOpen when
``open_until`` passes, a trial that outlived ``halfOpen.maxDuration``) happen lazily on the next
call that passes ``now``; :meth:`CircuitBreaker.next_deadline` tells a caller when to look.

Request path::

    permit = breaker.admit(now)        # None: rejected (open, held off by a 429, forced open)
    ...                                # the attempt
    breaker.record(permit, outcome, now, duration=ttft_or_total)

Transitions:

- Closed -> Open on ``consecutiveFailures`` failures in a row, a failure rate or slow-call rate
  over the window (with ``minimumRequests``), or ``probeFailures`` failed probes in a row. A
  success resets the consecutive count.
- Open -> HalfOpen when ``open_until`` passes. The open duration grows with each consecutive trip
  (:class:`~sluice.core.policy.Growth`, capped at ``maxOpenDuration``, stretched by jitter) and
  starts from ``openDuration`` again once the breaker has stayed Closed for ``healthyPeriod``.
- HalfOpen admits at most ``halfOpen.maxRequests`` trials per period (an ignored or rate-limited
  trial gives its slot back); ``successThreshold`` successes close it; a failure, or a trial
  running past ``maxDuration``, reopens it with a grown duration. A probe result in HalfOpen is
  a trial result too (the operator's probe is the cluster breaker's trial).
- A forced state (``override``) wins over everything: forced Open admits nothing, forced Closed
  admits everything. The automatic machine keeps counting underneath, so the state is right the
  moment the override is lifted. Only outcomes gathered under the automatic state they were
  admitted in count toward it: results of calls admitted before a trip are not evidence.

Every transition is reported to ``on_transition`` with a reason and a human message.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sluice.core.outcome import Outcome, OutcomeKind
from sluice.core.policy import BreakerPolicy, FailureRate, format_duration
from sluice.core.window import SlidingWindow

__all__ = [
    "ADMITTED",
    "BreakerSnapshot",
    "CircuitBreaker",
    "Permit",
    "Reason",
    "State",
    "Transition",
    "effective_state",
]


class State(StrEnum):
    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


class Reason(StrEnum):
    """Why a transition happened; also the Kubernetes Event reason."""

    CONSECUTIVE_FAILURES = "ConsecutiveFailures"
    FAILURE_RATE = "FailureRate"
    SLOW_CALLS = "SlowCalls"
    PROBE_FAILURES = "ProbeFailures"
    OPEN_ELAPSED = "OpenElapsed"
    TRIAL_SUCCEEDED = "TrialSucceeded"
    TRIAL_FAILED = "TrialFailed"
    TRIAL_TIMED_OUT = "TrialTimedOut"
    FORCED_OPEN = "ForcedOpen"
    FORCED_CLOSED = "ForcedClosed"
    OVERRIDE_LIFTED = "OverrideLifted"
    RESET = "Reset"


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state. For automatic transitions ``from_state``/``to_state`` are the automatic
    states (``forced`` says whether an override hides them); for override changes and resets
    they are the effective states before and after."""

    from_state: State
    to_state: State
    reason: Reason
    message: str
    at: float
    forced: State | None


class Permit:
    """Admission to make one attempt; hand it back to :meth:`CircuitBreaker.record`."""

    __slots__ = ("generation", "started", "trial")

    def __init__(self, *, trial: bool, generation: int, started: float) -> None:
        self.trial = trial
        self.generation = generation
        self.started = started

    def __repr__(self) -> str:
        kind = "trial" if self.trial else "admitted"
        return f"<Permit {kind} gen={self.generation} started={self.started}>"


ADMITTED = Permit(trial=False, generation=-1, started=0.0)
"""The permit for every attempt that is not a HalfOpen trial (shared: no allocation per call)."""


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """What survives a restart (written to status by the operator, read back on start)."""

    state: State  # the automatic state
    forced: State | None
    reason: Reason | None
    message: str
    consecutive_failures: int
    consecutive_probe_failures: int
    trip_count: int
    trip_streak: int
    opened_at: float | None
    open_until: float | None
    last_transition_at: float | None
    closed_since: float | None
    held_until: float | None


_DEFAULT_WINDOW = FailureRate()


def effective_state(override: State | None, *judges: State | None) -> State:
    """The one rule for what callers see: an override wins; otherwise the most cautious of the
    judges' states (any Open is Open, then any HalfOpen); a judge with no view (None) abstains.
    The operator has one judge (its breaker); a proxy replica has the cluster's and its own."""
    if override is not None:
        return override
    if State.OPEN in judges:
        return State.OPEN
    if State.HALF_OPEN in judges:
        return State.HALF_OPEN
    return State.CLOSED


class CircuitBreaker:
    """A circuit breaker for one upstream. Not thread-safe: one event loop owns it."""

    __slots__ = (
        "_closed_since",
        "_consecutive",
        "_failures_since_trip",
        "_forced",
        "_generation",
        "_half_open_successes",
        "_held_until",
        "_in_flight",
        "_last_transition_at",
        "_message",
        "_on_transition",
        "_open_until",
        "_opened_at",
        "_policy",
        "_probe_consecutive",
        "_random",
        "_reason",
        "_state",
        "_streak",
        "_trials_admitted",
        "_trip_count",
        "_window",
    )

    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        now: float,
        on_transition: Callable[[Transition], None] | None = None,
        random: Callable[[], float] = _random.random,  # [0, 1), for jitter
    ) -> None:
        self._policy = policy
        self._on_transition = on_transition
        self._random = random
        self._state = State.CLOSED
        self._forced: State | None = None
        self._reason: Reason | None = None
        self._message = ""
        self._window = SlidingWindow((policy.failure_rate or _DEFAULT_WINDOW).window)
        self._consecutive = 0
        self._probe_consecutive = 0
        self._failures_since_trip = 0  # the failures that opened it, and those since
        self._trip_count = 0
        self._streak = 0
        self._opened_at: float | None = None
        self._open_until: float | None = None
        self._last_transition_at: float | None = None
        self._closed_since: float | None = now
        self._held_until = -math.inf
        self._generation = 0
        self._in_flight: list[Permit] = []
        self._trials_admitted = 0
        self._half_open_successes = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def policy(self) -> BreakerPolicy:
        return self._policy

    @property
    def state(self) -> State:
        """The effective state as of the last call (an override wins); see :meth:`poll`."""
        return self._forced or self._state

    @property
    def automatic_state(self) -> State:
        return self._state

    @property
    def forced(self) -> State | None:
        return self._forced

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    @property
    def consecutive_probe_failures(self) -> int:
        return self._probe_consecutive

    @property
    def failures(self) -> int:
        """Why it is not Closed, in a number: in Closed, the failures in a row (requests or
        probes, whichever is more); since a trip, the failures that tripped it plus every
        failed probe and trial since, until it closes again."""
        if self._state is State.CLOSED:
            return max(self._consecutive, self._probe_consecutive)
        return self._failures_since_trip

    @property
    def trials_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def window_counts(self) -> tuple[int, int, int]:
        """(requests, failures, slow calls) in the failure-rate window as of the last record."""
        return self._window.total, self._window.failures, self._window.slow

    @property
    def open_until(self) -> float | None:
        return self._open_until

    @property
    def held_until(self) -> float | None:
        return None if self._held_until == -math.inf else self._held_until

    def poll(self, now: float) -> State:
        """Apply time-driven transitions due at ``now`` and return the effective state."""
        self._tick(now)
        return self._forced or self._state

    def next_deadline(self) -> float | None:
        """When the next time-driven transition is due, if any (to schedule a :meth:`poll`)."""
        if self._state is State.OPEN:
            return self._open_until
        if self._state is State.HALF_OPEN and self._in_flight:
            return min(p.started for p in self._in_flight) + self._policy.half_open.max_duration
        return None

    def available_in(self, now: float) -> float:
        """Seconds until :meth:`admit` may succeed (0: now; ``inf``: only when an override is
        lifted). For ``Retry-After`` when every candidate is unavailable."""
        self._tick(now)
        if self._forced is State.OPEN:
            return math.inf
        if self._forced is State.CLOSED:
            return 0.0
        wait = 0.0
        if self._state is State.OPEN and self._open_until is not None:
            wait = self._open_until - now
        elif (
            self._state is State.HALF_OPEN
            and self._trials_admitted >= self._policy.half_open.max_requests
        ):
            deadline = self.next_deadline()
            # A full HalfOpen frees up when its trials finish: at the latest, when they expire.
            wait = deadline - now if deadline is not None else 0.0
        return max(wait, self._held_until - now, 0.0)

    # -- the request path ------------------------------------------------------------------

    def admit(self, now: float) -> Permit | None:
        """A permit to try the upstream now, or None when the breaker rejects the attempt."""
        forced = self._forced
        if forced is not None:
            if forced is State.OPEN:
                return None
            self._tick(now)
            return ADMITTED
        if now < self._held_until:
            return None
        if self._state is State.CLOSED:
            return ADMITTED
        self._tick(now)  # Open may turn HalfOpen; nothing here turns it Closed
        if self._state is not State.HALF_OPEN:
            return None
        if self._trials_admitted >= self._policy.half_open.max_requests:
            return None
        self._trials_admitted += 1
        permit = Permit(trial=True, generation=self._generation, started=now)
        self._in_flight.append(permit)
        return permit

    def record(
        self,
        permit: Permit,
        outcome: Outcome,
        now: float,
        *,
        duration: float | None = None,  # time to first token for streams, else total
        tokens_per_second: float | None = None,  # a stream's output rate after its first token
    ) -> None:
        """Record how an admitted attempt ended."""
        kind = outcome.kind
        policy = self._policy
        if kind is OutcomeKind.RATE_LIMITED:
            self._hold_off(outcome, now)
            if not policy.rate_limited_is_failure:
                kind = OutcomeKind.IGNORED
            else:
                kind = OutcomeKind.FAILURE
        if permit.trial:
            self._tick(now)  # a trial that outlived halfOpen.maxDuration failed, whatever it says
            self._record_trial(permit, kind, outcome, now)
            return
        if self._state is not State.CLOSED or kind is OutcomeKind.IGNORED:
            return  # not evidence about the current automatic state
        slow_calls = policy.slow_calls
        slow = slow_calls is not None and slow_calls.is_slow(duration, tokens_per_second)
        if kind is OutcomeKind.SUCCESS:
            self._consecutive = 0
            self._window.add(now, failed=False, slow=slow)
            if slow or self._window.failures:
                self._check_rates(now)
            return
        self._consecutive += 1
        self._window.add(now, failed=True, slow=slow)
        limit = policy.consecutive_failures
        if limit is not None and self._consecutive >= limit:
            self._trip(
                Reason.CONSECUTIVE_FAILURES,
                f"{self._consecutive} consecutive failures, last: {outcome.detail}",
                now,
            )
            return
        self._check_rates(now)

    def record_successes(self, count: int, now: float, *, slow: int = 0) -> None:
        """``count`` successful attempts admitted while Closed (``slow`` of them slow), as
        that many :meth:`record` calls would, in O(1): how the operator takes the successes
        a replica reports (thousands a second). The rates are checked once, after all."""
        if count <= 0 or self._state is not State.CLOSED:
            return
        slow = min(max(slow, 0), count)
        self._consecutive = 0
        if count > slow:
            self._window.add(now, failed=False, slow=False, count=count - slow)
        if slow:
            self._window.add(now, failed=False, slow=True, count=slow)
        if slow or self._window.failures:
            self._check_rates(now)

    def record_probe(self, outcome: Outcome, now: float) -> None:
        """Record an active probe's result (the operator's health check)."""
        self._tick(now)
        kind = outcome.kind
        if kind is OutcomeKind.RATE_LIMITED:
            self._hold_off(outcome, now)
            kind = OutcomeKind.FAILURE if self._policy.rate_limited_is_failure else kind
        if kind not in (OutcomeKind.SUCCESS, OutcomeKind.FAILURE):
            return
        failed = kind is OutcomeKind.FAILURE
        state = self._state
        if state is State.CLOSED:
            if not failed:
                self._probe_consecutive = 0
                return
            self._probe_consecutive += 1
            limit = self._policy.probe_failures
            if limit is not None and self._probe_consecutive >= limit:
                self._trip(
                    Reason.PROBE_FAILURES,
                    f"{self._probe_consecutive} consecutive failed probes, last: {outcome.detail}",
                    now,
                )
        elif state is State.HALF_OPEN:
            if failed:
                self._trip(Reason.TRIAL_FAILED, f"probe failed: {outcome.detail}", now)
            else:
                self._trial_succeeded(now, what="probe")
        elif failed:  # Open: the open period runs its course; a failed probe is still counted
            self._failures_since_trip += 1

    # -- operations ------------------------------------------------------------------------

    def force(self, override: State | None, now: float) -> None:
        """Force Open or Closed (``override``), or return to automatic (None)."""
        if override is State.HALF_OPEN:
            raise ValueError("only Open or Closed can be forced")
        if override is self._forced:
            return
        self._tick(now)
        before = self._forced or self._state
        self._forced = override
        if override is State.OPEN:
            reason, message = Reason.FORCED_OPEN, "forced Open by override"
        elif override is State.CLOSED:
            reason, message = Reason.FORCED_CLOSED, "forced Closed by override"
        else:
            reason = Reason.OVERRIDE_LIFTED
            message = f"override lifted; automatic state is {self._state}"
        self._emit(before, self._forced or self._state, reason, message, now)

    def reset(self, now: float, *, message: str = "reset by request") -> None:
        """Back to Closed with every counter at zero; an override stays in force."""
        before = self._forced or self._state
        self._state = State.CLOSED
        self._clear_counters()
        self._trip_count = 0
        self._streak = 0
        self._opened_at = self._open_until = None
        self._closed_since = now
        self._held_until = -math.inf
        self._new_period()
        self._emit(before, self._forced or self._state, Reason.RESET, message, now)

    def set_policy(self, policy: BreakerPolicy, now: float) -> None:
        """Apply a changed policy, keeping the state (an open period keeps its end)."""
        old_window = (self._policy.failure_rate or _DEFAULT_WINDOW).window
        new_window = (policy.failure_rate or _DEFAULT_WINDOW).window
        self._policy = policy
        if new_window != old_window:
            self._window = SlidingWindow(new_window)
        self._tick(now)

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(
            state=self._state,
            forced=self._forced,
            reason=self._reason,
            message=self._message,
            consecutive_failures=self._consecutive,
            consecutive_probe_failures=self._probe_consecutive,
            trip_count=self._trip_count,
            trip_streak=self._streak,
            opened_at=self._opened_at,
            open_until=self._open_until,
            last_transition_at=self._last_transition_at,
            closed_since=self._closed_since,
            held_until=self.held_until,
        )

    @classmethod
    def restore(
        cls,
        snapshot: BreakerSnapshot,
        policy: BreakerPolicy,
        *,
        now: float,
        on_transition: Callable[[Transition], None] | None = None,
        random: Callable[[], float] = _random.random,
    ) -> CircuitBreaker:
        """A breaker in the state a snapshot describes. Window counts and trials in flight are
        not kept: a restored HalfOpen starts a fresh trial period. Transitions due by ``now``
        (an open period that ended while nobody watched) happen at once and are reported."""
        breaker = cls(policy, now=now, on_transition=on_transition, random=random)
        if snapshot.state is State.OPEN and snapshot.open_until is None:
            raise ValueError("an Open snapshot needs open_until")
        breaker._state = snapshot.state
        breaker._forced = snapshot.forced
        breaker._reason = snapshot.reason
        breaker._message = snapshot.message
        breaker._consecutive = max(0, snapshot.consecutive_failures)
        breaker._probe_consecutive = max(0, snapshot.consecutive_probe_failures)
        breaker._trip_count = max(0, snapshot.trip_count)
        breaker._streak = max(0, snapshot.trip_streak)
        breaker._opened_at = snapshot.opened_at
        breaker._open_until = snapshot.open_until
        breaker._last_transition_at = snapshot.last_transition_at
        breaker._closed_since = snapshot.closed_since
        breaker._held_until = -math.inf if snapshot.held_until is None else snapshot.held_until
        breaker._tick(now)
        return breaker

    # -- internals -------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        state = self._state
        if state is State.OPEN:
            if self._open_until is not None and now >= self._open_until:
                self._half_open(now)
        elif state is State.HALF_OPEN and self._in_flight:
            limit = self._policy.half_open.max_duration
            if any(now - p.started >= limit for p in self._in_flight):
                self._trip(
                    Reason.TRIAL_TIMED_OUT,
                    f"trial did not finish within {format_duration(limit)}",
                    now,
                )

    def _half_open(self, now: float) -> None:
        opened_for = now - self._opened_at if self._opened_at is not None else 0.0
        self._new_period()
        trials = self._policy.half_open.max_requests
        self._set(
            State.HALF_OPEN,
            Reason.OPEN_ELAPSED,
            f"open for {format_duration(opened_for)}; admitting "
            f"{trials} trial{'s' if trials != 1 else ''}",
            now,
        )

    def _record_trial(
        self, permit: Permit, kind: OutcomeKind, outcome: Outcome, now: float
    ) -> None:
        if permit.generation != self._generation or permit not in self._in_flight:
            return  # the period it was admitted in is over (timed out, closed or reopened)
        self._in_flight.remove(permit)
        if kind is OutcomeKind.IGNORED:
            self._trials_admitted -= 1  # not evidence either way: the slot goes back
        elif kind is OutcomeKind.FAILURE:
            self._trip(Reason.TRIAL_FAILED, f"trial failed: {outcome.detail}", now)
        else:
            self._trial_succeeded(now, what="trial")

    def _trial_succeeded(self, now: float, *, what: str) -> None:
        self._half_open_successes += 1
        needed = self._policy.half_open.success_threshold
        if self._half_open_successes < needed:
            return
        self._clear_counters()
        self._open_until = None
        self._closed_since = now
        self._new_period()
        self._set(
            State.CLOSED,
            Reason.TRIAL_SUCCEEDED,
            f"{needed} {what}{'s' if needed != 1 else ''} succeeded; closed",
            now,
        )

    def _check_rates(self, now: float) -> None:
        window = self._window
        policy = self._policy
        rate = policy.failure_rate or _DEFAULT_WINDOW
        total = window.total
        if total < rate.minimum_requests:
            return
        span = format_duration(rate.window)
        if policy.failure_rate is not None and window.failures * 100.0 >= rate.threshold * total:
            self._trip(
                Reason.FAILURE_RATE,
                f"failure rate {window.failures * 100 / total:.0f}% ({window.failures} of "
                f"{total} requests in {span}) reached the {rate.threshold:g}% threshold",
                now,
            )
            return
        slow_calls = policy.slow_calls
        if slow_calls is not None and window.slow * 100.0 >= slow_calls.rate_threshold * total:
            floor = slow_calls.min_output_tokens_per_second
            also = "" if floor is None else f" or streamed under {floor:g} tokens/s"
            self._trip(
                Reason.SLOW_CALLS,
                f"slow calls {window.slow * 100 / total:.0f}% ({window.slow} of {total} "
                f"requests in {span} took {format_duration(slow_calls.duration)} or more{also}) "
                f"reached the {slow_calls.rate_threshold:g}% threshold",
                now,
            )

    def _trip(self, reason: Reason, message: str, now: float) -> None:
        policy = self._policy
        closed_since = self._closed_since
        if (
            self._state is State.CLOSED
            and closed_since is not None
            and now - closed_since >= policy.effective_healthy_period
        ):
            self._streak = 0  # healthy long enough: open durations start over
        duration = policy.open_duration_for(self._streak)
        if policy.jitter:
            duration = min(
                duration * (1.0 + policy.jitter * self._random()), policy.max_open_duration
            )
        if self._state is State.CLOSED:
            self._failures_since_trip = max(self._consecutive, self._probe_consecutive, 1)
        else:  # a failed trial (or probe) reopened it
            self._failures_since_trip += 1
        self._streak += 1
        self._trip_count += 1
        self._opened_at = now
        self._open_until = now + duration
        self._closed_since = None
        self._clear_counters()
        self._new_period()
        self._set(State.OPEN, reason, f"{message}; open for {format_duration(duration)}", now)

    def _hold_off(self, outcome: Outcome, now: float) -> None:
        policy = self._policy
        hold = policy.open_duration
        if policy.respect_retry_after and outcome.retry_after is not None:
            hold = outcome.retry_after
        hold = min(hold, policy.max_open_duration)
        self._held_until = max(self._held_until, now + hold)

    def _clear_counters(self) -> None:
        self._consecutive = 0
        self._probe_consecutive = 0
        self._window.clear()

    def _new_period(self) -> None:
        self._generation += 1
        self._in_flight.clear()
        self._trials_admitted = 0
        self._half_open_successes = 0

    def _set(self, state: State, reason: Reason, message: str, now: float) -> None:
        before = self._state
        self._state = state
        self._emit(before, state, reason, message, now)

    def _emit(self, before: State, after: State, reason: Reason, message: str, now: float) -> None:
        self._reason = reason
        self._message = message
        self._last_transition_at = now
        if self._on_transition is not None:
            self._on_transition(Transition(before, after, reason, message, now, self._forced))
