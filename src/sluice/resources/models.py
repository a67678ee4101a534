"""The ``sluice.dev/v1alpha1`` API: Upstream, BreakerPolicy, ModelRoute, as pydantic models.

These models are the one source of the schemas: ``sluice.resources.crds`` turns them into the
CRDs in ``crds/`` (structural schemas, defaults, CEL rules), and the operator, the proxy and
standalone mode parse manifests with them. Field names are the manifests' (camelCase aliases).
Rules the API server cannot check (a cycle through several ModelRoutes) are checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from sluice.core import policy as core_policy

GROUP = "sluice.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Go's duration syntax, which CEL's duration() also reads: 500ms, 2s, 1.5m, 1h30m.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
# A header name, or a prefix ending in * (x-team-*).
HeaderName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}[*]?$", max_length=65)
]

# Headers an Upstream may never ask the proxy to pass on from clients: the client's own
# credentials, what HTTP itself owns (framing, hop-by-hop, the target host), and the headers the
# proxy sets for the provider. A request smuggled through one of these would reach the upstream.
RESERVED_HEADERS = (
    "accept-encoding", "anthropic-version", "api-key", "authorization", "connection",
    "content-encoding", "content-length", "content-type", "cookie", "expect", "host",
    "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "x-api-key",
)  # fmt: skip
_RESERVED_CEL = ", ".join(f"'{h}'" for h in RESERVED_HEADERS)


def _covers_reserved(name: str) -> bool:
    """Whether a forwardHeaders entry (a name, or a prefix ending in *) covers a reserved one."""
    name = name.lower()
    if name.endswith("*"):
        return any(r.startswith(name[:-1]) for r in RESERVED_HEADERS)
    return name in RESERVED_HEADERS


RESET_ANNOTATION = f"{GROUP}/reset"  # a new value resets an Upstream's breaker once


class Ref(NamedTuple):
    """Which object: its namespace and name."""

    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Mapping[str, Any], *, default_namespace: str = "default") -> Ref:
        """The reference of a Kubernetes object as a dict (a missing namespace is
        ``default_namespace``)."""
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") or default_namespace
        return cls(str(namespace), str(metadata.get("name")))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _rule(rule: str, message: str, **extra: str) -> JsonDict:
    """A CEL validation rule (``x-kubernetes-validations``) for the generated CRD."""
    return {"rule": rule, "message": message, **extra}


class Schema(BaseModel):
    """Base: camelCase in manifests, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


# -- BreakerPolicy ---------------------------------------------------------------------------


class FailureRateSpec(Schema):
    """Open when failures are at least `threshold` percent of the requests in `window`."""

    threshold: float = Field(
        50, ge=0, le=100, description="Percent of failed requests that opens; 0 turns this off."
    )
    minimum_requests: int = Field(
        10, ge=1, le=1_000_000, description="Requests the window must hold before the rate counts."
    )
    window: Duration = Field("60s", description="How far back the rate looks (slides in tenths).")


class SlowCallsSpec(Schema):
    """Open when slow calls (time to first token for streams) make up `rateThreshold` percent
    of the failure-rate window."""

    duration: Duration = Field(description="A call this long or longer is slow.")
    rate_threshold: float = Field(80, gt=0, le=100, description="Percent of slow calls that opens.")
    min_output_tokens_per_second: float | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="A stream whose output tokens per second, after its first token, fall "
        "below this is a slow call too.",
    )


