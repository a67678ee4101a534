"""Each replica's local breakers, kept in step with the routing table, and the admission rule.

An attempt goes to an upstream only if every judge allows it: the override from spec wins
(forced Open: never; forced Closed: always); else the cluster's breaker from status (Kubernetes
mode) must be Closed — when it is HalfOpen the operator's probe is the trial; an Upstream
without a probe has no such trial, so each replica sends one request at a time as the trial
(the operator folds their reported outcomes into its HalfOpen) — and the local breaker must
admit it (HalfOpen locally: one trial permit at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sluice.core import CircuitBreaker, Outcome, Permit, State, Transition, effective_state
from sluice.proxy.table import Key, Table, Target

__all__ = ["Breakers"]


class Breakers:
    def __init__(
        self,
        *,
        on_transition: Callable[[Key, Transition], None] | None = None,
        on_record: Callable[[Key, Outcome, float, float | None], None] | None = None,
    ) -> None:
        self._breakers: dict[Key, CircuitBreaker] = {}
        self._on_transition = on_transition
        # (upstream, outcome, now, time to first byte) of every attempt: the console's history.
        self._on_record = on_record
        # The attempt in flight that is this replica's trial of a cluster HalfOpen (no probe).
        self._cluster_trials: dict[Key, Permit] = {}

    def sync(self, table: Table, now: float) -> None:
        """Create, update (policy, override) and drop breakers to match ``table``."""
        for key, target in table.targets.items():
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = CircuitBreaker(target.policy, now=now, on_transition=self._reporter(key))
                self._breakers[key] = breaker
            elif breaker.policy != target.policy:
                breaker.set_policy(target.policy, now)
            breaker.force(target.override, now)
        for key in set(self._breakers) - set(table.targets):
            del self._breakers[key]

    def _reporter(self, key: Key) -> Callable[[Transition], None] | None:
        callback = self._on_transition
        if callback is None:
            return None

        def report(transition: Transition) -> None:
            callback(key, transition)

        return report

    def get(self, key: Key) -> CircuitBreaker:
        return self._breakers[key]

    def items(self) -> list[tuple[Key, CircuitBreaker]]:
        return sorted(self._breakers.items())

    def admit(self, target: Target, now: float) -> Permit | None:
        """A permit, or None: blocked, or the upstream left the table while a request was
        planned from the old one."""
        breaker = self._breakers.get(target.key)
        if breaker is None:
            return None
        if target.override is None and target.cluster_state is State.HALF_OPEN:
            return self._cluster_trial(target, breaker, now)
        if target.override is None and self._cluster_blocks(target, now):
            return None
        return breaker.admit(now)

    def _cluster_trial(self, target: Target, breaker: CircuitBreaker, now: float) -> Permit | None:
        """The cluster's breaker is HalfOpen. With a probe, the probe is its trial: nothing
        is sent. Without one, this replica's requests are the trials, one at a time."""
        if target.spec.probe is not None or target.key in self._cluster_trials:
            return None
        permit = breaker.admit(now)
        if permit is None:
            return None
        if not permit.trial:  # a permit of its own, to know this attempt when it ends
            permit = Permit(trial=False, generation=permit.generation, started=now)
        self._cluster_trials[target.key] = permit
        return permit

    @staticmethod
    def _cluster_blocks(target: Target, now: float) -> bool:
        """The operator's breaker is Open (until openUntil), or HalfOpen: its probe is the
        trial, so proxies send nothing until it closes."""
        state = target.cluster_state
        if state is None or state is State.CLOSED:
            return False
        if state is State.OPEN and target.cluster_open_until is not None:
            return now < target.cluster_open_until
        return True

    def available_in(self, target: Target, now: float) -> float:
        """Seconds until ``admit`` may succeed; for Retry-After."""
        breaker = self._breakers.get(target.key)
        if breaker is None:  # gone from the table
            return math.inf
        local = breaker.available_in(now)
        if target.override is not None or target.cluster_state in (None, State.CLOSED):
            return local
        if target.cluster_state is State.OPEN and target.cluster_open_until is not None:
            return max(local, target.cluster_open_until - now, 0.0)
        return max(local, 1.0)  # cluster HalfOpen: the next probe (or trial) decides

    def record(
        self,
        target: Target,
        permit: Permit,
        outcome: Outcome,
        now: float,
        duration: float | None,
        *,
        tokens_per_second: float | None = None,
    ) -> None:
        if self._cluster_trials.get(target.key) is permit:
            del self._cluster_trials[target.key]
        breaker = self._breakers.get(target.key)
        if breaker is not None:  # the upstream may have been removed mid-request
            breaker.record(permit, outcome, now, duration=duration,
                           tokens_per_second=tokens_per_second)  # fmt: skip
            if self._on_record is not None:
                self._on_record(target.key, outcome, now, duration)

    def effective_state(self, target: Target, now: float) -> State:
        """What this replica makes of the upstream now: the override, else the more cautious
        of the cluster's breaker and its own (core.effective_state, the one rule)."""
        local = self._breakers[target.key].poll(now)
        return effective_state(target.override, target.cluster_state, local)
