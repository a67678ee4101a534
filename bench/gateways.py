"""Sluice beside the proxies users would pick instead, in one run on one machine.

    .venv/bin/python bench/gateways.py [--duration 10] [--connections 1,32] [--output FILE]

Peers are installed into Sluice's cache (``~/.cache/sluice/bench``), pinned, never as project
dependencies: LiteLLM's proxy in a venv of its own, Portkey's gateway with npm. Every target
proxies the same upstream (nginx answering a fixed chat completion, so the
upstream is never the bottleneck) and is loaded by the same wrk with a Lua POST script. The
proxy under test is pinned to core 0; wrk and the upstream share core 1. Targets: the upstream
directly, a naive aiohttp passthrough (the floor issue 7 sets), Sluice's standalone proxy,
LiteLLM, Portkey, and nginx and HAProxy from Debian as the C baselines. Figures are for this
run only: compare the ratios, not the absolute numbers, across machines.

Not measured yet (see docs/benchmarks.md): streams, failover, memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROXY_CORE, LOAD_CORE = "0", "1"
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "m1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)
POST_LUA = """wrk.method = "POST"
wrk.body = '{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
"""
LITELLM = "litellm[proxy]==1.106.2"
PORTKEY = "@portkey-ai/gateway@1.15.2"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


@contextmanager
def process(
    argv: list[str], core: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    """Run argv pinned to a core in a session of its own; yield its process group id."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", core, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        try:
            yield proc.pid
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every process in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def nginx_conf(directory: Path, body: str) -> str:
    temp = directory / "nginx-temp"
    temp.mkdir(exist_ok=True)
    paths = "\n".join(
        f"  {k}_temp_path {temp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"worker_processes 1;\ndaemon off;\n"
        f"pid {directory}/nginx-{os.getpid()}-{time.time_ns()}.pid;\n"
        "error_log stderr warn;\nevents { worker_connections 8192; }\n"
        f"http {{\n  access_log off;\n{paths}\n{body}\n}}\n"
    )


def run_wrk(
    port: int, connections: int, duration: int, script: Path
) -> tuple[float, float, float, int, int]:
    threads = "1"
    output = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CORE,
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        match = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", output)
        assert match, output
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in match.groups())
    return rps, percentile("50"), percentile("99"), total, errors


def tools_venv(*requirements: str) -> Path:
    """A venv in the benchmark cache with ``requirements`` (py-spy, matplotlib), made once."""
    venv = cache() / "tools-venv"
    stamp = venv / "requirements.txt"
    wanted = "\n".join(sorted(requirements))
    have = stamp.read_text() if stamp.exists() else ""
    if not set(wanted.split()) <= set(have.split()):
        print(f"installing {', '.join(requirements)} into {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *requirements], check=True, timeout=900
        )
        stamp.write_text("\n".join(sorted(set(have.split()) | set(wanted.split()))))
    return venv


@contextmanager
def nginx_upstream(directory: Path, port: int = 0) -> Iterator[int]:
    """nginx on the load core answering every request with COMPLETION; yields its port."""
    port = port or free_port()
    conf = directory / "nginx-upstream.conf"
    escaped = COMPLETION.replace("'", "\\'")
    conf.write_text(
        nginx_conf(
            directory,
            (
                f"  server {{ listen 127.0.0.1:{port} backlog=4096; "
                "keepalive_requests 1000000; "
                f"location / {{ default_type application/json; return 200 '{escaped}'; }} }}"
            ),
        )
    )
    with process(["nginx", "-c", str(conf)], LOAD_CORE, directory / "upstream.log"):
        wait_for_port(port)
        yield port


def sluice_argv(directory: Path, upstream_port: int, *, loop: str) -> tuple[list[str], int]:
    port = free_port()
    sluice = shutil.which("sluice", path=str(Path(sys.executable).parent)) or "sluice"
    manifest = sluice_manifest(directory, upstream_port)
    argv = [sluice, "proxy", "--manifests", str(manifest), "--port", str(port), "--loop", loop]
    return argv, port


def sluice_manifest(directory: Path, upstream_port: int) -> Path:
    path = directory / "bench.yaml"
    path.write_text(
        "apiVersion: sluice.dev/v1alpha1\nkind: Upstream\nmetadata: {name: bench}\n"
        f"spec: {{provider: openai-compatible, baseURL: 'http://127.0.0.1:{upstream_port}/v1', "
        "models: [{name: m1}]}\n"
    )
    return path


