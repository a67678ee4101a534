"""The scenarios beyond throughput: latency at a fixed rate, streams, failover, memory, client
auth and rate limits (Sluice without and with a feature), one commit's proxy beside another's
(before and after), and chat through an Anthropic upstream beside chat through an
OpenAI-compatible one.

Each starts its targets one at a time, pinned like the throughput runs (proxy on the proxy
core; fake upstreams, wrk, hey and bench/loadgen.py on the load core), and returns plain
dicts that gateways.py turns into the report and plots.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import sys
import time
import timeit
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

from harness import (
    ANTHROPIC_MESSAGE,
    BODY,
    LITELLM,
    LOAD_CORE,
    PROXY_CORE,
    ROOT,
    Target,
    ensure_litellm,
    ensure_portkey,
    free_port,
    group_cpu_seconds,
    lua_script,
    nginx_conf,
    nginx_upstream,
    process,
    run_wrk,
    sluice_argv,
    targets,
    wait_for_port,
)

LOADFAKE = ROOT / "bench" / "loadfake.py"
LOADGEN = ROOT / "bench" / "loadgen.py"


@contextlib.contextmanager
def loadfake(directory: Path, name: str, *options: str) -> Iterator[tuple[int, int]]:
    """bench/loadfake.py on the load core; yields (port, pid)."""
    port = free_port()
    argv = [sys.executable, str(LOADFAKE), str(port), *options]
    with process(argv, LOAD_CORE, directory / f"fake-{name}-{port}.log") as pid:
        wait_for_port(port)
        yield port, pid


def loadgen(*args: str, timeout: float = 120) -> dict[str, Any]:
    output = subprocess.run(
        ["taskset", "-c", LOAD_CORE, sys.executable, str(LOADGEN), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout
    return dict(json.loads(output))


def header_args(headers: dict[str, str]) -> list[str]:
    return [arg for k, v in headers.items() for arg in ("--header", f"{k}:{v}")]


@contextlib.contextmanager
def running(name: str, spec: Target, directory: Path, missing: dict[str, str]) -> Iterator[int]:
    """Start a target on the proxy core; yields its process group, or nothing if it failed
    (the reason goes to ``missing``)."""
    argv, port, _, env = spec
    log = directory / f"{port}.log"
    try:
        with process(argv, PROXY_CORE, log, env) as pgid:
            wait_for_port(port, timeout=60)
            yield pgid
    except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
        missing[name] = f"did not run: {e}; {tail}"


def _selected(every: dict[str, Target | None], only: list[str]) -> dict[str, Target | None]:
    return {k: v for k, v in every.items() if not only or any(o in k for o in only)}


# -- latency at a fixed rate (hey) --------------------------------------------------------------


def run_hey(port: int, rate: float, duration: int, headers: dict[str, str]) -> dict[str, float]:
    """hey at ``rate`` requests/s in all: 16 workers, each rate-limited, so answers faster than
    a worker's period never slow the offered load."""
    workers = 16
    argv = ["taskset", "-c", LOAD_CORE, "hey", "-z", f"{duration}s", "-c", str(workers)]
    argv += ["-q", f"{rate / workers:.2f}", "-m", "POST", "-T", "application/json", "-d", BODY]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    output = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}/v1/chat/completions"],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout

    def percentile(p: int) -> float:
        match = re.search(rf"\s{p}% in ([\d.]+) secs", output)
        assert match, output
        return float(match.group(1)) * 1000

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    ok = re.search(r"\[200\]\s+(\d+) responses", output)
    total = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", output))
    errors = sum(int(n) for n in re.findall(r"\]\s+(\d+) errors", output))
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": percentile(50),
        "p99_ms": percentile(99),
        "errors": total - (int(ok.group(1)) if ok else 0) + errors,
    }


