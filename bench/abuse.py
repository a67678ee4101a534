"""Memory under abuse: what a few hostile requests do to the proxy's resident memory.

    .venv/bin/python bench/abuse.py [--old REV] [--output docs/benchmarks.md]

Starts ``sluice proxy --manifests`` (access log on, written to a file, as it is by default)
pinned to the proxy core, in front of a raw asyncio upstream in this script (on the load core)
that answers chat completions, or, for a request whose body carries HUGE_MARK, a 300 MiB
chunked JSON answer written as fast as the proxy reads it. Reads the proxy's VmRSS and VmHWM
(the peak; reset through /proc/PID/clear_refs before each case) at rest, then:

1. 30 requests, 4 at a time, each naming a distinct 4 MiB model;
2. one request whose upstream answer is 300 MiB (the client gives up after --huge-timeout).

With ``--old REV`` the same runs are made, in the same run, against the proxy of commit REV
(its ``src`` extracted with ``git archive`` and put first on PYTHONPATH, same venv). Prints a
table and writes it into the "Memory under abuse" section of --output (the rest of the page
stays as it is). Every request has a timeout; processes are killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loadgen
from harness import (
    COMPLETION,
    LOAD_CORE,
    PROXY_CORE,
    ROOT,
    commit_source,
    free_port,
    imported_from,
    process,
    sluice_manifest,
    source_env,
    source_state,
    write_section,
)

MiB = 1024 * 1024
HUGE_MARK = b"__sluice_bench_huge_answer__"
HUGE_BYTES = 300 * MiB
NAMES, NAME_BYTES, AT_ONCE = 30, 4 * MiB, 4
HEADING = "Memory under abuse"


# -- the upstream -------------------------------------------------------------------------------


@dataclass
class Upstream:
    """Chat completions, or HUGE_BYTES of one chunked JSON answer; counts what it sent."""

    chunk: int = 16 * 1024
    huge_sent: int = 0
    huge_done: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if HUGE_MARK in body:
                    await self.huge(writer)
                    return
                answer = COMPLETION.encode()
                if head.startswith(b"GET"):  # probes
                    answer = b'{"object":"list","data":[{"id":"m1","object":"model"}]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.tasks.discard(task)
            writer.transport.abort()

    async def huge(self, writer: asyncio.StreamWriter) -> None:
        self.huge_sent, self.huge_done = 0, False
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        opening = (
            b'{"id":"chatcmpl-huge","object":"chat.completion","created":0,"model":"m1",'
            b'"choices":[{"index":0,"message":{"role":"assistant","content":"'
        )
        closing = b'"},"finish_reason":"stop"}]}'
        filler = b"x" * self.chunk
        whole, part = divmod(HUGE_BYTES - len(opening) - len(closing), self.chunk)
        pieces = [opening, *[filler] * whole, *([filler[:part]] if part else []), closing]
        for number, piece in enumerate(pieces):
            if writer.transport.is_closing():
                return  # the proxy gave up on it
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.huge_sent += len(piece)
            if writer.transport.get_write_buffer_size() > 4 * MiB:
                await writer.drain()
            elif number % 64 == 0:
                await asyncio.sleep(0)  # the client shares this loop
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        self.huge_done = True


# -- the client ---------------------------------------------------------------------------------


class Counting(loadgen.Conn):
    """loadgen's client connection, counting the body's bytes instead of keeping them."""

    received = 0

    def on_body(self, body: bytes) -> None:
        self.received += len(body)


def chat(port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def send(port: int, body: bytes, timeout: float) -> tuple[str, int]:
    """One request on a connection of its own: (status or what went wrong, body bytes)."""
    loop = asyncio.get_running_loop()
    conn: Counting | None = None
    try:
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(Counting, "127.0.0.1", port)
            status = await conn.request(chat(port, body), timeout=timeout)
        return str(status), conn.received
    except TimeoutError:
        return "timeout", conn.received if conn else 0
    except (OSError, loadgen.httptools.HttpParserError) as e:
        return type(e).__name__, conn.received if conn else 0
    finally:
        if conn is not None and conn.transport is not None:
            conn.transport.abort()


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def exited(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def counts(statuses: list[str]) -> str:
    return ", ".join(
        f"{n} x {s}" for s, n in sorted({s: statuses.count(s) for s in statuses}.items())
    )


async def abuse(
    pid: int, port: int, upstream: Upstream, *, huge_timeout: float, chunks: list[int], repeats: int
) -> dict[str, Any]:
    ordinary = b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
    warm = [await send(port, ordinary, 10) for _ in range(3)]
    await asyncio.sleep(1)
    rest, _ = memory(pid)
    found: dict[str, Any] = {"rest": rest, "warm": counts([s for s, _ in warm])}

    reset_peak(pid)
    gate = asyncio.Semaphore(AT_ONCE)

    async def named(i: int) -> str:
        name = f"{i:04d}-" + "n" * (NAME_BYTES - 5)
        body = b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}' % name.encode()
        async with gate:
            return (await send(port, body, 30))[0]

    started = time.perf_counter()
    statuses = await asyncio.gather(*(named(i) for i in range(NAMES)))
    took = time.perf_counter() - started
    await asyncio.sleep(2)
    after, peak = memory(pid)
    found["names"] = {"statuses": counts(list(statuses)), "s": took, "peak": peak, "after": after}

    found["huge"] = []
    for chunk, again in [(c, a) for c in chunks for a in range(repeats)]:
        upstream.chunk = chunk  # again: does what stays grow, or is it reused?
        reset_peak(pid)
        before, _ = memory(pid)
        body = b'{"model":"m1","messages":[{"role":"user","content":"%s"}]}' % HUGE_MARK
        started = time.perf_counter()
        status, received = await send(port, body, huge_timeout)
        took = time.perf_counter() - started
        sent, done = upstream.huge_sent, upstream.huge_done
        await asyncio.sleep(2)
        after, peak = memory(pid)
        found["huge"].append(
            {
                "status": status,
                "chunk_kib": chunk // 1024,
                "again": again,
                "s": took,
                "before": before,
                "peak": peak,
                "after": after,
                "upstream_sent_mib": sent / MiB,
                "upstream_done": done,
                "client_received_mib": received / MiB,
            }
        )
    return found


# -- the runs -----------------------------------------------------------------------------------


async def measure(
    label: str, env: dict[str, str], directory: Path, args: argparse.Namespace
) -> dict[str, Any]:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream_port = int(server.sockets[0].getsockname()[1])
    port = free_port()
    manifest = sluice_manifest(directory, upstream_port)
    argv = [sys.executable, "-m", "sluice", "proxy", "--manifests", str(manifest)]
    argv += ["--port", str(port)]
    log = directory / f"proxy-{port}.log"
    try:
        with process(argv, PROXY_CORE, log, env) as pid:
            deadline = time.monotonic() + 30
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    if exited(pid) or time.monotonic() > deadline:
                        raise RuntimeError(log.read_text(errors="replace")[-500:]) from None
                    await asyncio.sleep(0.1)
            chunks = [int(c) * 1024 for c in args.chunk_kib.split(",")]
            found = await abuse(
                pid,
                port,
                upstream,
                huge_timeout=args.huge_timeout,
                chunks=chunks,
                repeats=args.repeats,
            )
    finally:
        server.close()
        for task in list(upstream.tasks):
            task.cancel()
        await asyncio.gather(*upstream.tasks, return_exceptions=True)
    found["label"] = label
    found["log_mib"] = log.stat().st_size / MiB
    return found


def report(rows: list[dict[str, Any]], command: str, args: argparse.Namespace) -> str:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    lines = [
        f"## {HEADING}",
        "",
        f"Generated by `{command}` ({os.cpu_count()} cores, {cpu_model}, "
        f"Python {platform.python_version()}; the proxy on core {PROXY_CORE}, the script and "
        f"its upstream on core {LOAD_CORE}; one run, the proxies one after the other). Sluice "
        "runs as `sluice proxy --manifests` with the access log **on** (the default; written "
        "to a file) in front of a raw asyncio upstream in bench/abuse.py. Memory is the proxy "
        "process's: VmRSS at rest (after 3 ordinary requests); for each case, VmRSS just "
        "before it, the peak during it (VmHWM, reset through /proc/PID/clear_refs just "
        "before) and VmRSS 2 s after it.",
        "",
        f"- **model names**: {NAMES} requests, {AT_ONCE} at a time, each naming a distinct "
        f"{NAME_BYTES // MiB} MiB model (bodies of {NAME_BYTES // MiB} MiB and a few bytes).",
        f"- **300 MiB answer**: an ordinary request; the upstream answers {HUGE_BYTES // MiB} "
        "MiB of one chunked JSON completion, as fast as the proxy reads it; the client gives "
        f"up after {args.huge_timeout:.0f} s. Sent {args.repeats} times one after the other "
        "(to tell memory kept for reuse from memory that grows) with each chunk size: "
        f"{', '.join(f'{c} KiB' for c in args.chunk_kib.split(','))}.",
        "",
        "| proxy | case | client got | time s | before MiB | peak MiB | after MiB "
        "| after - at rest MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rest = float(row["rest"])
        lines.append(f"| {row['label']} | at rest | {row['warm']} | | | | {rest:.0f} | |")
        cases = [("model names", row["names"], rest)]
        cases += [
            (
                f"300 MiB answer, {h['chunk_kib']} KiB chunks"
                + (f", again ({h['again'] + 1})" if h["again"] else ""),
                h,
                h["before"],
            )
            for h in row["huge"]
        ]
        for case, data, before in cases:
            got = data.get("statuses") or data["status"]
            lines.append(
                f"| {row['label']} | {case} | {got} | {data['s']:.1f} | {before:.0f} | "
                f"{data['peak']:.0f} | {data['after']:.0f} | {data['after'] - rest:+.0f} |"
            )
    if len(rows) == 2:
        new, old = rows
        peaks = [
            f"{o['peak']:.0f} against {n['peak']:.0f} MiB ({o['peak'] / n['peak']:.1f}x) in "
            f"{n['chunk_kib']} KiB chunks"
            for n, o in zip(new["huge"], old["huge"])
            if not n["again"]
        ]
        lines += [
            "",
            f"{old['label']} against {new['label']}, same run: with the model names, peak "
            f"{old['names']['peak']:.0f} against {new['names']['peak']:.0f} MiB "
            f"({old['names']['peak'] / new['names']['peak']:.1f}x), kept afterwards "
            f"{old['names']['after'] - old['rest']:+.0f} against "
            f"{new['names']['after'] - new['rest']:+.0f} MiB; with the 300 MiB answer, peak "
            + "; ".join(peaks)
            + ". Memory that stays after a 300 MiB answer in small chunks and does not grow "
            "with the second is the C allocator keeping freed pieces (below glibc's mmap "
            "threshold) for reuse; in 1 MiB chunks it goes back.",
        ]
    lines += ["", "The first 300 MiB answer, seen from both ends:", ""]
    lines += ["| proxy | upstream wrote MiB | upstream finished | client received MiB |"]
    lines += ["|---|---:|---|---:|"]
    for row in rows:
        huge = row["huge"][0]
        lines.append(
            f"| {row['label']} | {huge['upstream_sent_mib']:.0f} | "
            f"{'yes' if huge['upstream_done'] else 'no'} | {huge['client_received_mib']:.1f} |"
        )
    logs = ", ".join(f"{row['label']} {row['log_mib']:.1f} MiB" for row in rows)
    lines += ["", f"Access log written over the whole run: {logs}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", help="also measure the proxy of this commit (e.g. 33324e0)")
    parser.add_argument("--huge-timeout", type=float, default=40.0)
    parser.add_argument("--chunk-kib", default="1024,16", help="the 300 MiB answer's chunks")
    parser.add_argument("--repeats", type=int, default=2, help="300 MiB answers per chunk size")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # the proxy pins itself to the proxy core
    started = time.monotonic()
    rows = []
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-abuse-")))
        trees: list[tuple[str, dict[str, str]]] = [(f"this tree ({source_state()})", {})]
        if args.old:
            old = stack.enter_context(commit_source(args.old))
            trees.append((f"before ({args.old})", source_env(old)))
        for label, env in trees:
            print(f"== {label}: sluice from {imported_from(env)}", file=sys.stderr, flush=True)
            row = asyncio.run(measure(label, env, directory, args))
            print(f"   {row}", file=sys.stderr, flush=True)
            rows.append(row)
    command = ".venv/bin/python bench/abuse.py" + (f" --old {args.old}" if args.old else "")
    text = report(rows, command, args)
    print(text)
    write_section(args.output, HEADING, text)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
