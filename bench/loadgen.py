"""Load the benchmarks need beyond wrk's: streams, an open-loop failover run, memory.

    python bench/loadgen.py stream URL --connections 16 --duration 8 [--header K:V ...]
    python bench/loadgen.py failover URL --rate 200 --duration 12 --kill-at 4 \\
        --kill-pid PID --dead-port PORT [--header K:V ...]
    python bench/loadgen.py memory URL --pgid PGID --idle 500 --active 200 [--header K:V ...]

Prints one JSON object. Runs pinned to the load core beside the fake upstreams. Raw asyncio
and llhttp (httptools): the client must cost far less than what it measures.

- ``stream``: every connection sends streamed chat completions back to back; time to first
  token is from the request's write to the first SSE event.
- ``failover``: requests go out at a fixed rate whatever the answers do (open loop: latency is
  measured from when a request was due, so a stall shows as latency, not as fewer requests).
  At ``--kill-at`` the upstream ``--kill-pid`` is killed and a tombstone takes its port: it
  accepts and drops every connection, counting them, so "requests sent to the dead upstream"
  is measured rather than guessed.
- ``memory``: RSS of the process group, then with ``--idle`` keep-alive connections open
  (each has made one request), then with ``--active`` streams in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httptools

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


class Conn(asyncio.Protocol):
    """One keep-alive client connection; one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.sent = 0.0
        self.first: float | None = None
        self.events = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("closed"))

    def _fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        if b"data:" in body:
            if self.first is None:
                self.first = time.perf_counter()
            self.events += body.count(b"data:")

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    async def request(self, raw: bytes, timeout: float = 30.0) -> int:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.first, self.events = None, 0
        self.sent = time.perf_counter()
        self.transport.write(raw)
        async with asyncio.timeout(timeout):
            return await self.done


async def connect(host: str, port: int) -> Conn:
    _, conn = await asyncio.get_running_loop().create_connection(Conn, host, port)
    return conn


def build_request(url: str, headers: list[str], *, stream: bool) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    body = json.dumps({**CHAT, "stream": stream}).encode()
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(h.replace(":", ": ", 1) for h in headers),
    ]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return str(parts.hostname), int(parts.port or 80), raw


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# -- streams -----------------------------------------------------------------------------------


async def streams(args: argparse.Namespace) -> dict[str, object]:
    host, port, raw = build_request(args.url, args.header, stream=True)
    ttfts: list[float] = []
    events = 0
    errors = 0
    deadline = time.perf_counter() + args.duration

    async def worker() -> None:
        nonlocal events, errors
        conn: Conn | None = None
        while time.perf_counter() < deadline:
            try:
                if conn is None or conn.closed:
                    conn = await connect(host, port)
                status = await conn.request(raw)
            except (OSError, TimeoutError):
                errors += 1
                conn = None
                await asyncio.sleep(0.05)
                continue
            if status != 200 or conn.first is None:
                errors += 1
                continue
            ttfts.append((conn.first - conn.sent) * 1000)
            events += conn.events

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.connections)))
    elapsed = time.perf_counter() - started
    return {
        "streams": len(ttfts),
        "errors": errors,
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p99_ms": percentile(ttfts, 99),
        "events_per_s": events / elapsed,
        "streams_per_s": len(ttfts) / elapsed,
    }


# -- failover ----------------------------------------------------------------------------------


async def failover(args: argparse.Namespace) -> dict[str, object]:
    host, port, raw = build_request(args.url, args.header, stream=False)
    loop = asyncio.get_running_loop()
    idle: list[Conn] = []
    results: list[tuple[float, float, bool]] = []  # (due, latency s, ok)
    tombstone_hits: list[float] = []
    start = time.perf_counter()
    killed_at: float | None = None

    async def one(due: float) -> None:
        conn = idle.pop() if idle else None
        ok = False
        try:
            if conn is None or conn.closed:
                conn = await connect(host, port)
            status = await conn.request(raw, timeout=10.0)
            ok = status == 200
            idle.append(conn)
        except (OSError, TimeoutError, httptools.HttpParserError):
            pass
        results.append((due - start, time.perf_counter() - due, ok))

    def bury(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tombstone_hits.append(time.perf_counter() - start)
        writer.transport.abort()  # a reset: the process behind this port is gone

    tombstone: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = set()
    total = int(args.rate * args.duration)
    for i in range(total):
        due = start + i / args.rate
        if killed_at is None and due - start >= args.kill_at:
            os.kill(args.kill_pid, signal.SIGKILL)
            killed_at = time.perf_counter() - start
            for _ in range(100):  # the port frees as soon as the process is reaped
                try:
                    tombstone = await asyncio.start_server(
                        bury, "127.0.0.1", args.dead_port, reuse_address=True
                    )
                    break
                except OSError:
                    await asyncio.sleep(0.005)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    if tombstone is not None:
        tombstone.close()
    return {
        "rate": args.rate,
        "killed_at": killed_at,
        "requests": [[round(d, 4), round(lat * 1000, 2), ok] for d, lat, ok in sorted(results)],
        "dead_hits": [round(t, 4) for t in tombstone_hits],
    }


# -- memory ------------------------------------------------------------------------------------


def group_rss_kib(pgid: int) -> int:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def memory(args: argparse.Namespace) -> dict[str, object]:
    host, port, plain = build_request(args.url, args.header, stream=False)
    _, _, streamed = build_request(args.url, args.header, stream=True)
    await asyncio.sleep(1)
    baseline = statistics.median(group_rss_kib(args.pgid) for _ in range(3))
    held: list[Conn] = []
    for _ in range(args.idle):
        conn = await connect(host, port)
        await conn.request(plain)
        held.append(conn)
    await asyncio.sleep(1)
    with_idle = group_rss_kib(args.pgid)
    active: list[Conn] = []
    pending = []
    for _ in range(args.active):
        conn = await connect(host, port)
        active.append(conn)
        pending.append(asyncio.ensure_future(conn.request(streamed, timeout=60)))
    deadline = time.perf_counter() + 20
    while time.perf_counter() < deadline and any(c.first is None for c in active):
        await asyncio.sleep(0.1)
    streaming = sum(c.first is not None for c in active)
    await asyncio.sleep(0.5)
    with_active = group_rss_kib(args.pgid)
    for conn in held + active:
        if conn.transport is not None:
            conn.transport.abort()
    for future in pending:
        future.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return {
        "baseline_kib": baseline,
        "idle": args.idle,
        "idle_kib": with_idle,
        "active": streaming,
        "active_kib": with_active,
        "per_idle_kib": (with_idle - baseline) / args.idle,
        "per_active_kib": (with_active - with_idle) / max(1, streaming),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("stream", "failover", "memory"):
        sub = commands.add_parser(name)
        sub.add_argument("url")
        sub.add_argument("--header", action="append", default=[])
    stream = commands.choices["stream"]
    stream.add_argument("--connections", type=int, default=16)
    stream.add_argument("--duration", type=float, default=8)
    fail = commands.choices["failover"]
    fail.add_argument("--rate", type=float, default=200)
    fail.add_argument("--duration", type=float, default=12)
    fail.add_argument("--kill-at", type=float, default=4)
    fail.add_argument("--kill-pid", type=int, required=True)
    fail.add_argument("--dead-port", type=int, required=True)
    mem = commands.choices["memory"]
    mem.add_argument("--pgid", type=int, required=True)
    mem.add_argument("--idle", type=int, default=500)
    mem.add_argument("--active", type=int, default=200)
    args = parser.parse_args()
    run = {"stream": streams, "failover": failover, "memory": memory}[args.command]
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