class HalfOpenSpec(Schema):
    """How a circuit that has been open tries the upstream again."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.successThreshold) || !has(self.maxRequests) || "
                    "self.successThreshold <= self.maxRequests",
                    "successThreshold must be at most maxRequests: that many trials could "
                    "never succeed",
                    fieldPath=".successThreshold",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    max_requests: int = Field(1, ge=1, le=1000, description="Trials admitted per half-open period.")
    success_threshold: int = Field(1, ge=1, le=1000, description="Successful trials that close.")
    max_duration: Duration = Field("60s", description="A trial running longer has failed.")


class BreakerPolicySpec(Schema):
    """When a circuit opens, how long it stays open, and how it recovers. Counts of 0 turn a
    trigger off."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.maxOpenDuration) || !has(self.openDuration) || "
                    "duration(self.maxOpenDuration) >= duration(self.openDuration)",
                    "maxOpenDuration must not be shorter than openDuration",
                    fieldPath=".maxOpenDuration",
                    reason="FieldValueInvalid",
                ),
                _rule(
                    "!has(self.rateLimitStatuses) || !has(self.failureStatuses) || "
                    "!self.rateLimitStatuses.exists(r, "
                    "self.failureStatuses.exists(s, type(s) == int && s == r))",
                    "a status cannot be both a failure and a rate limit "
                    "(use rateLimitedIsFailure to count 429 toward opening)",
                    fieldPath=".failureStatuses",
                    reason="FieldValueInvalid",
                ),
            ]
        }
    )

    consecutive_failures: int = Field(
        5, ge=0, le=100_000, description="Failed requests in a row that open; 0 turns this off."
    )
    failure_rate: FailureRateSpec = Field(default_factory=FailureRateSpec)
    slow_calls: SlowCallsSpec | None = None
    probe_failures: int = Field(
        3, ge=0, le=100_000, description="Failed probes in a row that open; 0 turns this off."
    )
    open_duration: Duration = Field("30s", description="How long a first trip stays open.")
    max_open_duration: Duration = Field("5m", description="Cap for grown open durations.")
    growth: Literal["Exponential", "Linear", "None"] = Field(
        "Exponential", description="How the open duration grows on consecutive trips."
    )
    jitter: float = Field(
        0.1, ge=0, le=1, description="Open periods are stretched by up to this fraction."
    )
    healthy_period: Duration | None = Field(
        None,
        description="Closed this long, the next trip starts from openDuration again "
        "(default: maxOpenDuration).",
    )
    half_open: HalfOpenSpec = Field(default_factory=HalfOpenSpec)
    failure_statuses: list[int | str] = Field(
        default=["5xx", 408],
        max_length=20,  # bounds the CEL cost of the rule below
        description="HTTP statuses that count as failures: codes (503) or classes (5xx).",
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "self.all(s, type(s) == int ? s >= 100 && s <= 599 : "
                    "string(s) in ['1xx', '2xx', '3xx', '4xx', '5xx'])",
                    "each entry must be an HTTP status number like 503 or a class like 5xx",
                )
            ]
        },
    )
    rate_limit_statuses: list[int] = Field(
        default=[429],
        max_length=10,
        description="Statuses that hold the upstream off for its Retry-After.",
    )
    rate_limited_is_failure: bool = Field(
        False, description="Whether a 429 also counts toward opening."
    )
    respect_retry_after: bool = Field(
        True, description="Hold off for Retry-After; else (or without one) for openDuration."
    )

    def to_core(self) -> core_policy.BreakerPolicy:
        """The core policy; raises :class:`~sluice.core.PolicyError` naming the field."""
        rate = self.failure_rate
        slow = self.slow_calls
        healthy = self.healthy_period
        return core_policy.BreakerPolicy(
            consecutive_failures=self.consecutive_failures or None,
            failure_rate=None
            if rate.threshold == 0
            else core_policy.FailureRate(
                threshold=rate.threshold,
                minimum_requests=rate.minimum_requests,
                window=core_policy.parse_duration(rate.window, field="failureRate.window"),
            ),
            slow_calls=None
            if slow is None
            else core_policy.SlowCalls(
                duration=core_policy.parse_duration(slow.duration, field="slowCalls.duration"),
                rate_threshold=slow.rate_threshold,
                min_output_tokens_per_second=slow.min_output_tokens_per_second,
            ),
            probe_failures=self.probe_failures or None,
            open_duration=core_policy.parse_duration(self.open_duration, field="openDuration"),
            max_open_duration=core_policy.parse_duration(
                self.max_open_duration, field="maxOpenDuration"
            ),
            growth=core_policy.Growth(self.growth),
            jitter=self.jitter,
            healthy_period=None
            if healthy is None
            else core_policy.parse_duration(healthy, field="healthyPeriod"),
            half_open=core_policy.HalfOpen(
                max_requests=self.half_open.max_requests,
                success_threshold=self.half_open.success_threshold,
                max_duration=core_policy.parse_duration(
                    self.half_open.max_duration, field="halfOpen.maxDuration"
                ),
            ),
            failure_statuses=core_policy.parse_status_set(
                list(self.failure_statuses), field="failureStatuses"
            ),
            rate_limit_statuses=frozenset(self.rate_limit_statuses),
            rate_limited_is_failure=self.rate_limited_is_failure,
            respect_retry_after=self.respect_retry_after,
        )


