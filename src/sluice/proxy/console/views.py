"""What the console's pages show, read from the snapshots /health reads: the table, each
breaker's effective state, the load, this replica's history and, in cluster mode, status.

Reading never changes what requests see: the routes page orders candidates with copies of
the round-robin cursors and the random source, and takes no permit from any breaker.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.core import BreakerPolicy, State, Transition, format_duration
from sluice.proxy.codecs import codec_for
from sluice.proxy.console.cluster import ClusterView, EventLine
from sluice.proxy.picking import order
from sluice.proxy.state import Proxy
from sluice.proxy.table import Candidate, Key, RouteEntry, Target

__all__ = [
    "API",
    "Candidacy",
    "Change",
    "RouteView",
    "Row",
    "clock_text",
    "css_of",
    "policy_rows",
    "routes",
    "routes_of",
    "row",
    "rows",
    "timeline",
]

API = "/v1/chat/completions"  # the routes page shows the order for Chat Completions
_CSS = {State.CLOSED: "closed", State.OPEN: "open", State.HALF_OPEN: "half-open"}


def css_of(state: State) -> str:
    return _CSS[state]


def clock_text(at: float | None) -> str:
    """A wall-clock time as the person on call reads it (UTC, to the second)."""
    return "—" if at is None else time.strftime("%H:%M:%S", time.gmtime(at)) + " UTC"


@dataclass(frozen=True)
class Row:
    """One upstream on the upstreams page."""

    namespace: str
    name: str
    provider: str
    state: State
    forced: bool
    failures: int
    availability: str
    p95: str
    figures_from: str  # where availability and p95 come from
    in_flight: int
    per_minute: str
    last_at: str
    last_reason: str
    last_message: str

    @property
    def css(self) -> str:
        return css_of(self.state)


def _health(status: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """The operator's probe figures from status.health (availability in percent, p95 in ms),
    read leniently."""
    health = status.get("health") if isinstance(status, Mapping) else None
    if not isinstance(health, Mapping):
        return None, None
    availability = health.get("availability")
    latency = health.get("latencyMs")
    p95 = latency.get("p95") if isinstance(latency, Mapping) else None
    number = (int, float)
    return (
        float(availability) if isinstance(availability, number) else None,
        float(p95) if isinstance(p95, number) else None,
    )


def row(proxy: Proxy, target: Target, cluster: ClusterView | None, now: float) -> Row:
    key = target.key
    state = proxy.breakers.effective_state(target, now)
    summary = proxy.history.summary(key, now)
    probed, probe_p95 = _health(cluster.status(key) if cluster else None)
    if probed is not None:
        availability, p95 = f"{probed:g}%", "—" if probe_p95 is None else f"{probe_p95:g} ms"
        source = "the operator's probes (status.health)"
    else:
        share = summary.availability
        availability = "—" if share is None else f"{share * 100:.0f}%"
        p95 = "—" if summary.p95_ms is None else f"≤ {summary.p95_ms:g} ms"
        source = "this replica's attempts, last 5 minutes"
    changes = proxy.history.changes(key)
    last = changes[0] if changes else None
    return Row(
        key.namespace, key.name, target.spec.provider, state, target.override is not None,
        proxy.breakers.get(key).failures, availability, p95, source, proxy.load.in_flight(key),
        f"{summary.per_minute:.0f}", clock_text(last.at if last else None),
        str(last.reason) if last else "", last.message if last else "",
    )  # fmt: skip


def rows(proxy: Proxy, cluster: ClusterView | None, state: str | None = None) -> list[Row]:
    """Every upstream in the table, by namespace and name; ``state``: only those in it."""
    now = proxy.clock()
    found = [row(proxy, t, cluster, now) for _, t in sorted(proxy.table.targets.items())]
    return [r for r in found if not state or str(r.state) == state]


@dataclass(frozen=True)
class Change:
    """One line of an upstream's timeline."""

    at: float | None
    source: str  # "this replica", or the Event's reporting component
    reason: str
    text: str
    warning: bool