def open_loop(
    directory: Path,
    missing: dict[str, str],
    only: list[str],
    saturation: dict[str, float],
    duration: int,
) -> list[dict[str, Any]]:
    """Each proxy at half of its own saturation (closed-loop, 32 connections, this run), and
    the upstream directly at the same rate, one right after the other."""
    found: list[dict[str, Any]] = []
    with nginx_upstream(directory) as upstream_port:
        every = _selected(targets(directory, upstream_port, missing), only)
        for name, spec in every.items():
            if spec is None or name not in saturation:
                continue
            rate = saturation[name] / 2
            print(f"== open loop: {name} at {rate:.0f} req/s", file=sys.stderr, flush=True)
            direct = run_hey(upstream_port, rate, duration, {})
            with running(name, spec, directory, missing):
                run_wrk(spec[1], 8, 1, lua_script(directory / "warm.lua", spec[2]))
                proxied = run_hey(spec[1], rate, duration, spec[2])
                found.append({"target": name, "rate": rate, "direct": direct, "proxied": proxied})
    return found


# -- streams ----------------------------------------------------------------------------------


def streams(
    directory: Path, missing: dict[str, str], only: list[str], duration: int
) -> list[dict[str, Any]]:
    """16 connections streaming back to back: 20 chunks 10 ms apart from the fake."""
    found: list[dict[str, Any]] = []
    with loadfake(directory, "streams", "--chunks", "20", "--chunk-interval-ms", "10") as (
        upstream_port,
        _,
    ):
        every = _selected(targets(directory, upstream_port, missing), only)
        for name, spec in every.items():
            print(f"== streams: {name}", file=sys.stderr, flush=True)
            args = ["stream", "--connections", "16", "--duration", str(duration)]
            if spec is None:
                result = loadgen(*args, f"http://127.0.0.1:{upstream_port}/v1/chat/completions")
                found.append({"target": name, **result})
                continue
            with running(name, spec, directory, missing):
                url = f"http://127.0.0.1:{spec[1]}/v1/chat/completions"
                loadgen(
                    "stream", url, "--connections", "4", "--duration", "1", *header_args(spec[2])
                )
                found.append({"target": name, **loadgen(*args, url, *header_args(spec[2]))})
    return found


# -- memory -----------------------------------------------------------------------------------


def memory(directory: Path, missing: dict[str, str], only: list[str]) -> list[dict[str, Any]]:
    """RSS per idle keep-alive connection and per stream in flight (streams that last 15 s)."""
    found: list[dict[str, Any]] = []
    with loadfake(directory, "memory", "--chunks", "3", "--chunk-interval-ms", "5000") as (
        upstream_port,
        _,
    ):
        every = _selected(targets(directory, upstream_port, missing), only)
        for name, spec in every.items():
            if spec is None:
                continue
            print(f"== memory: {name}", file=sys.stderr, flush=True)
            with running(name, spec, directory, missing) as pgid:
                url = f"http://127.0.0.1:{spec[1]}/v1/chat/completions"
                result = loadgen(
                    "memory", url, "--pgid", str(pgid), "--idle", "500", "--active", "200",
                    *header_args(spec[2]),
                )  # fmt: skip
                found.append({"target": name, **result})
    return found


# -- failover ---------------------------------------------------------------------------------