# -- Upstream --------------------------------------------------------------------------------


class SecretKeyRef(Schema):
    """A key of a Secret in the Upstream's namespace."""

    name: Name = Field(description="The Secret's name.")
    key: str = Field("apiKey", min_length=1, max_length=253, description="The key in the Secret.")


class Credentials(Schema):
    """Where the API key comes from. Keys are only ever read from Secrets."""

    secret_ref: SecretKeyRef


class Cost(Schema):
    """Price per million tokens, in any one currency used across Upstreams."""

    input_per_1m: float = Field(0, ge=0, description="Price of a million input tokens.")
    output_per_1m: float = Field(0, ge=0, description="Price of a million output tokens.")


class UpstreamModel(Schema):
    """A model this upstream serves."""

    name: Name = Field(description="The model name clients ask for.")
    upstream_model: str | None = Field(
        None, max_length=253, description="The name the upstream knows it by (default: name)."
    )
    cost: Cost = Field(default_factory=Cost)
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Anthropic only: the max_tokens sent when a request sets none (Anthropic "
        "requires it; default 4096).",
    )


class Timeouts(Schema):
    """Per-attempt timeouts."""

    connect: Duration = Field("5s", description="To establish the connection.")
    first_token: Duration = Field("60s", description="To the response headers / first chunk.")
    total: Duration = Field("10m", description="For the whole attempt.")
    stream_idle: Duration = Field("60s", description="Between two chunks of a stream.")


class Limits(Schema):
    """Ceilings above which the upstream is skipped rather than overloaded."""

    tokens_per_minute: int | None = Field(None, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)