def cache() -> Path:
    base = os.environ.get("SLUICE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "sluice"
    )
    return Path(base) / "bench"


def ensure_litellm() -> Path:
    """LiteLLM's proxy in a venv of its own in the cache (never a project dependency)."""
    venv = cache() / "litellm-venv"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        print(f"installing {LITELLM} into {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", LITELLM], check=True, timeout=900
        )
    return binary


def ensure_portkey() -> Path:
    """Portkey's gateway from npm, in the cache."""
    directory = cache() / "portkey"
    script = directory / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        print(f"installing {PORTKEY} into {directory} ...", file=sys.stderr, flush=True)
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", PORTKEY],
            cwd=directory,
            check=True,
            timeout=600,
        )
    return script


Target = tuple[list[str], int, dict[str, str], dict[str, str]]  # argv, port, headers, env


def targets(
    directory: Path, upstream_port: int, missing: dict[str, str]
) -> dict[str, Target | None]:
    """Name -> (argv, port, request headers, env) to start pinned to the proxy core; None: the
    upstream itself. Peers that cannot be installed go to ``missing`` with the reason."""
    python = sys.executable
    upstream = f"http://127.0.0.1:{upstream_port}"
    found: dict[str, Target | None] = {"direct (no proxy)": None}
    port = free_port()
    found["naive aiohttp passthrough"] = (
        [python, str(ROOT / "bench" / "naive_passthrough.py"), str(port), upstream],
        port,
        {},
        {},
    )
    port = free_port()
    found["naive aiohttp passthrough, uvloop"] = (
        [python, str(ROOT / "bench" / "naive_passthrough.py"), str(port), upstream, "uvloop"],
        port,
        {},
        {},
    )
    for loop in ("asyncio", "uvloop"):
        argv, port = sluice_argv(directory, upstream_port, loop=loop)
        found[f"sluice proxy (standalone, {loop})"] = (argv, port, {}, {})
    if shutil.which("nginx"):
        port = free_port()
        conf = directory / "nginx-proxy.conf"
        conf.write_text(
            nginx_conf(
                directory,
                (
                    f"  upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}\n"
                    f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; "
                    'proxy_http_version 1.1; proxy_set_header Connection ""; } }'
                ),
            )
        )
        found["nginx 1 worker (C baseline)"] = (["nginx", "-c", str(conf)], port, {}, {})
    if shutil.which("haproxy"):
        port = free_port()
        conf = directory / "haproxy.cfg"
        conf.write_text(
            "global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode http\n"
            "  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
            f"frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n"
            f"backend b\n  http-reuse always\n  server up 127.0.0.1:{upstream_port}\n"
        )
        found["haproxy 1 thread (C baseline)"] = (["haproxy", "-f", str(conf), "-db"], port, {}, {})
    try:
        litellm = ensure_litellm()
    except (subprocess.SubprocessError, OSError) as e:
        missing["LiteLLM proxy"] = f"could not be installed: {e}"
    else:
        port = free_port()
        conf = directory / "litellm.yaml"
        conf.write_text(
            "model_list:\n  - model_name: m1\n    litellm_params:\n      model: openai/m1\n"
            f"      api_base: {upstream}/v1\n      api_key: sk-bench-upstream\n"
            "general_settings:\n  master_key: sk-bench\n"
        )
        found[f"LiteLLM proxy ({LITELLM.split('==')[1]}, 1 worker)"] = (
            [
                str(litellm),
                "--config",
                str(conf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            port,
            {"Authorization": "Bearer sk-bench"},
            # No internet here: use the cost map the package ships instead of fetching one.
            {"LITELLM_MASTER_KEY": "sk-bench", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        )
    try:
        portkey = ensure_portkey()
    except (subprocess.SubprocessError, OSError) as e:
        missing["Portkey gateway"] = f"could not be installed: {e}"
    else:
        port = free_port()
        found[f"Portkey gateway ({PORTKEY.rsplit('@', 1)[1]})"] = (
            ["node", str(portkey), f"--port={port}"],
            port,
            {
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": f"{upstream}/v1",
                "Authorization": "Bearer sk-bench-upstream",
            },
            {},
        )
    return found


def measure(
    duration: int, connections: list[int], missing: dict[str, str], only: list[str]
) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        directory = Path(tmp)
        upstream_port = free_port()
        every = targets(directory, upstream_port, missing)  # installs peers before timing
        every = {k: v for k, v in every.items() if not only or any(o in k for o in only)}
        with nginx_upstream(directory, upstream_port):
            for index, (name, spec) in enumerate(every.items()):
                print(f"== {name}", file=sys.stderr, flush=True)
                if spec is None:
                    script = lua_script(directory / f"post-{index}.lua", {})
                    results += _load(
                        name,
                        upstream_port,
                        None,
                        duration=duration,
                        connections=connections,
                        script=script,
                    )
                    continue
                argv, port, headers, env = spec
                script = lua_script(directory / f"post-{index}.lua", headers)
                try:
                    with process(argv, PROXY_CORE, directory / f"{port}.log", env) as pgid:
                        wait_for_port(port, timeout=60)
                        run_wrk(port, 8, 2, script)  # warm-up: connections, caches
                        results += _load(
                            name,
                            port,
                            pgid,
                            duration=duration,
                            connections=connections,
                            script=script,
                        )
                except (RuntimeError, subprocess.CalledProcessError) as e:
                    log = (directory / f"{port}.log").read_text(errors="replace")[-500:]
                    missing[name] = f"did not run: {e}; {log}"
    return results


def lua_script(path: Path, headers: dict[str, str]) -> Path:
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    path.write_text(POST_LUA + extra)
    return path


def _load(
    name: str,
    port: int,
    pgid: int | None,
    *,
    duration: int,
    connections: list[int],
    script: Path,
) -> list[Result]:
    found = []
    for c in connections:
        before = group_cpu_seconds(pgid) if pgid else 0.0
        rps, p50, p99, total, errors = run_wrk(port, c, duration, script)
        cpu = (group_cpu_seconds(pgid) - before) / total * 1e6 if pgid and total else None
        found.append(Result(name, c, rps, p50, p99, cpu, errors))
        print(
            f"   c={c}: {rps:.0f} req/s p50 {p50:.2f} ms p99 {p99:.2f} ms"
            + (f" cpu {cpu:.0f} us/req" if cpu else "")
            + f" errors {errors}",
            file=sys.stderr,
            flush=True,
        )
    return found


def report(results: list[Result], duration: int, missing: dict[str, str]) -> str:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/gateways.py`. Do not edit: run it again.",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu_model}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}. The proxy under test is "
        "pinned to core 0; wrk (1 thread) and the upstream (nginx answering a fixed chat "
        f"completion) share core 1. {duration} s per run after a warm-up; non-streaming "
        "`POST /v1/chat/completions` only.",
        "",
    ]
    connections = sorted({r.connections for r in results})
    for c in connections:
        rows = [r for r in results if r.connections == c]
        direct = next(r for r in rows if r.target.startswith("direct"))
        naive = next((r for r in rows if r.target.startswith("naive")), None)
        lines += [
            f"## {c} connection{'s' if c != 1 else ''}",
            "",
            "| target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU µs/req "
            "| req/s vs naive | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            added = "" if r is direct else f"{r.p50_ms - direct.p50_ms:.2f}"
            added99 = "" if r is direct else f"{r.p99_ms - direct.p99_ms:.2f}"
            cpu = "" if r.cpu_us_per_request is None else f"{r.cpu_us_per_request:.0f}"
            vs = "" if naive is None or r is direct else f"{r.rps / naive.rps:.2f}x"
            lines.append(
                f"| {r.target} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{added} | {added99} | {cpu} | {vs} | {r.errors} |"
            )
        lines.append("")
    if missing:
        lines += ["## Could not be measured", ""]
        lines += [f"- {name}: {reason}" for name, reason in missing.items()]
        lines.append("")
    lines += [
        "## Not measured yet",
        "",
        "- Streams (added time to first token, chunks per second), failover (an upstream dying "
        "mid-run), memory per idle and active connection, plots.",
        "- Latency at a fixed rate (half of saturation) needs an open-loop load generator; wrk "
        "is closed-loop, so the 1-connection row stands in for an unloaded proxy.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--only", default="", help="comma-separated parts of target names to run (default: all)"
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset", "node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install wrk nginx-light haproxy util-linux")
    missing: dict[str, str] = {}
    only = [o for o in args.only.split(",") if o]
    results = measure(args.duration, [int(c) for c in args.connections.split(",")], missing, only)
    args.output.write_text(report(results, args.duration, missing))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