def _change(transition: Transition) -> Change:
    text = f"{transition.from_state} → {transition.to_state}: {transition.message}"
    return Change(transition.at, "this replica", str(transition.reason), text,
                  transition.to_state is State.OPEN)  # fmt: skip


def timeline(changes: Sequence[Transition], events: Sequence[EventLine]) -> list[Change]:
    """This replica's transitions and the Upstream's Events, newest first."""
    merged = [_change(t) for t in changes]
    merged += [Change(e.at, e.component, e.reason, e.message, e.warning) for e in events]
    return sorted(merged, key=lambda c: c.at or 0.0, reverse=True)


def policy_rows(policy: BreakerPolicy) -> list[tuple[str, str]]:
    """The policy in force, flattened to (field, value) in the manifest's words where they
    are durations."""
    flat: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(f"{prefix}{f.name}.", getattr(value, f.name))
            return
        name = prefix.rstrip(".")
        if isinstance(value, frozenset):
            value = _ranges(sorted(value))
        elif isinstance(value, float) and name.endswith(("duration", "period", "window")):
            value = format_duration(value)
        flat.append((name, "off" if value is None else str(value)))

    walk("", policy)
    return flat


def _ranges(numbers: list[int]) -> str:
    """``408, 500-599`` rather than a hundred numbers."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


@dataclass(frozen=True)
class Candidacy:
    """One candidate of a route, as a request would meet it now."""

    target: Target
    model: str
    state: State
    skipped: str | None  # why it would be passed over; None: it would be tried

    @property
    def css(self) -> str:
        return css_of(self.state)


@dataclass(frozen=True)
class RouteView:
    label: str
    model: str
    strategy: str
    candidates: list[Candidacy]


def _skipped(proxy: Proxy, target: Target, state: State) -> str | None:
    """Why Plan.picks would pass ``target`` over, without asking it for a permit."""
    if codec_for(API, target) is None:
        return f"does not speak {API}"
    limit = target.max_concurrent
    if limit is not None and proxy.load.in_flight(target.key) >= limit:
        return f"busy: {limit} in flight (limits.maxConcurrent)"
    if target.override is State.OPEN:
        return "forced open (spec.breaker.override)"
    if state is State.OPEN:
        until = proxy.breakers.available_in(target, proxy.clock())
        return f"circuit open; may be tried in {format_duration(max(until, 0.0))}"
    if state is State.HALF_OPEN:
        return "half-open: only a trial request goes through"
    return None


def _route_view(proxy: Proxy, label: str, model: str, strategy: str) -> RouteView:
    picker = proxy.picker
    round_robin, rng = copy.deepcopy(picker.round_robin), copy.deepcopy(picker.rng)

    def ordered(route: RouteEntry | None, found: list[Candidate]) -> list[Candidate]:
        return order(route, found, proxy.load, round_robin, rng)

    now = proxy.clock()
    candidacies = []
    for candidate in proxy.table.resolve(model, order=ordered).candidates:
        state = proxy.breakers.effective_state(candidate.target, now)
        skipped = _skipped(proxy, candidate.target, state)
        candidacies.append(Candidacy(candidate.target, candidate.model, state, skipped))
    return RouteView(label, model, strategy, candidacies)


def routes(proxy: Proxy) -> list[RouteView]:
    """Each ModelRoute (by its first model), then each model no route serves (implicit)."""
    table = proxy.table
    views = [_route_view(proxy, r.label, r.spec.models[0], str(r.strategy)) for r in table.routes]
    implicit = [m for m in table.models() if table.route_for(m) is None]
    views += [_route_view(proxy, f"implicit:{m}", m, "Cheapest (no ModelRoute)") for m in implicit]
    return views


def routes_of(views: Sequence[RouteView], key: Key) -> list[RouteView]:
    """The routes that may send ``key`` a request."""
    return [v for v in views if any(c.target.key == key for c in v.candidates)]
