"""Fuzz: mutated raw requests to the proxy (a seeded mutation fuzzer, bounded in count and
time). Whatever arrives, the proxy answers with an HTTP status that is not a 5xx of its own, or
closes the connection; it keeps serving; and every request that reaches an upstream is one the
proxy framed itself."""

from __future__ import annotations

import asyncio
import random

from tests.component import raw
from tests.component.conftest import Gateway

CASES = 160
SEED = 11

HEADERS = [
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked, identity",
    b"Content-Length: 0", b"Content-Length: 99999999999999999999", b"Content-Length: 5",
    b"Expect: 100-continue", b"Connection: keep-alive, x-hop", b"Content-Encoding: gzip",
    b"Content-Type: text/plain", b"Host: evil.example", b"X-A: \x00", b"Upgrade: h2c",
]  # fmt: skip


def mutate(rng: random.Random, request: bytes) -> bytes:
    data = bytearray(request)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if choice == 0:  # random bytes somewhere
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 1 and len(data) > 1:  # a range deleted
            end = min(len(data), at + rng.randint(1, 16))
            del data[at:end]
        elif choice == 2:  # a header that changes framing or meaning, at a line start
            line = data.find(b"\r\n", min(at, len(data))) + 2
            if 2 <= line < data.find(b"\r\n\r\n") + 2:
                data[line:line] = rng.choice(HEADERS) + b"\r\n"
        elif choice == 3:  # line endings broken
            data = bytearray(bytes(data).replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n"]), 1))
        elif choice == 4:  # truncated
            data = data[: max(1, at)]
        elif choice == 5:  # a second request pipelined behind it
            data += request
        elif data:  # a byte flipped
            index = rng.randrange(len(data))
            data[index] ^= 1 << rng.randrange(8)
    return bytes(data)


async def test_mutated_requests_are_refused_or_served_never_passed_on_malformed(
    gateway: Gateway,
) -> None:
    rng = random.Random(SEED)
    base = raw.chat_request()
    cases = [mutate(rng, base) for _ in range(CASES)]
    answers: list[bytes] = []
    for batch in range(0, CASES, 16):
        answers += await asyncio.gather(
            *(raw.exchange(gateway, case, wait=0.5) for case in cases[batch : batch + 16])
        )

    for case, answer in zip(cases, answers, strict=True):
        codes = raw.statuses(answer)
        assert answer == b"" or codes, (case, answer[:200])
        assert all(code < 500 or code in (502, 503) for code in codes), (case, answer[:300])
    assert raw.statuses(await raw.exchange(gateway, base)) == [200]  # still serving
    assert [r for r in gateway.access_log() if r["status"] >= 500 and r["status"] != 503] == []
    for seen in gateway.fakes["primary"].seen:
        assert seen.path == "/v1/chat/completions"
        assert not {"transfer-encoding", "expect", "upgrade", "content-encoding"} & set(
            seen.headers
        ), seen.headers
        assert seen.headers["content-type"] == "application/json"
