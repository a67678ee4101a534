"""The operator's report handling at scale: simulated proxy replicas (50 by default) each
report every Upstream (200) once a second to a real ``sluice operator`` process on the dev
control plane, for 20 s; the operator process's CPU as a fraction of one core.

Every Upstream has both limits, so every report is answered with 200 shares (the costliest
case), and every replica has its own projected-style token (audience sluice-operator), so
TokenReview runs as in a cluster (each answer is kept for a minute). Reports carry traffic
(successes, tokens, cost, windows, demand) but no failures: this measures the channel, not
trips.

    .venv/bin/python bench/reports.py [--replicas 50] [--upstreams 200] [--seconds 20] [--write]

``--write`` puts the figures into docs/benchmarks.md ("Operator: reports from every replica").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
from bench.harness import ROOT, TICKS, free_port, source_state, write_section

from sluice.core.reports import Report, UpstreamUsage
from sluice.core.wire import encode_report
from sluice.devcluster import find_binaries, find_tools
from sluice.devcluster.cluster import ControlPlane

NAMESPACE = "bench"
HEADING = "Operator: reports from every replica"


def upstreams(count: int) -> str:
    documents = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": f"u{i:03d}", "namespace": NAMESPACE},
            "spec": {
                "provider": "openai-compatible",
                "baseURL": "http://127.0.0.1:9/v1",  # never called: no probe, no requests
                "models": [{"name": "m1", "cost": {"inputPer1M": 2.5, "outputPer1M": 10}}],
                "limits": {"requestsPerMinute": 60_000, "tokensPerMinute": 6_000_000},
            },
        }
        for i in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})


def bodies(replica: str, count: int, rng: random.Random) -> list[bytes]:
    """A few reports for one replica, rotated: traffic on every Upstream, no failures."""
    out = []
    for _ in range(3):
        usage = []
        for i in range(count):
            n = rng.randint(0, 20)
            usage.append(
                UpstreamUsage(
                    NAMESPACE,
                    f"u{i:03d}",
                    success=n,
                    input_tokens=n * 50,
                    output_tokens=n * 20,
                    cost=n * 0.0003,
                    cost_by_model={"m1": n * 0.0003} if n else {},
                    requests=n,
                    tokens=n * 70,
                    wanted_requests=n,
                    wanted_tokens=n * 70,
                    window_requests=n * 60,
                    window_tokens=n * 4200,
                )
            )
        out.append(encode_report(Report(replica, 1.0, usage)))
    return out


class Replicas:
    """The simulated replicas: each posts a report every second, staggered over the second."""

    def __init__(self, url: str, tokens: list[str], count: int) -> None:
        rng = random.Random(7)  # noqa: S311 - made-up traffic, not secrets
        self.url = url
        self.tokens = tokens
        self.bodies = [bodies(f"replica-{i:02d}", count, rng) for i in range(len(tokens))]
        self.ok = 0
        self.errors = 0
        self.latencies: list[float] = []

    async def run(self, seconds: float) -> None:
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(self._replica(session, i, seconds))
                for i in range(len(self.tokens))
            ]
            await asyncio.gather(*tasks)

    async def _replica(self, session: aiohttp.ClientSession, i: int, seconds: float) -> None:
        await asyncio.sleep(i / len(self.tokens))
        headers = {"Authorization": f"Bearer {self.tokens[i]}"}
        end = time.monotonic() + seconds
        n = 0
        while (start := time.monotonic()) < end:
            body = self.bodies[i][n % 3]
            n += 1
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            self.latencies.append(time.monotonic() - start)
            self.ok += ok
            self.errors += not ok
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - start)))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    )


def wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (OSError, subprocess.CalledProcessError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"bench/reports.py: {what}: not within {timeout}s")


def run(args: argparse.Namespace) -> dict[str, float]:
    binaries, tools = find_binaries(), find_tools()
    if binaries is None or tools is None:
        raise SystemExit("bench/reports.py: run `sluice controlplane build` first")
    with ControlPlane.start(binaries) as plane:
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}

        def kubectl(*argv: str, stdin: str | None = None) -> None:
            subprocess.run(
                [str(tools.kubectl), *argv],
                input=stdin,
                text=True,
                env=env,
                check=True,
                capture_output=True,
            )

        kubectl("apply", "-f", str(ROOT / "crds"))
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=sluice",
        )
        wait(lambda: kubectl("get", "sluice", "-A") is None, 30, "the new kinds served")
        kubectl("create", "namespace", NAMESPACE)
        kubectl("create", "serviceaccount", "sluice-proxy", "-n", NAMESPACE)
        kubectl("apply", "-f", "-", stdin=upstreams(args.upstreams))
        tokens = [
            plane.service_account_token(NAMESPACE, "sluice-proxy", audiences=["sluice-operator"])
            for _ in range(args.replicas)
        ]
        report_port, metrics_port = free_port(), free_port()
        log = (Path(args.log_dir) / "operator.log").open("wb")
        operator = subprocess.Popen(
            [
                sys.executable, "-m", "sluice", "operator", "--kubeconfig", str(plane.kubeconfig),
                "--namespace", NAMESPACE, "--lease-namespace", NAMESPACE,
                "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port),
                "--report-port", str(report_port),
                "--report-address", f"127.0.0.1:{report_port}",
                "--report-user", f"system:serviceaccount:{NAMESPACE}:sluice-proxy",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait(
                lambda: metric(metrics_port, "sluice_operator_upstreams") == args.upstreams,
                60,
                "the operator managing every Upstream",
            )
            replicas = Replicas(
                f"http://127.0.0.1:{report_port}/v1/reports", tokens, args.upstreams
            )
            return asyncio.run(measure(replicas, operator.pid, metrics_port, args))
        finally:
            operator.terminate()
            operator.wait(timeout=20)
            log.close()


async def measure(
    replicas: Replicas, pid: int, metrics_port: int, args: argparse.Namespace
) -> dict[str, float]:
    """Warm up (token reviews, first status writes), then measure over ``args.seconds``."""
    load = asyncio.create_task(replicas.run(args.warmup + args.seconds + 1))
    await asyncio.sleep(args.warmup)
    replicas.latencies.clear()
    ok, errors = replicas.ok, replicas.errors
    writes = metric(metrics_port, "sluice_operator_status_writes_total")
    cpu, wall = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(args.seconds)
    cpu, wall = cpu_seconds(pid) - cpu, time.monotonic() - wall
    writes = metric(metrics_port, "sluice_operator_status_writes_total") - writes
    reports, failed = replicas.ok - ok, replicas.errors - errors
    latencies = sorted(replicas.latencies)
    await load
    return {
        "cores": cpu / wall,
        "reports_per_second": reports / wall,
        "failed": failed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "status_writes_per_minute": writes / wall * 60,
    }


def section(args: argparse.Namespace, figures: dict[str, float]) -> str:
    return f"""## {HEADING}

