"""A proxy replica's state: the table it routes by and everything requests share with it.

:class:`Proxy` holds the routing table and the collaborators a request uses (breakers, the
picker and the per-upstream load it reads, the client to upstreams, metrics, the limits and
who may call). Requests receive the pieces they use (see ``handlers``), never the whole.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from sluice.core import Transition
from sluice.proxy.access import ClientKeys, HostAllowlist
from sluice.proxy.accesslog import AccessLog
from sluice.proxy.breakers import Breakers
from sluice.proxy.client import UpstreamClient
from sluice.proxy.history import History
from sluice.proxy.limits import Limits
from sluice.proxy.load import UpstreamLoad
from sluice.proxy.metrics import ProxyMetrics
from sluice.proxy.picking import Picker
from sluice.proxy.quotas import RateLimits
from sluice.proxy.table import Key, Table
from sluice.proxy.usage import UsageLedger

__all__ = ["Proxy"]

log = logging.getLogger("sluice.proxy")


@dataclass
class Proxy:
    """The table, and what every request shares: breakers, picker, client, metrics, limits."""

    table: Table
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)
    admin_token: str | None = None
    access_log: AccessLog | None = None
    limits: Limits = field(default_factory=Limits)
    client_keys: ClientKeys | None = None  # None: no client key is asked for
    allowed_hosts: HostAllowlist = field(default_factory=HostAllowlist)
    # When the table's source last confirmed it reflects its resources (time.monotonic());
    # /readyz fails once that is older than stale_after seconds (None: never stale).
    fresh_at: float = field(default_factory=time.monotonic)
    stale_after: float | None = None
    active_requests: int = 0
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    history: History = field(default_factory=History)  # what the console shows of the past
    rate_limits: RateLimits = field(default_factory=RateLimits)  # this replica's shares
    usage: UsageLedger = field(init=False)  # what it sent, for the operator
    breakers: Breakers = field(init=False)
    load: UpstreamLoad = field(init=False)
    picker: Picker = field(init=False)
    _session: aiohttp.ClientSession | None = None
    _client: UpstreamClient | None = None

    def __post_init__(self) -> None:
        self.breakers = Breakers(on_transition=self._transition, on_record=self.history.attempt)
        self.load = UpstreamLoad(on_change=self._in_flight_moved)
        self.usage = UsageLedger(self.rate_limits)
        self.picker = Picker(
            self.breakers, self.load, self.clock, self.rng, rate_limits=self.rate_limits,
            metrics=self.metrics,
        )  # fmt: skip
        self.metrics.table_age.set_function(self.table_age)
        self.set_table(self.table)

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp's client session, for probes; exists while the app runs (see create_app)."""
        if self._session is None:
            raise RuntimeError("the proxy is not running: no client session")
        return self._session

    @property
    def client(self) -> UpstreamClient:
        """The request path's client to upstreams; exists while the app runs."""
        if self._client is None:
            raise RuntimeError("the proxy is not running: no upstream client")
        return self._client

    def table_age(self) -> float:
        """Seconds since the table's source last confirmed it is current."""
        return time.monotonic() - self.fresh_at

    def set_table(self, table: Table) -> None:
        self.table = table
        if self._client is not None:  # connections to upstreams that are gone
            self._client.prune({t.endpoint for t in table.targets.values()})
        self.breakers.sync(table, self.clock())
        self.history.keep(table.targets)
        self.rate_limits.sync(table)
        self.usage.sync(table)
        self.show_shares()
        for problem in table.problems:
            log.warning("%s", problem)
        for key, breaker in self.breakers.items():
            self.metrics.breakers.set_state(key[0], key[1], breaker.state)
        # Per-route counters start at zero, so the first rejection is a visible increase
        # (a series born at 1 has no rate until it moves again). So do the rate-limit and cost
        # counters of limited Upstreams and priced model entries: the alerts' first skip and
        # the first answer's cost are an increase too.
        metrics = self.metrics
        for entry in table.routes:
            metrics.rejections.labels(entry.label)
            metrics.failovers.labels(entry.label)
            metrics.limit_rejections.labels(entry.label)
        for (namespace, name), target in table.targets.items():
            if target.requests_per_minute is not None or target.tokens_per_minute is not None:
                metrics.limit_skips.labels(namespace, name)
            for model in target.spec.models:
                if model.cost.input_per_1m or model.cost.output_per_1m:
                    metrics.cost.labels(namespace, name, model.name)

    def show_shares(self) -> None:
        """The rate-limit share gauges, after the table or the leader's answer moved them."""
        gauge = self.metrics.limit_share
        for (namespace, name), allowance in self.rate_limits.items():
            for limit, share in (("requests", allowance.share_requests),
                                 ("tokens", allowance.share_tokens)):  # fmt: skip
                if share is not None:
                    self.metrics.child(gauge, namespace, name, limit).set(share)

    def _in_flight_moved(self, key: Key, change: int) -> None:
        self.metrics.child(self.metrics.in_flight, key[0], key[1]).inc(change)

    def _transition(self, key: Key, transition: Transition) -> None:
        self.history.transition(key, transition)
        self.metrics.breakers.transition(key[0], key[1], transition)
        self.metrics.breakers.set_state(key[0], key[1], self.breakers.get(key).state)
        log.info(
            "breaker %s/%s: %s -> %s (%s): %s",
            key[0],
            key[1],
            transition.from_state,
            transition.to_state,
            transition.reason,
            transition.message,
        )
