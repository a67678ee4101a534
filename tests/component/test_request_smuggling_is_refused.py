"""Request smuggling and desync: ambiguous HTTP sent raw to the proxy is refused, or answered
as exactly the one request it can only mean; nothing malformed ever reaches an upstream."""

from __future__ import annotations

import json

import pytest

from tests.component import raw
from tests.component.conftest import Gateway

BODY = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
)
# A request hidden in a body, which a desynced hop would take for the next request.
SMUGGLED = b"GET /admin/breakers HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


REFUSED = {
    "content-length and transfer-encoding": HEAD
    + f"Content-Length: {len(BODY)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    + chunked(BODY),
    "two different content-lengths": HEAD
    + f"Content-Length: {len(BODY)}\r\nContent-Length: {len(BODY) + 1}\r\n\r\n".encode()
    + BODY
    + b"x",
    "chunked, identity": HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n" + chunked(BODY),
    "chunked twice": HEAD
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    + chunked(BODY),
    "space before the colon": HEAD + b"Transfer-Encoding : chunked\r\n\r\n" + chunked(BODY),
    "obs-fold": HEAD + f"X-Folded: a\r\n b\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY,
    "oversized chunk size": HEAD
    + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n"
    + BODY,
    "chunk size that is not hex": HEAD + b"Transfer-Encoding: chunked\r\n\r\n1g\r\n" + BODY,
    "negative content-length": HEAD + b"Content-Length: -1\r\n\r\n" + BODY,
    "signed content-length": HEAD + f"Content-Length: +{len(BODY)}\r\n\r\n".encode() + BODY,
    "NUL in a header value": HEAD
    + f"X-Nul: a\x00b\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY,
    "bare CR in a header value": HEAD
    + f"X-Cr: a\rb\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    + BODY,
    "bare LF line endings": HEAD.replace(b"\r\n", b"\n")
    + f"Content-Length: {len(BODY)}\n\n".encode()
    + BODY,
}


@pytest.mark.parametrize("request_bytes", list(REFUSED.values()), ids=list(REFUSED))
async def test_ambiguous_framing_is_refused_before_any_upstream(
    gateway: Gateway, request_bytes: bytes
) -> None:
    answer = await raw.exchange(gateway, request_bytes + SMUGGLED, wait=3.0)

    assert raw.statuses(answer)[:1] == [400], answer[:300]
    assert gateway.hits("primary") == 0
    assert gateway.hits("secondary") == 0
    assert b'"breakers"' not in answer  # the smuggled admin request was never served


@pytest.mark.parametrize("coding", [b"chunked", b"identity, chunked"])
async def test_a_chunked_body_is_sent_upstream_with_a_length(
    gateway: Gateway, coding: bytes
) -> None:
    # "identity, chunked" can only mean chunked (the last coding frames the body).
    request = HEAD + b"Transfer-Encoding: " + coding + b"\r\nConnection: close\r\n\r\n"

    answer = await raw.exchange(gateway, request + chunked(BODY))

    assert raw.statuses(answer) == [200]
    [seen] = [r for r in gateway.fakes["primary"].seen if r.path != "/v1/models"]
    assert "transfer-encoding" not in seen.headers
    assert int(seen.headers["content-length"]) > 0


async def test_pipelined_requests_are_answered_in_order(gateway: Gateway) -> None:
    first = HEAD + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY
    second = (
        HEAD
        + f"Content-Length: {len(BODY)}\r\nx-fake-status: 400\r\nConnection: close\r\n\r\n".encode()
        + BODY
    )

    answer = await raw.exchange(gateway, first + second)

    assert raw.statuses(answer) == [200, 400]
    assert gateway.hits("primary") == 2


async def test_a_request_smuggled_in_a_body_stays_a_body(gateway: Gateway) -> None:
    body = json.dumps({"model": "m1", "messages": [], "x": SMUGGLED.decode()}).encode()
    request = HEAD + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body

    answer = await raw.exchange(gateway, request)

    assert raw.statuses(answer) == [200]
    assert gateway.hits("primary") == 1
    assert all(r.path == "/v1/chat/completions" for r in gateway.fakes["primary"].seen)