`bench/reports.py --replicas {args.replicas} --upstreams {args.upstreams} --seconds {args.seconds}`
at {source_state()}: a real `sluice operator` on the dev control plane; {args.replicas} simulated
proxy replicas, each with its own token, report all {args.upstreams} Upstreams once a second
(staggered), every Upstream with both limits, so each answer carries {args.upstreams} shares.
The operator's CPU over {args.seconds} s after a {args.warmup} s warm-up, from /proc (user +
system), on this 2-core machine shared with other work.

| figure | value |
|---|---|
| operator CPU | **{figures["cores"]:.2f} of a core** (goal: under 0.5) |
| reports taken | {figures["reports_per_second"]:.1f}/s ({args.replicas * args.upstreams:,} Upstream entries/s), {figures["failed"]:.0f} failed |
| report round trip | p50 {figures["p50_ms"]:.1f} ms, p99 {figures["p99_ms"]:.1f} ms |
| status writes | {figures["status_writes_per_minute"]:.0f}/min (usage moving on every Upstream; the shared write budget holds them to about one a second) |
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--upstreams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--log-dir", default="/tmp")  # noqa: S108 - the operator's log, for a look
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    figures = run(args)
    print(section(args, figures))
    if args.write:
        write_section(ROOT / "docs" / "benchmarks.md", HEADING, section(args, figures))


if __name__ == "__main__":
    main()