class Probe(Schema):
    """The active health check. Without a probe block the upstream is never probed."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.timeout) || !has(self.interval) || "
                    "duration(self.timeout) <= duration(self.interval)",
                    "probe timeout must not be longer than the interval",
                    fieldPath=".timeout",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    interval: Duration = Field("10s", description="Time between probes.")
    timeout: Duration = Field("5s", description="A probe taking longer has failed.")
    method: Literal["GET", "POST"] = Field("GET", description="HTTP method of the probe.")
    path: str = Field(
        "/models",
        pattern=r"^/",
        max_length=1024,
        description="Path under baseURL (GET /models by default; POST sends a 1-token chat).",
    )
    expect_status: list[int] = Field(
        default=[200],
        min_length=1,
        max_length=20,
        description="Statuses that count as a healthy probe.",
    )


class PolicyRef(Schema):
    name: Name = Field(description="A BreakerPolicy in the same namespace.")


class BreakerSettings(Schema):
    """Which policy judges this upstream, and an optional forced state."""

    policy_ref: PolicyRef | None = Field(
        None, description="The BreakerPolicy to use (default: the one named 'default', if any)."
    )
    override: Literal["Open", "Closed"] | None = Field(
        None, description="Force the circuit Open or Closed; remove to return to automatic."
    )


class UpstreamSpec(Schema):
    """One provider endpoint: where it is, what it serves, how it is judged."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.apiVersion) || self.provider == 'azure-openai'",
                    "apiVersion is Azure OpenAI's api-version; only provider azure-openai takes it",
                    fieldPath=".apiVersion",
                    reason="FieldValueForbidden",
                ),
                _rule(
                    "self.provider == 'anthropic' || !self.models.exists(m, has(m.maxTokens))",
                    "models[].maxTokens is the max_tokens Anthropic requires; only provider "
                    "anthropic takes it",
                    fieldPath=".models",
                    reason="FieldValueForbidden",
                ),
            ]
        }
    )

    provider: Literal["openai", "anthropic", "azure-openai", "openai-compatible"] = Field(
        description="The API the upstream speaks."
    )
    base_url: str = Field(
        alias="baseURL",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        max_length=2048,
        description="The API's base URL, e.g. https://api.openai.com/v1.",
    )
    api_version: str | None = Field(
        None,
        alias="apiVersion",
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$",
        description="Azure OpenAI's api-version for the classic deployment paths (default "
        "2024-10-21); not used with a baseURL ending in /openai/v1 (the v1 API).",
    )
    credentials: Credentials | None = None
    models: list[UpstreamModel] = Field(
        min_length=1,
        max_length=1000,
        description="The models it serves.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    weight: int = Field(100, ge=0, le=10_000, description="Share for weighted strategies.")
    priority: int = Field(0, ge=0, le=1000, description="Lower is tried first (Priority).")
    timeouts: Timeouts = Field(default_factory=Timeouts)
    limits: Limits | None = None
    probe: Probe | None = None
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    forward_headers: list[HeaderName] = Field(
        default_factory=list,
        max_length=20,  # bounds the CEL cost of the rule below
        description="Client request headers passed on to this upstream besides Accept and "
        "User-Agent (e.g. openai-beta, anthropic-beta), case-insensitive; a name ending in * is "
        "a prefix (x-team-*). Every other client header stays at the proxy.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "self.all(h, h.endsWith('*') ? ![" + _RESERVED_CEL + "].exists(r, "
                    "r.startsWith(h.lowerAscii().substring(0, size(h) - 1))) : "
                    "!(h.lowerAscii() in [" + _RESERVED_CEL + "]))",
                    "forwardHeaders cannot name credentials, hop-by-hop or framing headers, "
                    "nor the ones the proxy sets (" + ", ".join(RESERVED_HEADERS) + ")",
                )
            ]
        },
    )

    @model_validator(mode="after")
    def _provider_fields(self) -> UpstreamSpec:
        if self.api_version is not None and self.provider != "azure-openai":
            raise ValueError(
                "apiVersion is Azure OpenAI's api-version; only provider azure-openai takes it"
            )
        if self.provider != "anthropic" and any(m.max_tokens for m in self.models):
            raise ValueError(
                "models[].maxTokens is the max_tokens Anthropic requires; only provider "
                "anthropic takes it"
            )
        return self

    @field_validator("forward_headers")
    @classmethod
    def _no_reserved_headers(cls, names: list[str]) -> list[str]:
        reserved = sorted({n for n in names if _covers_reserved(n)})
        if reserved:
            raise ValueError(
                f"forwardHeaders cannot name {', '.join(reserved)}: credentials, hop-by-hop "
                "and framing headers, and the ones the proxy sets, are never passed on"
            )
        return names


class ProbeResult(Schema):
    at: str | None = None
    ok: bool | None = None
    latency_ms: float | None = None
    code: int | None = None
    error: str | None = None


class LatencyMs(Schema):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Health(Schema):
    availability: float | None = Field(None, description="Percent of good probes, recently.")
    latency_ms: LatencyMs | None = None
    last_probe: ProbeResult | None = None


class BreakerStatus(Schema):
    state: Literal["Closed", "Open", "HalfOpen"] | None = None
    reason: str | None = None
    message: str | None = None
    consecutive_failures: int | None = None
    opened_at: str | None = None
    open_until: str | None = None
    trip_count: int | None = None
    trip_streak: int | None = None
    last_transition_time: str | None = None
    forced: bool | None = Field(None, description="Whether spec.breaker.override is in force.")
    automatic_state: Literal["Closed", "Open", "HalfOpen"] | None = Field(
        None, description="Under an override: the state the evidence says."
    )
    policy: str | None = Field(None, description="The BreakerPolicy in force.")
    last_reset: str | None = Field(
        None, description="The sluice.dev/reset annotation value last acted on."
    )


class Condition(Schema):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


# Written by the operator when a figure moves by a tenth, or to or from zero.
class Usage(Schema):
    """All proxy replicas' traffic to this Upstream over the last minute, as they reported it."""

    requests_per_minute: int | None = Field(None, description="Attempts, all replicas.")
    tokens_per_minute: int | None = Field(None, description="Input and output tokens.")
    cost_per_hour: float | None = Field(
        None, description="The last minute's cost at the model entries' prices, times 60."
    )