def failover_targets(
    directory: Path, ports: list[int], missing: dict[str, str]
) -> dict[str, Target]:
    """Each gateway spreading requests over three upstreams in turn, retrying elsewhere on a
    failure, with its own way of taking a failing upstream out (as close to Sluice's default
    policy, 5 failures then 30 s out, as each allows)."""
    found: dict[str, Target] = {}
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    manifest = directory / "failover.yaml"
    documents = [
        "apiVersion: sluice.dev/v1alpha1\nkind: Upstream\n"
        f"metadata: {{name: up{i}}}\nspec: {{provider: openai-compatible, baseURL: '{url}/v1', "
        "models: [{name: m1}]}\n"
        for i, url in enumerate(urls)
    ]
    documents.append(
        "apiVersion: sluice.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: m1}\nspec:\n"
        "  models: [m1]\n  strategy: RoundRobin\n"
        f"  targets: [{', '.join(f'{{upstream: up{i}}}' for i in range(len(urls)))}]\n"
        "  retry: {maxAttempts: 3}\n"
    )
    manifest.write_text("---\n".join(documents))
    port = free_port()
    found["sluice proxy (standalone)"] = (
        [str(Path(sys.executable).parent / "sluice"), "proxy", "--manifests", str(manifest),
         "--port", str(port)],
        port, {}, {},
    )  # fmt: skip
    port = free_port()
    conf = directory / "nginx-failover.conf"
    servers = " ".join(f"server 127.0.0.1:{p} max_fails=5 fail_timeout=30s;" for p in ports)
    conf.write_text(
        nginx_conf(
            directory,
            f"  upstream up {{ {servers} keepalive 256; }}\n"
            f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; "
            'proxy_http_version 1.1; proxy_set_header Connection ""; '
            "proxy_next_upstream error timeout http_502 http_503 non_idempotent; } }",
        )
    )
    found["nginx 1 worker"] = (["nginx", "-c", str(conf)], port, {}, {})
    port = free_port()
    conf = directory / "haproxy-failover.cfg"
    servers = "".join(
        f"  server up{i} 127.0.0.1:{p} check inter 2s fall 3 rise 2 "
        "observe layer7 error-limit 5 on-error mark-down\n"
        for i, p in enumerate(ports)
    )
    conf.write_text(
        "global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode http\n"
        "  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n"
        "  option http-no-delay\n  retries 3\n  option redispatch 1\n  retry-on conn-failure empty-response\n"
        f"frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n"
        f"backend b\n  balance roundrobin\n  http-reuse always\n"
        # HTTP health checks: a TCP check would pass against the tombstone, which accepts.
        f"  option httpchk GET /v1/models\n{servers}"
    )
    found["haproxy 1 thread"] = (["haproxy", "-f", str(conf), "-db"], port, {}, {})
    try:
        litellm = ensure_litellm()
    except (subprocess.SubprocessError, OSError) as e:
        missing["LiteLLM proxy (failover)"] = f"could not be installed: {e}"
    else:
        port = free_port()
        conf = directory / "litellm-failover.yaml"
        deployments = "".join(
            "  - model_name: m1\n    litellm_params:\n      model: openai/m1\n"
            f"      api_base: {url}/v1\n      api_key: sk-bench-upstream\n"
            for url in urls
        )
        conf.write_text(
            f"model_list:\n{deployments}"
            "router_settings:\n  routing_strategy: simple-shuffle\n  num_retries: 2\n"
            "  allowed_fails: 5\n  cooldown_time: 30\n"
            "general_settings:\n  master_key: sk-bench\n"
        )
        found[f"LiteLLM proxy ({LITELLM.split('==')[1]})"] = (
            [str(litellm), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port),
             "--num_workers", "1"],
            port,
            {"Authorization": "Bearer sk-bench"},
            {"LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        )  # fmt: skip
    try:
        portkey = ensure_portkey()
    except (subprocess.SubprocessError, OSError) as e:
        missing["Portkey gateway (failover)"] = f"could not be installed: {e}"
    else:
        port = free_port()

        def target(url: str) -> dict[str, Any]:
            return {
                "provider": "openai",
                "api_key": "sk-bench-upstream",
                "custom_host": url + "/v1",
            }

        # Round robin with failover: load-balance over three fallback chains, one per start.
        rotations = [urls[i:] + urls[:i] for i in range(len(urls))]
        config = {
            "strategy": {"mode": "loadbalance"},
            "targets": [
                {"strategy": {"mode": "fallback"}, "targets": [target(u) for u in rotation]}
                for rotation in rotations
            ],
        }
        found["Portkey gateway"] = (
            ["node", str(portkey), f"--port={port}"],
            port,
            {"x-portkey-config": json.dumps(config, separators=(",", ":"))},
            {},
        )
    return found


def failover(
    directory: Path,
    missing: dict[str, str],
    only: list[str],
    *,
    rate: float = 200,
    duration: float = 12,
    kill_at: float = 4,
) -> list[dict[str, Any]]:
    """Three upstreams, one dies at ``kill_at``; ``rate`` requests/s, open loop."""
    found: list[dict[str, Any]] = []
    names = list(failover_targets(directory, [1, 2, 3], {}))
    for name in names:
        if only and not any(o in name for o in only):
            continue
        print(f"== failover: {name}", file=sys.stderr, flush=True)
        with contextlib.ExitStack() as stack:
            fakes = [
                stack.enter_context(loadfake(directory, f"f{i}", "--delay-ms", "5"))
                for i in range(3)
            ]
            spec = failover_targets(directory, [p for p, _ in fakes], missing).get(name)
            if spec is None:
                continue
            with running(name, spec, directory, missing):
                run_wrk(spec[1], 4, 1, lua_script(directory / "warm.lua", spec[2]))
                dead_port, dead_pid = fakes[1]
                result = loadgen(
                    "failover", f"http://127.0.0.1:{spec[1]}/v1/chat/completions",
                    "--rate", str(rate), "--duration", str(duration), "--kill-at", str(kill_at),
                    "--kill-pid", str(dead_pid), "--dead-port", str(dead_port),
                    *header_args(spec[2]),
                )  # fmt: skip
        found.append({"target": name, **summarize_failover(result)})
    return found


def summarize_failover(result: dict[str, Any]) -> dict[str, Any]:
    requests = result["requests"]
    killed = float(result["killed_at"] or 0)
    after = [r for r in requests if r[0] >= killed]
    event = [r for r in requests if killed <= r[0] < killed + 2]
    late_hits = [t for t in result["dead_hits"] if t >= killed + 1]

    def p99(rows: list[list[Any]]) -> float | None:
        latencies = sorted(r[1] for r in rows)
        return (
            latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] if rows else None
        )

    buckets: dict[int, list[list[Any]]] = {}
    for row in requests:
        buckets.setdefault(int(row[0] * 4), []).append(row)  # 250 ms
    hits: dict[int, int] = {}
    for t in result["dead_hits"]:
        hits[int(t * 4)] = hits.get(int(t * 4), 0) + 1
    timeline = [
        {
            "t": key / 4,
            "ok_per_s": sum(1 for r in rows if r[2]) * 4,
            "errors_per_s": sum(1 for r in rows if not r[2]) * 4,
            "p99_ms": p99(rows),
            "dead_hits_per_s": hits.get(key, 0) * 4,
        }
        for key, rows in sorted(buckets.items())
    ]
    return {
        "rate": result["rate"],
        "killed_at": killed,
        "requests": len(requests),
        "errors": sum(1 for r in requests if not r[2]),
        "errors_after_kill": sum(1 for r in after if not r[2]),
        "p99_ms": p99(requests),
        "p99_event_ms": p99(event),
        "dead_hits": len(result["dead_hits"]),
        "dead_hits_after_1s": len(late_hits),
        "timeline": timeline,
    }


