"""The proxy's routing table: the resources compiled once into what the request path uses.
Pure data.

Built the same way from manifests on disk and from a Kubernetes watch (the proxy's small
config contract, as Envoy AI Gateway's filterapi is for its data plane): no Kubernetes types,
no I/O. Building it compiles each spec once (as Envoy AI Gateway's ``NewRuntimeConfig`` does):
a :class:`Target` carries its endpoint, headers, provider and timeouts in seconds; a
:class:`RouteEntry` its strategy and ``whenAllOpen`` as enums, its retry plan and sticky rule.
Nothing on the request path parses a spec string. :meth:`Table.resolve` turns a requested
model into its candidates; ordering them is the picker's (``sluice.proxy.picking``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sluice.core import BreakerPolicy, PolicyError, State, parse_duration
from sluice.providers import Provider, provider
from sluice.proxy.endpoint import Endpoint
from sluice.resources.models import (
    BreakerPolicy as BreakerPolicyResource,
)
from sluice.resources.models import (
    ModelRoute,
    ModelRouteSpec,
    Ref,
    Retry,
    Upstream,
    UpstreamSpec,
)
from sluice.resources.models import (
    Timeouts as TimeoutsSpec,
)
from sluice.resources.status import breaker_view

__all__ = [
    "FORWARDED",
    "STATIC_ORDERS",
    "Candidate",
    "Key",
    "Order",
    "Resolved",
    "RetryPlan",
    "RouteEntry",
    "StickyRule",
    "Strategy",
    "Table",
    "Target",
    "Timeouts",
    "WhenAllOpen",
    "build_table",
]

Key = tuple[str, str]  # (namespace, name); a Ref is one, with names
PLAN_CACHE_SIZE = 10_000

# Client headers passed on to every upstream; an Upstream adds its own (spec.forwardHeaders).
# Everything else stays at the proxy: the client's credentials, hop-by-hop and framing headers
# (the proxy frames its own request), Expect (an upstream's 100 Continue is not the answer),
# and headers such as OpenAI-Organization that would let a client choose whom the gateway's key
# bills. An allowlist, because a denylist misses the next such header.
FORWARDED = ("accept", "user-agent")


class Strategy(StrEnum):
    PRIORITY = "Priority"
    WEIGHTED = "Weighted"
    ROUND_ROBIN = "RoundRobin"
    LEAST_LATENCY = "LeastLatency"
    CHEAPEST = "Cheapest"
    LEAST_BUSY = "LeastBusy"


# Strategies whose order depends on the table alone (priorities, costs): a route's candidates
# are ordered once, when its model's plan is made, not on every request (see Table.resolve).
STATIC_ORDERS = frozenset({Strategy.PRIORITY, Strategy.CHEAPEST})


class WhenAllOpen(StrEnum):
    FAIL_FAST = "FailFast"
    TRY_ANYWAY = "TryAnyway"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """An Upstream's per-attempt timeouts, in seconds."""

    connect: float
    first_token: float
    total: float
    stream_idle: float

    @classmethod
    def of(cls, spec: TimeoutsSpec) -> Timeouts:
        return cls(
            parse_duration(spec.connect),
            parse_duration(spec.first_token),
            parse_duration(spec.total),
            parse_duration(spec.stream_idle),
        )


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """A route's retry budget: attempts in all, the back-off between rounds, the per-try cap."""

    max_attempts: int
    backoff_initial: float
    backoff_max: float
    per_try_timeout: float | None

    @classmethod
    def of(cls, spec: Retry) -> RetryPlan:
        per_try = spec.per_try_timeout
        return cls(
            spec.max_attempts,
            parse_duration(spec.backoff.initial),
            parse_duration(spec.backoff.max),
            None if per_try is None else parse_duration(per_try),
        )

    def backoff(self, round_: int) -> float:
        """The pause before round ``round_`` (1 for the second): initial x 2^(round-1), capped."""
        return float(min(self.backoff_initial * 2 ** (round_ - 1), self.backoff_max))


