"""The proxy's Prometheus metrics (listed in docs/metrics.md), in a registry of its own.

Labels stay low-cardinality: ``route`` is a ModelRoute's namespace/name (``implicit:<model>``
for a model served without one, only ever a configured model), ``upstream`` an Upstream's name,
``code`` the HTTP status the client got.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluice.breaker_metrics import BreakerMetrics

__all__ = ["ProxyMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sluice_requests_total",
            "Client requests by route and the HTTP status returned.",
            ["route", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "sluice_request_duration_seconds",
            "Time from request to the last byte of the response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.attempts = Counter(
            "sluice_attempts_total",
            "Attempts at upstreams by outcome (success, failure, rate_limited, ignored).",
            ["namespace", "upstream", "outcome"],
            registry=self.registry,
        )
        self.failovers = Counter(
            "sluice_failovers_total",
            "Times a request moved on to another upstream after a failed attempt.",
            ["route"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "sluice_circuit_rejections_total",
            "Requests answered 503 circuit_open without contacting any upstream.",
            ["route"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "sluice_time_to_first_token_seconds",
            "Time from sending an attempt to its first response byte, by upstream.",
            ["namespace", "upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "sluice_tokens_total",
            "Tokens reported by upstreams (usage), by model and kind (input, output).",
            ["namespace", "upstream", "model", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "sluice_cost_total",
            "What answers cost at their Upstream model entries' prices (spec.models[].cost).",
            ["namespace", "upstream", "model"],
            registry=self.registry,
        )
        self.limit_skips = Counter(
            "sluice_rate_limit_skips_total",
            "Times an upstream was passed over because its rate limit (this replica's share, or "
            "the provider's own headers) had no room for the request.",
            ["namespace", "upstream"],
            registry=self.registry,
        )
        self.limit_rejections = Counter(
            "sluice_rate_limit_rejections_total",
            "Requests answered 429 rate_limited: every candidate at its limit, none contacted.",
            ["route"],
            registry=self.registry,
        )
        self.limit_share = Gauge(
            "sluice_rate_limit_share",
            "This replica's share of an Upstream's limit per minute (limit: requests, tokens).",
            ["namespace", "upstream", "limit"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "sluice_upstream_in_flight",
            "Attempts in progress per upstream.",
            ["namespace", "upstream"],
            registry=self.registry,
        )
        self.table_age = Gauge(
            "sluice_table_age_seconds",
            "Seconds since the routing table's source (the cluster watch, the manifest files) "
            "last confirmed it current; /readyz fails past --stale-after.",
            registry=self.registry,
        )
        self.report_failures = Counter(
            "sluice_report_failures_total",
            "Reports to the operator leader that were lost (refused, timed out, unreachable); "
            "their counts are dropped, never a request.",
            registry=self.registry,
        )
        self.operator_reachable = Gauge(
            "sluice_operator_reachable",
            "1 while the operator leader answers this replica's reports; 0: fail-static on the "
            "last shares and the local breakers.",
            registry=self.registry,
        )
        self.breakers = BreakerMetrics(self.registry, "proxy")
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: the request path asks for the same few
        series over and over, and prometheus_client validates and locks on every call."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
