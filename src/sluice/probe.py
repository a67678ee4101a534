"""Active probes: one cheap request to an upstream, classified by the breaker core.

Shared by the operator (the cluster breaker) and the standalone proxy (its in-process breakers).

By default a probe is ``GET {baseURL}/models`` with the provider's auth header; ``probe.method:
POST`` sends a one-token chat completion to the first model instead (for servers whose model
list says nothing about health). The API key never leaves this module except in the request,
and that request is the only one: redirects are never followed (aiohttp would carry the auth
header to wherever the ``Location`` points, another host or plain http included), so a 3xx
is a failed probe unless ``expectStatus`` lists it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from sluice.core import (
    BreakerPolicy,
    ErrorKind,
    Outcome,
    OutcomeKind,
    classify_error,
    classify_status,
)
from sluice.core.policy import parse_duration
from sluice.providers import provider
from sluice.resources.models import UpstreamSpec

__all__ = ["ProbeResult", "error_kind", "probe"]

USER_AGENT = "sluice-operator"


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    latency_ms: float
    code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.outcome.kind is OutcomeKind.SUCCESS


def error_kind(error: BaseException) -> ErrorKind:
    """The breaker's name for a transport error from aiohttp."""
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return ErrorKind.DNS
    if isinstance(error, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return ErrorKind.TLS
    if isinstance(error, aiohttp.ClientConnectorError):
        return ErrorKind.CONNECT_REFUSED
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return ErrorKind.CONNECT_RESET
    if isinstance(error, TimeoutError):
        return ErrorKind.TOTAL_TIMEOUT
    return ErrorKind.PROTOCOL


async def probe(
    session: aiohttp.ClientSession,
    spec: UpstreamSpec,
    *,
    api_key: str | None,
    policy: BreakerPolicy,
) -> ProbeResult:
    """Probe once; never raises for anything the upstream does."""
    settings = spec.probe
    if settings is None:
        raise ValueError("only upstreams with a probe block are probed")
    url = spec.base_url.rstrip("/") + settings.path
    speaks = provider(spec.provider, spec.base_url)
    headers = {"User-Agent": USER_AGENT, **dict(speaks.auth_headers(api_key))}
    params = speaks.probe_params(spec.api_version) or None
    body = None
    if settings.method == "POST":
        first = spec.models[0]
        body = {
            "model": first.upstream_model or first.name,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
        }
    timeout = aiohttp.ClientTimeout(total=parse_duration(settings.timeout, field="probe.timeout"))
    started = time.perf_counter()
    try:
        async with session.request(
            settings.method,
            url,
            headers=headers,
            params=params,
            json=body,
            timeout=timeout,
            allow_redirects=False,  # the key goes to baseURL and nowhere else
        ) as response:
            await response.read()
            latency = (time.perf_counter() - started) * 1000
            status = response.status
            if status in settings.expect_status:
                return ProbeResult(
                    Outcome(OutcomeKind.SUCCESS, f"HTTP {status}", status=status),
                    latency,
                    status,
                    None,
                )
            outcome = classify_status(
                status, policy, retry_after=speaks.retry_after(response.headers), now=time.time()
            )
            if outcome.kind is OutcomeKind.SUCCESS:  # a 2xx or 3xx that was not asked for
                expected = ", ".join(map(str, settings.expect_status))
                outcome = Outcome(
                    OutcomeKind.FAILURE, f"HTTP {status} (expected {expected})", status=status
                )
            return ProbeResult(outcome, latency, status, outcome.detail)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        latency = (time.perf_counter() - started) * 1000
        outcome = classify_error(error_kind(e), type(e).__name__)
        return ProbeResult(outcome, latency, None, outcome.detail)