# A model served without a ModelRoute: the resource's own defaults, no second copy here.
IMPLICIT_RETRY = RetryPlan.of(Retry())


@dataclass(frozen=True, slots=True)
class StickyRule:
    header: str
    ttl: float  # seconds


@dataclass(frozen=True)
class Target:
    """One upstream as the proxy uses it."""

    key: Ref
    spec: UpstreamSpec
    api_key: str | None = field(repr=False)  # never in a log line or a repr
    policy: BreakerPolicy
    policy_name: str
    cluster_state: State | None = None  # from status (Kubernetes mode): the operator's breaker
    cluster_open_until: float | None = None
    # Compiled from the above once (see __post_init__).
    override: State | None = field(init=False)
    provider: Provider = field(init=False)
    endpoint: Endpoint = field(init=False)
    headers: tuple[tuple[str, str], ...] = field(init=False, repr=False)  # with the key
    forwarded: tuple[str, ...] = field(init=False)  # client headers passed on (lower case)
    forwarded_prefixes: tuple[str, ...] = field(init=False)  # ... and those starting so
    timeouts: Timeouts = field(init=False)
    max_concurrent: int | None = field(init=False)
    requests_per_minute: int | None = field(init=False)  # for all replicas together
    tokens_per_minute: int | None = field(init=False)

    def __post_init__(self) -> None:
        spec, set_ = self.spec, object.__setattr__  # frozen: compiled fields set once, here
        override = spec.breaker.override
        set_(self, "key", Ref(*self.key))
        set_(self, "override", None if override is None else State(override))
        set_(self, "provider", provider(spec.provider, spec.base_url))
        set_(self, "endpoint", Endpoint.parse(spec.base_url))
        fixed = (("Content-Type", "application/json"), ("Accept-Encoding", "identity"))
        set_(self, "headers", fixed + self.provider.auth_headers(self.api_key))
        names = [h.lower() for h in spec.forward_headers]
        exact = tuple(h for h in names if not h.endswith("*") and h not in FORWARDED)
        set_(self, "forwarded", FORWARDED + exact)
        set_(self, "forwarded_prefixes", tuple(h[:-1] for h in names if h.endswith("*")))
        set_(self, "timeouts", Timeouts.of(spec.timeouts))
        limits = spec.limits
        set_(self, "max_concurrent", limits.max_concurrent if limits else None)
        set_(self, "requests_per_minute", limits.requests_per_minute if limits else None)
        set_(self, "tokens_per_minute", limits.tokens_per_minute if limits else None)

    @property
    def name(self) -> str:
        return self.key[1]

    def serves(self, model: str) -> str | None:
        """The upstream's name for ``model``, if it lists it."""
        for entry in self.spec.models:
            if entry.name == model:
                return entry.upstream_model or entry.name
        return None

    def max_tokens(self, model: str) -> int | None:
        """The model entry's maxTokens (Anthropic's required max_tokens), if it sets one."""
        for entry in self.spec.models:
            if entry.name == model:
                return entry.max_tokens
        return None

    def priced(self, requested: str, sent: str) -> tuple[str, float, float]:
        """The model entry an answer came from, as metrics name it, and its prices of a
        million input and output tokens: the entry listing ``requested``, else the one whose
        upstream name is ``sent`` (a route target's ``model``), else ``other`` at no price
        (a glob route's client-made name must never become a label)."""
        found = None
        for entry in self.spec.models:
            if entry.name == requested:
                found = entry
                break
            if found is None and (entry.upstream_model or entry.name) == sent:
                found = entry
        if found is None:
            return "other", 0.0, 0.0
        return found.name, found.cost.input_per_1m, found.cost.output_per_1m

    def cost(self, model: str) -> float:
        for entry in self.spec.models:
            if entry.name == model:
                return entry.cost.input_per_1m + entry.cost.output_per_1m
        return float("inf")


