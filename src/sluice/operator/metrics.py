"""The operator's Prometheus metrics (listed in docs/metrics.md), in a registry of its own."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluice.core import State, Transition

__all__ = ["OperatorMetrics"]

_STATES = tuple(str(s) for s in State)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.probes = Counter(
            "sluice_probes_total",
            "Active probes by result (success, failure, rate_limited, ignored).",
            ["namespace", "upstream", "result"],
            registry=self.registry,
        )
        self.probe_duration = Histogram(
            "sluice_probe_duration_seconds",
            "Duration of active probes.",
            ["namespace", "upstream"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.state = Gauge(
            "sluice_breaker_state",
            "Circuit state, one-hot: 1 for the current state of each upstream.",
            ["component", "namespace", "upstream", "state"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "sluice_breaker_transitions_total",
            "Circuit state transitions.",
            ["component", "namespace", "upstream", "from", "to", "reason"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "sluice_operator_status_writes_total",
            "Status patches sent to the API server.",
            ["namespace"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "sluice_operator_leader",
            "1 while this replica holds the leader Lease and does the work.",
            registry=self.registry,
        )
        self.upstreams = Gauge(
            "sluice_operator_upstreams",
            "Upstreams this operator is managing.",
            registry=self.registry,
        )

    def set_state(self, namespace: str, upstream: str, state: State) -> None:
        for name in _STATES:
            self.state.labels("operator", namespace, upstream, name).set(
                1.0 if name == state else 0.0
            )

    def transition(self, namespace: str, upstream: str, transition: Transition) -> None:
        self.transitions.labels(
            "operator",
            namespace,
            upstream,
            str(transition.from_state),
            str(transition.to_state),
            str(transition.reason),
        ).inc()

    def forget(self, namespace: str, upstream: str) -> None:
        """Drop an upstream's series when it is deleted."""
        for name in _STATES:
            with contextlib.suppress(KeyError):
                self.state.remove("operator", namespace, upstream, name)