# -- client auth ------------------------------------------------------------------------------


def post_chat(port: int, body: str = BODY) -> tuple[int, Message, bytes]:
    """One POST /v1/chat/completions through the proxy, without a client key: (status,
    headers, body), an error status too."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return int(answer.status), answer.headers, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def keyless_status(port: int) -> int:
    """The status a request without a client key gets."""
    return post_chat(port)[0]


def best_us(call: Callable[[], object], calls: int = 20000) -> float:
    """µs per ``call()`` in this process: the best of 5 runs of ``calls`` calls."""
    return min(timeit.repeat(call, number=calls, repeat=5)) / calls * 1e6


def key_check_us(keys: int = 20, calls: int = 20000) -> dict[str, float]:
    """The check alone, in this process: µs per ``ClientKeys.client`` call with ``keys`` keys,
    for the last key (what the load sends) and for no key."""
    from sluice.proxy.access import ClientKeys  # noqa: PLC0415 - only this scenario needs it

    made = {f"client-{i}": secrets.token_urlsafe(32) for i in range(keys)}
    checker = ClientKeys.of(made)
    last = made[f"client-{keys - 1}"]
    assert checker.client(last) == f"client-{keys - 1}"
    return {
        name: best_us(lambda k=key: checker.client(k), calls)
        for name, key in (("valid_key_us", last), ("no_key_us", None))
    }


def off_on(
    directory: Path,
    missing: dict[str, str],
    *,
    feature: str,
    start: Callable[[bool], Target],
    duration: int,
    rounds: int,
    script: Path,
    connections: int = 32,
    probe: Callable[[int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Sluice without and with ``feature`` (``start(on)``: the target to run), off, on, off,
    on, ... each a fresh process, wrk closed loop (``closed_loop``). ``probe(port)``, if given,
    runs before each timed run and its fields join the run's row."""
    found: list[dict[str, Any]] = []
    for index in range(rounds):
        for on in (False, True):
            target = start(on)
            name = f"sluice proxy, {feature} {'on' if on else 'off'}"
            print(f"== {feature}, round {index + 1}: {name}", file=sys.stderr, flush=True)
            with running(name, target, directory, missing) as pgid:
                seen = probe(target[1]) if probe else {}
                run = closed_loop(pgid, target[1], connections, duration, script)
                found.append({"round": index + 1, "on": on, **run, **seen})
                print(f"   {found[-1]}", file=sys.stderr, flush=True)
    return found