@dataclass(frozen=True)
class RouteEntry:
    key: Ref
    spec: ModelRouteSpec
    # Compiled from the spec once.
    strategy: Strategy = field(init=False)
    when_all_open: WhenAllOpen = field(init=False)
    retry: RetryPlan = field(init=False)
    sticky: StickyRule | None = field(init=False)

    def __post_init__(self) -> None:
        spec, set_ = self.spec, object.__setattr__
        set_(self, "key", Ref(*self.key))
        set_(self, "strategy", Strategy(spec.strategy))
        set_(self, "when_all_open", WhenAllOpen(spec.when_all_open))
        set_(self, "retry", RetryPlan.of(spec.retry))
        sticky = spec.sticky_session
        rule = None if sticky is None else StickyRule(sticky.header, parse_duration(sticky.ttl))
        set_(self, "sticky", rule)

    @property
    def label(self) -> str:
        """The route's name in metrics and logs: namespace/name."""
        return f"{self.key[0]}/{self.key[1]}"

    def matches(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.spec.models)

    def exact(self, model: str) -> bool:
        return model in self.spec.models


@dataclass(frozen=True)
class Candidate:
    target: Target
    model: str  # the name sent upstream
    requested: str  # the client-facing model this candidate serves (differs for fallbacks)
    priority: int
    weight: int


@dataclass(frozen=True)
class Resolved:
    """A request's route: a label for logs and metrics, and its candidates in order. Read
    only: a plan whose order is fixed gives the same one (and list) to every request."""

    route: str
    candidates: list[Candidate]
    entry: RouteEntry | None


# A model's route label, its route, and its candidates in groups, each with the route that
# orders it per request (None: in order already); and, when no group is ordered per request,
# the Resolved itself (see Table.resolve).
_Groups = list[tuple[RouteEntry | None, tuple[Candidate, ...]]]
_Plan = tuple[str, RouteEntry | None, _Groups, Resolved | None]
# The picker's ordering of a route's candidates (picking.order, with what it reads).
Order = Callable[[RouteEntry | None, list[Candidate]], list[Candidate]]


