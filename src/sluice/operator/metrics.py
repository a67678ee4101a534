"""The operator's Prometheus metrics (listed in docs/metrics.md), in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluice.breaker_metrics import BreakerMetrics

__all__ = ["OperatorMetrics"]


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
        self.reports = Counter(
            "sluice_operator_reports_total",
            "Proxy replicas' reports by result (accepted, not_leader, invalid, unauthenticated, "
            "forbidden, unavailable).",
            ["result"],
            registry=self.registry,
        )
        self.breakers = BreakerMetrics(self.registry, "operator")