def client_auth(
    directory: Path, missing: dict[str, str], duration: int, rounds: int, connections: int = 32
) -> list[dict[str, Any]]:
    """Sluice without and with ``--client-keys`` (a file of 20 keys; the load sends the last),
    interleaved (``off_on``). Both runs send the same Authorization header, so the only
    difference is the check."""
    keys = [secrets.token_urlsafe(32) for _ in range(20)]
    key_file = directory / "client-keys"
    key_file.write_text("".join(f"{k}\n" for k in keys))
    headers = {"Authorization": f"Bearer {keys[-1]}"}
    script = lua_script(directory / "client-auth.lua", headers)
    with nginx_upstream(directory) as upstream_port:

        def start(on: bool) -> Target:
            argv, port = sluice_argv(directory, upstream_port, loop="uvloop")
            return [*argv, *(["--client-keys", str(key_file)] if on else [])], port, headers, {}

        return off_on(
            directory, missing, feature="client keys", start=start, duration=duration,
            rounds=rounds, script=script, connections=connections,
            probe=lambda port: {"keyless_status": keyless_status(port)},
        )  # fmt: skip


# -- rate limits: the limiter on the request path, never reached -------------------------------

# So large the load never comes near either (settled, each request counts its 2 tokens of usage).
NEVER_REACHED = 100_000_000
LIMITS = {"requestsPerMinute": NEVER_REACHED, "tokensPerMinute": NEVER_REACHED}
LIMITS_CHECK_REQUESTS = 50


