"""The report channel's wire format: a replica's :class:`Report` and the leader's
:class:`Answer` as JSON, strictly bounded. Pure.

A report crosses a network from a process the operator did not start, so it is read as
untrusted input: at most :data:`MAX_BODY_BYTES`, at most :data:`MAX_UPSTREAMS` entries, names
as long as Kubernetes allows, counts non-negative integers below :data:`MAX_COUNT`, amounts
finite and non-negative, no duplicate Upstream. A decoding error (:class:`WireError`) names
the field (``upstreams[3].failure: ...``) so a replica's log says what it sent wrong.

Fields are the dataclasses' own names. Zero and absent values are left out when encoding (an
idle Upstream costs a few bytes) and read as their defaults. Unknown keys are ignored rather
than refused: during a rolling upgrade a newer replica may report a field an older leader does
not know, and losing the whole report for it would lose counts that the leader can use.
``"v"`` is the format's version; another number is refused.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from sluice.core.reports import Answer, Report, Share, UpstreamUsage

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_COUNT",
    "MAX_UPSTREAMS",
    "VERSION",
    "WireError",
    "decode_answer",
    "decode_report",
    "encode_answer",
    "encode_report",
]

VERSION = 1
MAX_BODY_BYTES = 1 << 20  # 1 MiB: 200 busy Upstreams take about 40 KiB
MAX_UPSTREAMS = 5000
MAX_NAME = 253  # a DNS subdomain: the longest Kubernetes name
MAX_REPLICA = 253  # a pod name
MAX_ERROR = 512  # a failure's detail, for the trip's message
MAX_MODELS = 64  # cost_by_model entries per Upstream
MAX_MODEL = 256
MAX_COUNT = 10**12  # per field per report: far above any real interval, far below float trouble
MAX_AMOUNT = 1e15
MAX_INTERVAL = 3600.0

_COUNTS = (
    "success",
    "failure",
    "rate_limited",
    "ignored",
    "slow",
    "input_tokens",
    "output_tokens",
    "requests",
    "tokens",
    "wanted_requests",
    "wanted_tokens",
    "window_requests",
    "window_tokens",
)


class WireError(ValueError):
    """A body that is not a valid report or answer; the message names the field."""


# -- encoding -------------------------------------------------------------------------------


def _usage_json(usage: UpstreamUsage) -> dict[str, Any]:
    out: dict[str, Any] = {"namespace": usage.namespace, "name": usage.name}
    for name in _COUNTS:
        value = getattr(usage, name)
        if value:
            out[name] = value
    if usage.cost:
        out["cost"] = usage.cost
    if usage.cost_by_model:
        out["cost_by_model"] = usage.cost_by_model
    if usage.last_error:
        out["last_error"] = usage.last_error[:MAX_ERROR]
    return out


def encode_report(report: Report) -> bytes:
    """The report as JSON; a report the leader would refuse raises :class:`WireError` here,
    so a replica learns of its own bug without a round trip."""
    body = orjson.dumps(
        {
            "v": VERSION,
            "replica": report.replica,
            "interval": report.interval,
            "upstreams": [_usage_json(u) for u in report.upstreams],
        }
    )
    decode_report(body)  # the same bounds both ways; costs about what the leader's check does
    return body


def encode_answer(answer: Answer) -> bytes:
    shares = []
    for share in answer.shares:
        entry: dict[str, Any] = {"namespace": share.namespace, "name": share.name}
        if share.requests_per_minute is not None:
            entry["requests_per_minute"] = share.requests_per_minute
        if share.tokens_per_minute is not None:
            entry["tokens_per_minute"] = share.tokens_per_minute
        shares.append(entry)
    return orjson.dumps(
        {"v": VERSION, "leader": answer.leader, "interval": answer.interval, "shares": shares}
    )


# -- decoding -------------------------------------------------------------------------------


def _object(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise WireError(f"{what}: body of {len(body)} bytes is over {MAX_BODY_BYTES}")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise WireError(f"{what}: not JSON: {e}") from e
    if type(value) is not dict:
        raise WireError(f"{what}: must be a JSON object")
    if value.get("v") != VERSION:
        raise WireError(f"v: must be {VERSION}, got {value.get('v')!r}")
    return value


def _text(value: object, where: str, limit: int, *, empty: bool = False) -> str:
    if type(value) is not str or (not value and not empty):
        raise WireError(f"{where}: must be a non-empty string")
    if len(value) > limit:
        raise WireError(f"{where}: longer than {limit} characters")
    return value


def _count(value: object, where: str) -> int:
    if type(value) is not int or value < 0 or value > MAX_COUNT:
        raise WireError(f"{where}: must be an integer from 0 to {MAX_COUNT}")
    return value


def _amount(value: object, where: str, limit: float = MAX_AMOUNT) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and 0 <= number <= limit:
            return number
    raise WireError(f"{where}: must be a finite number from 0 to {limit:g}")


MIN_INTERVAL = 0.05  # seconds: a report for less would make its per-minute demand absurd


def _interval(value: object, where: str) -> float:
    seconds = _amount(value, where, MAX_INTERVAL)
    if seconds < MIN_INTERVAL:
        raise WireError(f"{where}: must be at least {MIN_INTERVAL:g} seconds")
    return seconds


def _costs(value: object, where: str) -> dict[str, float]:
    if type(value) is not dict:
        raise WireError(f"{where}: must be an object of model name to cost")
    if len(value) > MAX_MODELS:
        raise WireError(f"{where}: more than {MAX_MODELS} models")
    return {
        _text(model, f"{where} key", MAX_MODEL): _amount(cost, f"{where}[{model!r}]")
        for model, cost in value.items()
    }


def _usage(value: object, where: str) -> UpstreamUsage:
    if type(value) is not dict:
        raise WireError(f"{where}: must be an object")
    fields: dict[str, Any] = {
        name: _count(value[name], f"{where}.{name}") for name in _COUNTS if name in value
    }
    if fields.get("slow", 0) > fields.get("success", 0) + fields.get("failure", 0):
        raise WireError(f"{where}.slow: more than success + failure")
    if "cost" in value:
        fields["cost"] = _amount(value["cost"], f"{where}.cost")
    if "cost_by_model" in value:
        fields["cost_by_model"] = _costs(value["cost_by_model"], f"{where}.cost_by_model")
    error = value.get("last_error")
    if error is not None:
        fields["last_error"] = _text(error, f"{where}.last_error", MAX_ERROR, empty=True)
    return UpstreamUsage(
        namespace=_text(value.get("namespace"), f"{where}.namespace", MAX_NAME),
        name=_text(value.get("name"), f"{where}.name", MAX_NAME),
        **fields,
    )


def decode_report(body: bytes) -> Report:
    """A report from its JSON, or :class:`WireError` naming what is wrong with it."""
    value = _object(body, "report")
    entries = value.get("upstreams", [])
    if type(entries) is not list:
        raise WireError("upstreams: must be a list")
    if len(entries) > MAX_UPSTREAMS:
        raise WireError(f"upstreams: more than {MAX_UPSTREAMS} entries")
    upstreams = [_usage(entry, f"upstreams[{i}]") for i, entry in enumerate(entries)]
    seen: set[tuple[str, str]] = set()
    for i, usage in enumerate(upstreams):
        key = (usage.namespace, usage.name)
        if key in seen:
            raise WireError(f"upstreams[{i}]: {key[0]}/{key[1]} is reported twice")
        seen.add(key)
    return Report(
        replica=_text(value.get("replica"), "replica", MAX_REPLICA),
        interval=_interval(value.get("interval"), "interval"),
        upstreams=upstreams,
    )


def _share(value: object, where: str) -> Share:
    if type(value) is not dict:
        raise WireError(f"{where}: must be an object")
    limits: dict[str, float | None] = {}
    for name in ("requests_per_minute", "tokens_per_minute"):
        raw = value.get(name)
        limits[name] = None if raw is None else _amount(raw, f"{where}.{name}")
    return Share(
        namespace=_text(value.get("namespace"), f"{where}.namespace", MAX_NAME),
        name=_text(value.get("name"), f"{where}.name", MAX_NAME),
        requests_per_minute=limits["requests_per_minute"],
        tokens_per_minute=limits["tokens_per_minute"],
    )


def decode_answer(body: bytes) -> Answer:
    """The leader's answer from its JSON, or :class:`WireError` naming what is wrong."""
    value = _object(body, "answer")
    entries = value.get("shares", [])
    if type(entries) is not list or len(entries) > MAX_UPSTREAMS:
        raise WireError(f"shares: must be a list of at most {MAX_UPSTREAMS}")
    return Answer(
        leader=_text(value.get("leader"), "leader", MAX_REPLICA),
        interval=_interval(value.get("interval"), "interval"),
        shares=[_share(entry, f"shares[{i}]") for i, entry in enumerate(entries)],
    )
