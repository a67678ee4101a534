"""Reports and answers as JSON: what goes in comes out, and anything out of bounds is refused
with the field named."""

from __future__ import annotations

import re

import orjson
import pytest

from sluice.core.reports import Answer, Report, Share, UpstreamUsage
from sluice.core.wire import (
    MAX_BODY_BYTES,
    MAX_ERROR,
    MAX_UPSTREAMS,
    WireError,
    decode_answer,
    decode_report,
    encode_answer,
    encode_report,
)


def busy(name: str = "a") -> UpstreamUsage:
    return UpstreamUsage(
        namespace="ns",
        name=name,
        success=7,
        failure=2,
        rate_limited=1,
        slow=3,
        last_error="HTTP 503",
        input_tokens=120,
        output_tokens=40,
        cost=0.0125,
        cost_by_model={"gpt-4o": 0.0125},
        requests=10,
        tokens=160,
        wanted_requests=12,
        wanted_tokens=200,
        window_requests=55,
        window_tokens=900,
    )


def report_body(**changes: object) -> bytes:
    entry = orjson.loads(encode_report(Report("p-1", 1.0, [busy()])))
    entry.update(changes)
    return orjson.dumps(entry)


def upstream_body(**changes: object) -> bytes:
    entry = orjson.loads(encode_report(Report("p-1", 1.0, [busy()])))
    entry["upstreams"][0].update(changes)
    return orjson.dumps(entry)


def test_a_report_comes_out_as_it_went_in() -> None:
    report = Report("p-1", 0.98, [busy("a"), UpstreamUsage("ns", "idle")])
    assert decode_report(encode_report(report)) == report


def test_an_idle_upstream_costs_only_its_name() -> None:
    body = encode_report(Report("p-1", 1.0, [UpstreamUsage("ns", "idle")]))
    assert orjson.loads(body)["upstreams"] == [{"namespace": "ns", "name": "idle"}]


def test_an_answer_comes_out_as_it_went_in() -> None:
    answer = Answer("op-0", 1.0, [Share("ns", "a", 20.0, None), Share("ns", "b", None, 5000.5)])
    assert decode_answer(encode_answer(answer)) == answer


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("failure", -1, "upstreams[0].failure: must be an integer"),
        ("success", 1.5, "upstreams[0].success: must be an integer"),
        ("success", True, "upstreams[0].success: must be an integer"),
        ("window_tokens", 10**13, "upstreams[0].window_tokens: must be an integer"),
        ("cost", -0.1, "upstreams[0].cost: must be a finite number"),
        ("cost", "1", "upstreams[0].cost: must be a finite number"),
        ("cost", 1e300, "upstreams[0].cost: must be a finite number"),
        ("name", "", "upstreams[0].name: must be a non-empty string"),
        ("name", "x" * 254, "upstreams[0].name: longer than 253"),
        ("namespace", None, "upstreams[0].namespace: must be a non-empty string"),
        ("slow", 100, "upstreams[0].slow: more than success + failure"),
        ("last_error", "e" * (MAX_ERROR + 1), "upstreams[0].last_error: longer than"),
        ("cost_by_model", [], "upstreams[0].cost_by_model: must be an object"),
        ("cost_by_model", {"m": -1}, "upstreams[0].cost_by_model['m']: must be a finite"),
    ],
)
def test_a_bad_upstream_entry_is_refused_naming_its_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(WireError, match=re.escape(message)):
        decode_report(upstream_body(**{field: value}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v": 2}, "v: must be 1"),
        ({"replica": ""}, "replica: must be a non-empty string"),
        ({"interval": 0}, "interval: must be at least 0.05 seconds"),
        ({"interval": 5e-324}, "interval: must be at least 0.05 seconds"),
        ({"interval": 7200}, "interval: must be a finite number"),
        ({"upstreams": {}}, "upstreams: must be a list"),
    ],
)
def test_a_bad_report_is_refused_naming_its_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_report(report_body(**changes))


def test_an_upstream_reported_twice_is_refused() -> None:
    body = orjson.loads(encode_report(Report("p", 1.0, [busy("a")])))
    body["upstreams"].append(body["upstreams"][0])
    with pytest.raises(WireError, match=r"upstreams\[1\]: ns/a is reported twice"):
        decode_report(orjson.dumps(body))


def test_bodies_that_are_not_json_objects_or_too_big_are_refused() -> None:
    with pytest.raises(WireError, match="not JSON"):
        decode_report(b'{"v": 1, "replica": "p", "interval": NaN}')
    with pytest.raises(WireError, match="must be a JSON object"):
        decode_report(b"[]")
    with pytest.raises(WireError, match="over 1048576"):
        decode_report(b" " * (MAX_BODY_BYTES + 1))


def test_too_many_upstreams_are_refused_before_they_are_read() -> None:
    many = [UpstreamUsage("ns", f"u{i}") for i in range(MAX_UPSTREAMS + 1)]
    with pytest.raises(WireError, match="more than 5000 entries"):
        encode_report(Report("p", 1.0, many))


def test_unknown_keys_are_ignored_so_a_newer_replica_still_reports() -> None:
    report = decode_report(upstream_body(reservations_in_flight=3))
    assert report.upstreams[0].failure == 2


def test_a_long_error_is_cut_when_encoded_rather_than_losing_the_report() -> None:
    usage = UpstreamUsage("ns", "a", failure=1, last_error="x" * 10_000)
    decoded = decode_report(encode_report(Report("p", 1.0, [usage])))
    assert decoded.upstreams[0].last_error == "x" * MAX_ERROR


def test_a_bad_share_is_refused_naming_its_field() -> None:
    body = orjson.loads(encode_answer(Answer("op", 1.0, [Share("ns", "a", 1.0)])))
    body["shares"][0]["requests_per_minute"] = -5
    with pytest.raises(WireError, match=r"shares\[0\].requests_per_minute"):
        decode_answer(orjson.dumps(body))
