"""The breaker metrics the operator and the proxy both export (docs/metrics.md).

``sluice_breaker_state`` is one-hot per upstream (1 for the current state, 0 for the others)
and ``sluice_breaker_transitions_total`` counts transitions; ``component`` says whose breaker:
the operator's cluster breaker or a proxy replica's view.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from sluice.core import State, Transition

__all__ = ["BreakerMetrics"]


class BreakerMetrics:
    def __init__(self, registry: CollectorRegistry, component: str) -> None:
        self.component = component
        self.state = Gauge(
            "sluice_breaker_state",
            "Circuit state, one-hot: 1 for the current state of each upstream.",
            ["component", "namespace", "upstream", "state"],
            registry=registry,
        )
        self.transitions = Counter(
            "sluice_breaker_transitions_total",
            "Circuit state transitions.",
            ["component", "namespace", "upstream", "from", "to", "reason"],
            registry=registry,
        )

    def set_state(self, namespace: str, upstream: str, state: State) -> None:
        for name in State:
            self.state.labels(self.component, namespace, upstream, str(name)).set(
                1.0 if name is state else 0.0
            )

    def transition(self, namespace: str, upstream: str, transition: Transition) -> None:
        self.transitions.labels(
            self.component,
            namespace,
            upstream,
            str(transition.from_state),
            str(transition.to_state),
            str(transition.reason),
        ).inc()

    def forget(self, namespace: str, upstream: str) -> None:
        """Drop an upstream's state series when it is deleted."""
        for name in State:
            with contextlib.suppress(KeyError):
                self.state.remove(self.component, namespace, upstream, str(name))