class UpstreamStatus(Schema):
    observed_generation: int | None = None
    breaker: BreakerStatus | None = None
    health: Health | None = None
    usage: Usage | None = None
    conditions: list[Condition] | None = Field(
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


# -- ModelRoute ------------------------------------------------------------------------------


class LabelSelector(Schema):
    match_labels: dict[str, str] = Field(description="Upstreams with all these labels.")


class RouteTarget(Schema):
    """One upstream (or a set, by labels) that can serve the route."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "has(self.upstream) != has(self.upstreamSelector)",
                    "set exactly one of upstream or upstreamSelector",
                )
            ]
        }
    )

    upstream: Name | None = Field(None, description="An Upstream in the same namespace.")
    upstream_selector: LabelSelector | None = None
    model: str | None = Field(
        None, max_length=253, description="The upstream model to use (default: the asked name)."
    )
    priority: int | None = Field(None, ge=0, le=1000, description="Overrides the Upstream's.")
    weight: int | None = Field(None, ge=0, le=10_000, description="Overrides the Upstream's.")


class Backoff(Schema):
    initial: Duration = Field("100ms")
    max: Duration = Field("2s")


class Retry(Schema):
    max_attempts: int = Field(3, ge=1, le=10, description="Attempts in all, across upstreams.")
    backoff: Backoff = Field(default_factory=Backoff)
    per_try_timeout: Duration | None = Field(None, description="Caps each attempt's total time.")


class StickySession(Schema):
    header: str = Field(min_length=1, max_length=256, description="Request header to stick by.")
    ttl: Duration = Field("10m")


class ModelRouteSpec(Schema):
    """How client-facing model names map to upstreams."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.fallbackModels) || !self.fallbackModels.exists(f, f in self.models)",
                    "fallbackModels must not name the route's own models (a cycle)",
                    fieldPath=".fallbackModels",
                    reason="FieldValueInvalid",
                )
            ]
        }
    )

    models: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] = Field(
        min_length=1, max_length=100, description="Model names or globs (gpt-4o*) it serves."
    )
    targets: list[RouteTarget] = Field(min_length=1, max_length=100)
    strategy: Literal[
        "Priority", "Weighted", "RoundRobin", "LeastLatency", "Cheapest", "LeastBusy"
    ] = Field("Priority", description="How available targets are ordered.")
    fallback_models: list[str] | None = Field(
        None, max_length=20, description="Models tried when no target is available."
    )
    retry: Retry = Field(default_factory=Retry)
    sticky_session: StickySession | None = None
    when_all_open: Literal["FailFast", "TryAnyway"] = Field(
        "FailFast", description="With every circuit open: 503 at once, or try anyway."
    )


# -- Objects ---------------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The few metadata fields Sluice reads; the rest passes through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    namespace: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    api_version: Literal["sluice.dev/v1alpha1"] = Field(alias="apiVersion")
    metadata: ObjectMeta


class BreakerPolicy(Resource):
    kind: Literal["BreakerPolicy"]
    spec: BreakerPolicySpec = Field(default_factory=BreakerPolicySpec)


class Upstream(Resource):
    kind: Literal["Upstream"]
    spec: UpstreamSpec
    status: UpstreamStatus | None = None


class ModelRoute(Resource):
    kind: Literal["ModelRoute"]
    spec: ModelRouteSpec


KINDS: dict[str, type[Resource]] = {
    "BreakerPolicy": BreakerPolicy,
    "Upstream": Upstream,
    "ModelRoute": ModelRoute,
}


def parse(document: dict[str, Any]) -> BreakerPolicy | Upstream | ModelRoute:
    """A manifest as a typed resource; raises pydantic's ValidationError naming the field."""
    kind = document.get("kind")
    if document.get("apiVersion") == API_VERSION:
        if kind == "Upstream":
            return Upstream.model_validate(document)
        if kind == "BreakerPolicy":
            return BreakerPolicy.model_validate(document)
        if kind == "ModelRoute":
            return ModelRoute.model_validate(document)
    raise ValueError(
        f"not a Sluice resource: apiVersion {document.get('apiVersion')!r}, kind {kind!r} "
        f"(expected {API_VERSION} {', '.join(KINDS)})"
    )