@dataclass
class Table:
    targets: dict[Key, Target] = field(default_factory=dict)
    routes: list[RouteEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Upstreams' labels, for routes' upstreamSelector.
    labels: dict[Key, Mapping[str, str]] = field(default_factory=dict)
    _plans: dict[str, _Plan] = field(default_factory=dict, repr=False, compare=False)

    def models(self) -> list[str]:
        """Client-facing model names: every model an upstream lists, and exact route names."""
        names = {m.name for t in self.targets.values() for m in t.spec.models}
        names.update(
            p for r in self.routes for p in r.spec.models if not any(c in p for c in "*?[")
        )
        return sorted(names)

    def route_for(self, model: str) -> RouteEntry | None:
        exact = [r for r in self.routes if r.exact(model)]
        if exact:
            return exact[0]
        globbed = [r for r in self.routes if r.matches(model)]
        # The most specific pattern wins: the longest one that matched.
        globbed.sort(
            key=lambda r: -max(len(p) for p in r.spec.models if fnmatch.fnmatchcase(model, p))
        )
        return globbed[0] if globbed else None

    def resolve(self, model: str, *, order: Order) -> Resolved:
        """Candidates for ``model``: its route's targets (ordered by ``order``), then those of
        its fallback models; without a route, every upstream listing it, cheapest first.

        Which routes and targets serve a model is worked out once per model and table (a
        table is never changed once built), and so is the order of a route whose strategy
        reads only the table (STATIC_ORDERS): only the other orderings run per request. A
        plan with none of those gives the same Resolved every time (never to be changed)."""
        plan = self._plans.get(model)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE_SIZE:  # model names come from clients: bounded
                self._plans.clear()
            plan = self._plans[model] = self._plan(model, order)
        route, entry, groups, fixed = plan
        if fixed is not None:
            return fixed
        candidates: list[Candidate] = []
        for group_route, group in groups:
            candidates.extend(order(group_route, list(group)) if group_route else group)
        return Resolved(route=route, candidates=candidates, entry=entry)

    def _plan(self, model: str, order: Order) -> _Plan:
        """The route label, the route, and groups of candidates in the order resolve() tries
        them: a route's group is ordered per request, or here once (STATIC_ORDERS)."""
        entry = self.route_for(model)
        if entry is None:
            return self._implicit(model)
        groups: _Groups = []
        seen_models = {model}
        queue: list[tuple[str, RouteEntry]] = [(model, entry)]
        while queue:
            requested, route = queue.pop(0)
            group = self._targets_of(route, requested)
            if route.strategy in STATIC_ORDERS:
                groups.append((None, tuple(order(route, group))))
            else:
                groups.append((route, tuple(group)))
            for fallback in route.spec.fallback_models or ():
                if fallback in seen_models:
                    continue  # a cycle through several routes: each model is tried once
                seen_models.add(fallback)
                fallback_route = self.route_for(fallback)
                if fallback_route is not None:
                    queue.append((fallback, fallback_route))
                else:
                    groups.extend(self._plan(fallback, order)[2])
        return _fixed(f"{entry.key[0]}/{entry.key[1]}", entry, groups)

    def _implicit(self, model: str) -> _Plan:
        """A model without a route: every upstream listing it, cheapest first."""
        listed = [
            Candidate(t, served, model, t.spec.priority, t.spec.weight)
            for t in self.targets.values()
            if (served := t.serves(model)) is not None
        ]
        listed.sort(key=lambda c: (c.target.cost(model), c.priority, c.target.key))
        if not listed:
            return _fixed("none", None, [])
        return _fixed(f"implicit:{model}", None, [(None, tuple(listed))])

    def _targets_of(self, route: RouteEntry, requested: str) -> list[Candidate]:
        namespace = route.key[0]
        found: list[Candidate] = []
        for target_spec in route.spec.targets:
            if target_spec.upstream is not None:
                matched: Iterable[Target] = [
                    t for k, t in self.targets.items() if k == (namespace, target_spec.upstream)
                ]
            else:
                labels = (
                    target_spec.upstream_selector.match_labels
                    if target_spec.upstream_selector
                    else {}
                )
                matched = [
                    t
                    for k, t in sorted(self.targets.items())
                    if k[0] == namespace and _labels_match(self.labels.get(k, {}), labels)
                ]
            for target in matched:
                upstream_model = target_spec.model or target.serves(requested) or requested
                found.append(
                    Candidate(
                        target,
                        upstream_model,
                        requested,
                        target.spec.priority
                        if target_spec.priority is None
                        else target_spec.priority,
                        target.spec.weight if target_spec.weight is None else target_spec.weight,
                    )
                )
        return found


def _fixed(route: str, entry: RouteEntry | None, groups: _Groups) -> _Plan:
    """A plan, with its Resolved made once if no group of it is ordered per request."""
    if any(group_route is not None for group_route, _ in groups):
        return route, entry, groups, None
    candidates = [c for _, group in groups for c in group]
    return route, entry, groups, Resolved(route, candidates, entry)


def _labels_match(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def build_table(
    resources: Iterable[Upstream | BreakerPolicyResource | ModelRoute],
    secrets: Mapping[Key, Mapping[str, str]],
    *,
    statuses: Mapping[Key, Mapping[str, Any]] | None = None,
    default_policy: str = "default",
) -> Table:
    """A table from parsed resources, Secrets' data and Upstreams' raw status (Kubernetes
    mode: the operator's breaker); what cannot be used is reported in ``problems`` (naming the
    object and the field) and left out or given defaults."""
    table = Table()
    policies: dict[Key, BreakerPolicy] = {}
    upstreams: list[Upstream] = []
    for resource in resources:
        key = Ref(resource.metadata.namespace or "default", resource.metadata.name)
        if isinstance(resource, BreakerPolicyResource):
            try:
                policies[key] = resource.spec.to_core()
            except PolicyError as e:
                table.problems.append(f"BreakerPolicy {key}: {e}")
        elif isinstance(resource, Upstream):
            upstreams.append(resource)
        else:
            table.routes.append(RouteEntry(key, resource.spec))
    for upstream in upstreams:
        key = Ref(upstream.metadata.namespace or "default", upstream.metadata.name)
        policy, policy_name = _policy(key, upstream.spec, policies, default_policy, table.problems)
        api_key = _api_key(key, upstream.spec, secrets, table.problems)
        cluster_state, open_until = _cluster_state((statuses or {}).get(key))
        table.targets[key] = Target(
            key, upstream.spec, api_key, policy, policy_name, cluster_state, open_until
        )
        table.labels[key] = dict(upstream.metadata.labels)
    table.routes.sort(key=lambda r: r.key)
    table.problems.extend(_fallback_cycles(table))
    return table


def _policy(
    key: Ref,
    spec: UpstreamSpec,
    policies: Mapping[Key, BreakerPolicy],
    default_policy: str,
    problems: list[str],
) -> tuple[BreakerPolicy, str]:
    """The Upstream's BreakerPolicy and its name: the one it names, else the default one,
    else the built-in defaults (a named one that is missing is a problem)."""
    ref = spec.breaker.policy_ref.name if spec.breaker.policy_ref else None
    name = ref or default_policy
    policy = policies.get((key.namespace, name))
    if policy is not None:
        return policy, name
    if ref is not None:
        problems.append(
            f'Upstream {key}: BreakerPolicy "{ref}" not found; using the built-in defaults'
        )
    return BreakerPolicy(), "(built-in defaults)"


def _api_key(
    key: Ref, spec: UpstreamSpec, secrets: Mapping[Key, Mapping[str, str]], problems: list[str]
) -> str | None:
    """The Upstream's API key from its credentials Secret (None, and a problem, if missing)."""
    if spec.credentials is None:
        return None
    ref = spec.credentials.secret_ref
    data = secrets.get((key.namespace, ref.name))
    if data is None or ref.key not in data:
        problems.append(
            f'Upstream {key}: credentials secret "{ref.name}" key "{ref.key}" not found'
        )
        return None
    value = data[ref.key].strip()
    if any(c in value for c in "\r\n"):  # `echo key | base64` leaves a newline: trimmed above
        problems.append(
            f'Upstream {key}: credentials secret "{ref.name}" key "{ref.key}" contains a line '
            "break; it is not used"
        )
        return None
    return value


def _fallback_cycles(table: Table) -> list[str]:
    """Cycles through several routes' fallbackModels (a route naming its own models is
    refused by the API server). At run time each model is tried once, so a cycle cannot loop,
    but it is almost certainly a mistake: report it."""
    problems: list[str] = []
    reported: set[frozenset[str]] = set()
    for entry in table.routes:
        for start in entry.spec.models:
            path = [start]
            route: RouteEntry | None = entry
            while route is not None:
                nxt = next((f for f in route.spec.fallback_models or () if f not in path[1:]), None)
                if nxt is None:
                    break
                if nxt == start:
                    cycle = frozenset(path)
                    if cycle not in reported:
                        reported.add(cycle)
                        problems.append(
                            f"ModelRoute {entry.key[0]}/{entry.key[1]}: fallbackModels form a "
                            f"cycle ({' -> '.join([*path, start])}); each model is tried once"
                        )
                    break
                path.append(nxt)
                route = table.route_for(nxt)
    return problems


def _cluster_state(status: Mapping[str, Any] | None) -> tuple[State | None, float | None]:
    """The operator's breaker (what its evidence says, whatever the override) and its open
    period's end, read leniently from status (resources.status)."""
    view = breaker_view(status)
    return (None, None) if view is None else (view.automatic, view.open_until)