def upstream_health(port: int) -> dict[str, Any]:
    """The ``bench`` Upstream's entry in the proxy's /health."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
        upstreams = json.loads(answer.read())["upstreams"]
    return dict(next(u for u in upstreams if u["name"] == "bench"))


def check_limits(port: int, requests: int = LIMITS_CHECK_REQUESTS) -> str:
    """``requests`` requests through a proxy whose Upstream has LIMITS: each must be a 200 from
    that upstream (x-sluice-upstream), and /health must show every one taken by the limiter,
    its tokens settled to the usage nginx answers (2 a request); else RuntimeError."""
    statuses: dict[tuple[int, str | None], int] = {}
    for _ in range(requests):
        status, headers, _ = post_chat(port)
        got = status, headers.get("x-sluice-upstream")
        statuses[got] = statuses.get(got, 0) + 1
    limits = upstream_health(port).get("rateLimits", {})
    taken = {name: limits.get(name, {}).get("taken") for name in LIMITS}
    want_tokens = 2 * requests  # COMPLETION's usage.total_tokens
    seen = f"{requests} requests: " + ", ".join(
        f"{n} x {status} from {upstream}" for (status, upstream), n in statuses.items()
    )
    seen += (
        f"; /health rateLimits taken: {taken['requestsPerMinute']} requests, "
        f"{taken['tokensPerMinute']} tokens (share {limits.get('shareFrom')})"
    )
    if statuses != {(200, "bench"): requests} or taken != {
        "requestsPerMinute": requests, "tokensPerMinute": want_tokens,
    }:  # fmt: skip
        raise RuntimeError(f"limits check failed: {seen}; {limits}")
    return seen


def limiter_us(calls: int = 20000) -> dict[str, float]:
    """The limiter alone, in this process: µs per request for what the request path does with
    LIMITS (estimate the tokens, has_room, take, settle), with time.monotonic as the clock."""
    from sluice.core.ratelimit import Allowance  # noqa: PLC0415 - only this scenario needs it
    from sluice.proxy.quotas import estimate_tokens  # noqa: PLC0415

    allowance = Allowance(NEVER_REACHED, NEVER_REACHED)
    raw = BODY.encode()
    body = json.loads(raw)
    clock = time.monotonic

    def one() -> None:
        tokens = estimate_tokens(body, raw)
        assert allowance.has_room(clock(), tokens)
        allowance.settle(allowance.take(clock(), tokens), 2, clock())

    return {"limiter_us": best_us(one, calls)}


def limits(
    directory: Path, missing: dict[str, str], duration: int, rounds: int, connections: int = 32
) -> dict[str, Any]:
    """Sluice without and with LIMITS on its Upstream (never reached: every request goes
    through the limiter's check, take and settle and none is refused), interleaved
    (``off_on``), after one check (``check_limits``) in a process of its own."""
    script = lua_script(directory / "limits.lua", {})
    found: dict[str, Any] = {"check": None, "runs": []}
    with nginx_upstream(directory) as upstream_port:

        def start(on: bool) -> Target:
            argv, port = sluice_argv(
                directory, upstream_port, loop="uvloop", limits=LIMITS if on else None
            )
            return argv, port, {}, {}

        target = start(True)
        with running("limits check", target, directory, missing):
            found["check"] = check_limits(target[1])
            print(f"== limits, check: {found['check']}", file=sys.stderr, flush=True)
        if missing or found["check"] is None:
            return found
        found["runs"] = off_on(
            directory, missing, feature="limits", start=start, duration=duration,
            rounds=rounds, script=script, connections=connections,
        )  # fmt: skip
    return found


# -- before and after: one commit's proxy beside another's ------------------------------------


def closed_loop(
    pgid: int, port: int, connections: int, duration: int, script: Path
) -> dict[str, Any]:
    """wrk against a running target after a 2 s warm-up; proxy CPU is its process group's
    user + system time over the timed run, divided by the requests wrk completed."""
    run_wrk(port, 8, 2, script)  # warm-up: connections, caches
    before = group_cpu_seconds(pgid)
    rps, p50, p99, total, errors = run_wrk(port, connections, duration, script)
    cpu = (group_cpu_seconds(pgid) - before) / total * 1e6 if total else None
    return {
        "connections": connections, "duration": duration, "rps": rps, "p50_ms": p50,
        "p99_ms": p99, "cpu_us_per_request": cpu, "errors": errors,
    }  # fmt: skip


def naive_target(upstream_port: int, loop: str) -> Target:
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "naive_passthrough.py"), str(port)]
    argv += [f"http://127.0.0.1:{upstream_port}", *(["uvloop"] if loop == "uvloop" else [])]
    return argv, port, {}, {}


def before_after(
    directory: Path,
    missing: dict[str, str],
    trees: list[tuple[str, dict[str, str]]],
    *,
    duration: int,
    rounds: int,
    loop: str,
    connections: int = 32,
    stream_duration: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """The naive passthrough and Sluice from each of ``trees`` (label, env putting that
    commit's ``src`` first on PYTHONPATH), a fresh process each run, in rounds: in order in odd
    rounds, reversed in even ones (so a drift over the run weighs on each alike). Non-streaming,
    wrk closed loop against the throughput scenario's nginx upstream. Then, if
    ``stream_duration``, one streaming run each (and the fake upstream directly) as in
    ``streams``."""
    names = ["naive aiohttp passthrough", *(label for label, _ in trees)]
    envs = dict(trees)
    script = lua_script(directory / "before-after.lua", {})

    def spec(name: str, upstream_port: int) -> Target:
        if name not in envs:
            return naive_target(upstream_port, loop)
        argv, port = sluice_argv(directory, upstream_port, loop=loop)
        return argv, port, {}, envs[name]

    found: dict[str, list[dict[str, Any]]] = {"runs": [], "streams": []}
    with nginx_upstream(directory) as upstream_port:
        for index in range(rounds):
            for name in names if index % 2 == 0 else names[::-1]:
                print(f"== before/after, round {index + 1}: {name}", file=sys.stderr, flush=True)
                target = spec(name, upstream_port)
                with running(name, target, directory, missing) as pgid:
                    run = closed_loop(pgid, target[1], connections, duration, script)
                    found["runs"].append({"round": index + 1, "target": name, **run})
                    print(f"   {found['runs'][-1]}", file=sys.stderr, flush=True)
    if not stream_duration:
        return found
    options = ("--chunks", "20", "--chunk-interval-ms", "10")
    with loadfake(directory, "before-after", *options) as (upstream_port, _):
        args = ["stream", "--connections", "16", "--duration", str(stream_duration)]
        url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        print("== before/after, streams: direct", file=sys.stderr, flush=True)
        found["streams"].append({"target": "direct (no proxy)", **loadgen(*args, url)})
        for name in names:
            print(f"== before/after, streams: {name}", file=sys.stderr, flush=True)
            target = spec(name, upstream_port)
            with running(name, target, directory, missing) as pgid:
                url = f"http://127.0.0.1:{target[1]}/v1/chat/completions"
                loadgen("stream", url, "--connections", "4", "--duration", "1")  # warm-up
                before = group_cpu_seconds(pgid)
                result = loadgen(*args, url)
                cpu = group_cpu_seconds(pgid) - before
                per = cpu / result["streams"] * 1e6 if result["streams"] else None
                found["streams"].append({"target": name, **result, "cpu_us_per_stream": per})
                print(f"   {found['streams'][-1]}", file=sys.stderr, flush=True)
    return found


# -- an Anthropic upstream beside an OpenAI-compatible one -------------------------------------

# A plain chat the translator takes as it is: one user message and max_tokens.
CHAT_BODY = '{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":64}'
PROVIDERS = ("openai-compatible", "anthropic")


def chat_once(port: int, body: str = CHAT_BODY) -> tuple[int, dict[str, Any]]:
    """One non-streaming chat through the proxy: (status, the JSON answer)."""
    status, _, raw = post_chat(port, body)
    return status, json.loads(raw or b"{}")


def check_chat(provider: str, port: int) -> str:
    """What one request through the proxy got; raises RuntimeError unless it is a 200 with a
    chat.completion, for Anthropic one translated from nginx's Message."""
    status, answer = chat_once(port)
    message = json.loads(ANTHROPIC_MESSAGE)
    if provider == "anthropic":
        want_id, want_text = message["id"], message["content"][0]["text"]
        want_prompt = message["usage"]["input_tokens"]
    else:
        want_id, want_text, want_prompt = "chatcmpl-bench", "hello", 1
    choice = (answer.get("choices") or [{}])[0]
    got = (
        status, answer.get("object"), answer.get("id"), choice.get("message", {}).get("content"),
        choice.get("finish_reason"), answer.get("usage", {}).get("prompt_tokens"),
    )  # fmt: skip
    want = (200, "chat.completion", want_id, want_text, "stop", want_prompt)
    if got != want:
        raise RuntimeError(f"{provider}: got {got}, wanted {want}: {answer}")
    return f"{status} {answer['object']} id {answer['id']} content {want_text!r}"


def anthropic(
    directory: Path,
    missing: dict[str, str],
    *,
    duration: int,
    rounds: int,
    loop: str = "uvloop",
    connections: int = 32,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Sluice with an OpenAI-compatible Upstream and Sluice with an ``anthropic`` one, both
    with an API key from a Secret, against the same nginx (``/v1/chat/completions`` answers a
    fixed completion, ``/v1/messages`` a fixed Message): a fresh process each run, in the order
    openai-compatible, anthropic in odd rounds and reversed in even ones. Each is checked once
    (a 200 with a chat.completion, translated for Anthropic) before anything is timed. ``env``
    (source_env) picks the tree Sluice is imported from."""
    script = lua_script(directory / "anthropic.lua", {}, CHAT_BODY)
    found: dict[str, Any] = {"checks": {}, "runs": []}

    def spec(provider: str, upstream_port: int) -> Target:
        argv, port = sluice_argv(directory, upstream_port, loop=loop, provider=provider, key=True)
        return argv, port, {}, env or {}

    with nginx_upstream(directory) as upstream_port:
        for provider in PROVIDERS:
            target = spec(provider, upstream_port)
            with running(provider, target, directory, missing):  # a failed check goes to missing
                found["checks"][provider] = check_chat(provider, target[1])
                print(f"== anthropic, check: {provider}: {found['checks'][provider]}",
                      file=sys.stderr, flush=True)  # fmt: skip
        if missing:
            return found
        for index in range(rounds):
            for provider in PROVIDERS if index % 2 == 0 else PROVIDERS[::-1]:
                print(f"== anthropic, round {index + 1}: {provider}", file=sys.stderr, flush=True)
                target = spec(provider, upstream_port)
                with running(provider, target, directory, missing) as pgid:
                    run = closed_loop(pgid, target[1], connections, duration, script)
                    found["runs"].append({"round": index + 1, "provider": provider, **run})
                    print(f"   {found['runs'][-1]}", file=sys.stderr, flush=True)
    return found
