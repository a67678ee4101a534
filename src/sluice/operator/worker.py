"""One Upstream's life in the operator: probes, the cluster breaker, status and Events.

A worker is an asyncio task per Upstream. It wakes when its probe is due, when the breaker has
a time-driven transition due (``next_deadline``), or when the resource or its policy changed,
and then writes status only if something a user sees changed (``sluice.operator.status``).
Everything the Kubernetes API is asked goes through ``Context.kube``; everything it knows of
other resources comes from the ``PolicyBook``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pydantic

from sluice.core import (
    BreakerPolicy,
    CircuitBreaker,
    PolicyError,
    State,
    Transition,
    effective_state,
)
from sluice.core.folding import UsageMinute, attempts, feed_breaker
from sluice.core.policy import parse_duration
from sluice.core.reports import UpstreamUsage
from sluice.kube import Kube, KubeError, NotFound
from sluice.operator.health import ProbeHistory, ProbeRecord
from sluice.operator.metrics import OperatorMetrics
from sluice.operator.status import (
    HEALTH_REFRESH_SECONDS,
    USAGE_REFRESH_SECONDS,
    Readiness,
    build_status,
    health_moved,
    snapshot_from_status,
    usage_moved,
    visible,
)
from sluice.probe import probe
from sluice.resources import RESET_ANNOTATION, describe
from sluice.resources.models import (
    API_VERSION,
    GROUP,
    VERSION,
    BreakerPolicySpec,
    Limits,
    UpstreamSpec,
    Usage,
)
from sluice.resources.times import rfc3339

__all__ = ["Context", "PolicyBook", "UpstreamWorker", "WriteBudget"]

log = logging.getLogger("sluice.operator")

BUILT_IN = "(built-in defaults)"
_RETRY_WRITE_SECONDS = 2.0
_MAX_SLEEP_SECONDS = 30.0


@dataclass
class PolicyEntry:
    policy: BreakerPolicy | None
    error: str | None


class PolicyBook:
    """BreakerPolicies by (namespace, name), with the core policy or why there is none."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], PolicyEntry] = {}

    def put(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        try:
            policy = BreakerPolicySpec.model_validate(spec).to_core()
        except pydantic.ValidationError as e:
            self._entries[namespace, name] = PolicyEntry(None, describe(e))
        except PolicyError as e:
            self._entries[namespace, name] = PolicyEntry(None, str(e))
        else:
            self._entries[namespace, name] = PolicyEntry(policy, None)

    def remove(self, namespace: str, name: str) -> None:
        self._entries.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> PolicyEntry | None:
        return self._entries.get((namespace, name))


@dataclass
class WriteBudget:
    """A token bucket shared by every worker for health-only status writes, so noisy latency
    figures can never add up to a write storm, however many Upstreams there are. Writes for
    state changes do not take from it."""

    per_second: float = 1.0
    burst: float = 10.0
    _tokens: float = 10.0
    _last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass
class Context:
    """What every worker shares."""

    kube: Kube
    session: aiohttp.ClientSession
    metrics: OperatorMetrics
    policies: PolicyBook
    identity: str
    default_policy: str = "default"
    clock: Callable[[], float] = time.time
    secret_ttl: float = 60.0
    stagger: Callable[[], float] = field(default=random.random)
    health_writes: WriteBudget = field(default_factory=WriteBudget)


class UpstreamWorker:
    def __init__(self, ctx: Context, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.ctx = ctx
        self.namespace = namespace
        self.name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._body: dict[str, Any] = body
        self._spec: UpstreamSpec | None = None
        self._spec_problem: Readiness | None = None
        self._policy_name = BUILT_IN
        self._policy = BreakerPolicy()
        self._policy_problem: Readiness | None = None
        self._history = ProbeHistory()
        self._api_key: str | None = None
        self._api_key_at = -math.inf
        self._credentials_problem: Readiness | None = None
        self._probe_problem: Readiness | None = None
        self._transitions: list[Transition] = []
        self._last_visible: tuple[Any, ...] | None = None
        self._last_health: dict[str, Any] | None = None
        self._last_health_write = ctx.clock()
        self._next_probe = math.inf
        self._scheduled_for: object = None  # the probe settings _next_probe was computed from
        with contextlib.suppress(pydantic.ValidationError):  # observe() reports it
            self._spec = UpstreamSpec.model_validate(body.get("spec") or {})
        status = body.get("status") or {}
        self._last_reset: str | None = (status.get("breaker") or {}).get("lastReset")
        self._conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        # Status a previous operator wrote counts as written: a restart need not rewrite it.
        with contextlib.suppress(KeyError, TypeError):
            self._last_visible = visible(status)
        self._last_health = status.get("health")
        # Usage from the replicas' reports; until the first one, what status already says.
        self.usage = UsageMinute()
        self._reported = False
        self._last_usage: dict[str, Any] | None = status.get("usage")
        self._last_usage_write = -math.inf
        now = ctx.clock()
        self._resolve_policy()
        snapshot = snapshot_from_status(status)
        if snapshot is None:
            breaker = CircuitBreaker(self._policy, now=now, on_transition=self._on_transition)
        else:
            breaker = CircuitBreaker.restore(
                snapshot, self._policy, now=now, on_transition=self._on_transition
            )
        self.breaker = breaker
        self.observe(body)

    # -- changes from the API server -----------------------------------------------------------

    def observe(self, body: dict[str, Any]) -> None:
        """The Upstream changed (spec, annotations): apply it and wake the worker."""
        self._body = body
        now = self.ctx.clock()
        try:
            self._spec = UpstreamSpec.model_validate(body.get("spec") or {})
            self._spec_problem = None
        except pydantic.ValidationError as e:
            self._spec_problem = Readiness(False, "InvalidSpec", describe(e, under="spec"))
        spec = self._spec
        if spec is not None:
            override = spec.breaker.override
            self.breaker.force(None if override is None else State(override), now)
            if spec.probe is None:
                self._next_probe = math.inf
            elif spec.probe != self._scheduled_for:
                interval = parse_duration(spec.probe.interval, field="probe.interval")
                # Spread first probes over one interval so a restart is not a thundering herd.
                self._next_probe = now + interval * self.ctx.stagger()
            self._scheduled_for = spec.probe
        token = ((body.get("metadata") or {}).get("annotations") or {}).get(RESET_ANNOTATION)
        if token and token != self._last_reset:
            self._last_reset = token
            self.breaker.reset(now, message=f"reset by annotation {RESET_ANNOTATION}={token}")
        if self._resolve_policy():
            self.breaker.set_policy(self._policy, now)
        self._wake.set()

    def policies_changed(self) -> None:
        if self._resolve_policy():
            self.breaker.set_policy(self._policy, self.ctx.clock())
        self._wake.set()

    def _resolve_policy(self) -> bool:
        """Find the policy in force; True if it changed (the caller applies it)."""
        spec = self._spec
        ref = spec.breaker.policy_ref.name if spec is not None and spec.breaker.policy_ref else None
        name = ref or self.ctx.default_policy
        entry = self.ctx.policies.get(self.namespace, name)
        if entry is None and ref is None:
            policy, policy_name, problem = BreakerPolicy(), BUILT_IN, None
        elif entry is None:
            policy, policy_name = self._policy, self._policy_name
            problem = Readiness(
                False,
                "PolicyNotFound",
                f'BreakerPolicy "{ref}" not found; keeping {self._policy_name}',
            )
        elif entry.policy is None:
            policy, policy_name = self._policy, self._policy_name
            problem = Readiness(
                False,
                "InvalidPolicy",
                f'BreakerPolicy "{name}" is invalid ({entry.error}); keeping {self._policy_name}',
            )
        else:
            policy, policy_name, problem = entry.policy, name, None
        self._policy_problem = problem
        self._policy_name = policy_name
        changed = policy != self._policy
        self._policy = policy
        return changed

    @property
    def limits(self) -> Limits | None:
        return None if self._spec is None else self._spec.limits

    def take_report(self, usage: UpstreamUsage, now: float, *, source: str) -> None:
        """What a proxy replica (``source``) saw: evidence for the cluster breaker, and usage.
        A transition wakes the worker at once, so the trip is written and reaches every
        replica through the watch without waiting for anything else."""
        before = len(self._transitions)
        probed = self._spec is not None and self._spec.probe is not None
        feed_breaker(self.breaker, usage, now, source=source, probed=probed)
        self.usage.add(
            now,
            requests=attempts(usage),
            tokens=usage.input_tokens + usage.output_tokens,
            cost=usage.cost,
        )
        first = not self._reported
        self._reported = True
        if first or len(self._transitions) != before:
            self._wake.set()

    def _usage(self, now: float) -> Usage | None:
        """status.usage as of now: the last minute of reports, all replicas together."""
        if not self._reported:
            return None if self._last_usage is None else Usage.model_validate(self._last_usage)
        requests, tokens, cost = self.usage.totals(now)
        return Usage(
            requests_per_minute=requests,
            tokens_per_minute=tokens,
            cost_per_hour=round(cost * 60, 6),
        )

    # -- the task ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"upstream {self.namespace}/{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.ctx.metrics.breakers.forget(self.namespace, self.name)

    async def _run(self) -> None:
        while True:
            try:
                retry = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the worker alive; the next step tries again
                log.exception("upstream %s/%s: step failed", self.namespace, self.name)
                retry = True
            now = self.ctx.clock()
            wake_at = min(self._next_probe, self.breaker.next_deadline() or math.inf)
            if retry:
                wake_at = min(wake_at, now + _RETRY_WRITE_SECONDS)
            if self._reported:  # usage moves with time too: look at it now and then
                wake_at = min(wake_at, now + USAGE_REFRESH_SECONDS)
            delay = min(max(wake_at - now, 0.0), _MAX_SLEEP_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()

    async def _step(self) -> bool:
        """Probe if due, apply time, post Events, write status. True: retry soon."""
        spec = self._spec
        if spec is not None and spec.probe is not None and self.ctx.clock() >= self._next_probe:
            await self._probe(spec)
            interval = parse_duration(spec.probe.interval, field="probe.interval")
            self._next_probe = self.ctx.clock() + interval
        self.breaker.poll(self.ctx.clock())
        self.ctx.metrics.breakers.set_state(self.namespace, self.name, self.breaker.state)
        await self._post_events()
        return not await self._write_status()

    async def _probe(self, spec: UpstreamSpec) -> None:
        api_key = await self._credentials(spec)
        result = await probe(self.ctx.session, spec, api_key=api_key, policy=self._policy)
        now = self.ctx.clock()
        self._history.add(ProbeRecord(now, result.ok, result.latency_ms, result.code, result.error))
        self.ctx.metrics.probes.labels(self.namespace, self.name, str(result.outcome.kind)).inc()
        self.ctx.metrics.probe_duration.labels(self.namespace, self.name).observe(
            result.latency_ms / 1000
        )
        if result.code in (401, 403):
            self._probe_problem = Readiness(
                False,
                "ProbeUnauthorized",
                f"the upstream answered the probe with HTTP {result.code}: check the credentials",
            )
            self._api_key_at = -math.inf  # read the Secret again next time
        else:
            self._probe_problem = None
        self.breaker.record_probe(result.outcome, now)

    async def _credentials(self, spec: UpstreamSpec) -> str | None:
        if spec.credentials is None:
            self._credentials_problem = None
            return None
        ref = spec.credentials.secret_ref
        now = self.ctx.clock()
        if now - self._api_key_at < self.ctx.secret_ttl:
            return self._api_key
        try:
            self._api_key = await self.ctx.kube.secret_value(self.namespace, ref.name, ref.key)
        except KubeError as e:
            reason = "SecretNotFound" if isinstance(e, NotFound) else "SecretUnreadable"
            self._credentials_problem = Readiness(
                False, reason, f'credentials secret "{ref.name}" key "{ref.key}": {e}'
            )
        else:
            self._credentials_problem = None
            self._api_key_at = now
        return self._api_key

    # -- output ------------------------------------------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        self._transitions.append(transition)
        self.ctx.metrics.breakers.transition(self.namespace, self.name, transition)

    async def _post_events(self) -> None:
        pending, self._transitions = self._transitions, []
        metadata = self._body.get("metadata") or {}
        for transition in pending:
            note = ""
            if transition.forced is not None and not str(transition.reason).startswith(
                ("Forced", "OverrideLifted")
            ):
                note = f" (automatic state; override {transition.forced} is in force)"
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
                "involvedObject": {
                    "apiVersion": API_VERSION,
                    "kind": "Upstream",
                    "name": self.name,
                    "namespace": self.namespace,
                    "uid": metadata.get("uid"),
                    "resourceVersion": metadata.get("resourceVersion"),
                },
                "reason": str(transition.reason),
                "message": f"{transition.from_state} -> {transition.to_state}: "
                f"{transition.message}{note}",
                "type": "Warning" if transition.to_state is State.OPEN else "Normal",
                "firstTimestamp": rfc3339(transition.at),
                "lastTimestamp": rfc3339(transition.at),
                "count": 1,
                "source": {"component": "sluice-operator"},
                "reportingComponent": "sluice.dev/operator",
                "reportingInstance": self.ctx.identity,
            }
            try:
                await self.ctx.kube.create_event(self.namespace, event)
            except KubeError as e:
                log.warning(
                    "upstream %s/%s: could not post an Event: %s", self.namespace, self.name, e
                )

    def readiness(self) -> Readiness:
        for problem in (
            self._spec_problem,
            self._policy_problem,
            self._credentials_problem,
            self._probe_problem,
        ):
            if problem is not None:
                return problem
        probe_settings = self._spec.probe if self._spec is not None else None
        probing = (
            f"probing every {probe_settings.interval}"
            if probe_settings is not None
            else "not probed (no probe block)"
        )
        return Readiness(True, "Ready", f"policy {self._policy_name}; {probing}")

    def _status(self, now: float) -> dict[str, Any]:
        snapshot = self.breaker.snapshot()
        return build_status(
            snapshot=snapshot,
            effective=effective_state(snapshot.forced, snapshot.state),
            policy_name=self._policy_name,
            last_reset=self._last_reset,
            history=self._history,
            readiness=self.readiness(),
            generation=(self._body.get("metadata") or {}).get("generation"),
            previous_conditions=self._conditions,
            now=now,
            usage=self._usage(now),
        )

    def _not_worth_writing(self, status: dict[str, Any], now: float) -> bool:
        """Nothing a user sees changed, and the health figures are not due (or the shared
        budget has no write for them now)."""
        if visible(status) != self._last_visible:
            return False
        usage_due = usage_moved(self._last_usage, status["usage"]) and (
            self._last_usage is None or now - self._last_usage_write >= USAGE_REFRESH_SECONDS
        )
        if usage_due and (self._last_usage is None or self.ctx.health_writes.take(now)):
            return False
        first_figures = (self._last_health or {}).get("availability") is None and (
            status["health"]["availability"] is not None
        )
        health_due = health_moved(self._last_health, status["health"]) and (
            first_figures or now - self._last_health_write >= HEALTH_REFRESH_SECONDS
        )
        return not (health_due and (first_figures or self.ctx.health_writes.take(now)))

    async def _write_status(self) -> bool:
        """Patch status if a user would see a difference. False: the write failed."""
        now = self.ctx.clock()
        status = self._status(now)
        if self._not_worth_writing(status, now):
            return True
        try:
            await self.ctx.kube.patch_status(
                GROUP, VERSION, "upstreams", namespace=self.namespace, name=self.name, status=status
            )
        except NotFound:  # deleted; the DELETED event stops this worker
            return True
        except KubeError as e:
            log.warning("upstream %s/%s: status write failed: %s", self.namespace, self.name, e)
            return False
        self.ctx.metrics.status_writes.labels(self.namespace).inc()
        self._last_visible = visible(status)
        self._last_health = status["health"]
        self._last_health_write = now
        if status["usage"] != self._last_usage:
            self._last_usage, self._last_usage_write = status["usage"], now
        self._conditions = status["conditions"]
        return True
