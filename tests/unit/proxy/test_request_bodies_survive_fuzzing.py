"""Fuzz: the proxy's check of a request body (sluice.proxy.intake.parse_body), over random bytes and
random JSON. It answers a dict with a usable model, or a 400 that names the problem; it never
raises, and what it accepts means the same to every JSON parser (no duplicate top-level key)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.proxy.intake import parse_body as _parse
from sluice.proxy.limits import Limits

LIMITS = Limits(max_model_length=32)
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def check(raw: bytes, parsed: dict[str, Any] | web.Response) -> None:
    if isinstance(parsed, web.Response):
        assert parsed.status == 400
        assert parsed.body is not None
        assert orjson.loads(bytes(parsed.body))["error"]["type"] == "invalid_request_error"
        return
    model = parsed["model"]
    assert isinstance(model, str)
    assert 0 < len(model) <= LIMITS.max_model_length
    pairs = json.loads(raw, object_pairs_hook=list)
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names))  # every parser reads the same model
    assert dict(pairs)["model"] == model


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes(raw: bytes) -> None:
    check(raw, _parse(raw, LIMITS))


@FUZZ
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.text(max_size=40))
def test_any_json_object_with_a_model(body: dict[str, Any], model: str) -> None:
    raw = json.dumps({**body, "model": model}).encode()

    check(raw, _parse(raw, LIMITS))


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["model", "mod\\u0065l", "stream", "x"]), json_values),
        min_size=1,
        max_size=6,
    ),
)
def test_objects_written_by_hand_with_repeated_or_escaped_keys(
    pairs: list[tuple[str, Any]],
) -> None:
    raw = ("{" + ",".join(f'"{k}":{json.dumps(v)}' for k, v in pairs) + "}").encode()

    check(raw, _parse(raw, LIMITS))


def test_nesting_as_deep_as_orjson_allows_is_a_400_not_a_crash() -> None:
    raw = b'{"model":"m1","x":' + b"[" * 1020 + b"]" * 1020 + b',"y":"\\n"}'

    parsed = _parse(raw, LIMITS)

    assert isinstance(parsed, web.Response)
    assert parsed.status == 400
