"""What every benchmark shares: pinned processes, ports, wrk, peers installed into the cache,
and the targets (Sluice, the naive passthrough, nginx, HAProxy, LiteLLM, Portkey) to compare."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
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
# What nginx answers POST /v1/messages with: an Anthropic Message (anthropic.types.Message).
ANTHROPIC_MESSAGE = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [{"type": "text", "text": "hello from the bench"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
)
BODY = '{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
POST_LUA = """wrk.method = "POST"
wrk.body = '{body}'
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
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except ProcessLookupError:  # already gone (the failover run kills one on purpose)
                proc.wait()
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
    """nginx on the load core answering ``/v1/messages`` with ANTHROPIC_MESSAGE and every
    other request with COMPLETION; yields its port."""
    port = port or free_port()
    conf = directory / "nginx-upstream.conf"
    completion = COMPLETION.replace("'", "\\'")
    message = ANTHROPIC_MESSAGE.replace("'", "\\'")
    conf.write_text(
        nginx_conf(
            directory,
            (
                f"  server {{ listen 127.0.0.1:{port} backlog=4096; "
                "keepalive_requests 1000000; "
                f"location = /v1/messages {{ default_type application/json; "
                f"return 200 '{message}'; }} "
                f"location / {{ default_type application/json; return 200 '{completion}'; }} }}"
            ),
        )
    )
    with process(["nginx", "-c", str(conf)], LOAD_CORE, directory / "upstream.log"):
        wait_for_port(port)
        yield port


def sluice_argv(
    directory: Path,
    upstream_port: int,
    *,
    loop: str,
    provider: str = "openai-compatible",
    key: bool = False,
    limits: dict[str, int] | None = None,
) -> tuple[list[str], int]:
    port = free_port()
    sluice = shutil.which("sluice", path=str(Path(sys.executable).parent)) or "sluice"
    manifest = sluice_manifest(directory, upstream_port, provider, key=key, limits=limits)
    argv = [sluice, "proxy", "--manifests", str(manifest), "--port", str(port), "--loop", loop]
    return argv, port


def sluice_manifest(
    directory: Path,
    upstream_port: int,
    provider: str = "openai-compatible",
    *,
    key: bool = False,
    limits: dict[str, int] | None = None,
) -> Path:
    """One Upstream, ``bench``, serving m1 from the nginx upstream in ``provider``'s format;
    with ``key``, an API key from a Secret (sent as Authorization or x-api-key); with
    ``limits``, that ``spec.limits`` (e.g. ``{"requestsPerMinute": 100}``)."""
    name = "bench" if provider == "openai-compatible" and not key else f"bench-{provider}"
    path = directory / f"{name}{'-key' if key else ''}{'-limits' if limits else ''}.yaml"
    limits_field = ", ".join(f"{k}: {v}" for k, v in (limits or {}).items())
    key_document = "apiVersion: v1\nkind: Secret\nmetadata: {name: bench-key}\n"
    key_document += "stringData: {apiKey: sk-bench-upstream}\n---\n"
    path.write_text(
        (key_document if key else "")
        + "apiVersion: sluice.dev/v1alpha1\nkind: Upstream\nmetadata: {name: bench}\n"
        f"spec: {{provider: {provider}, baseURL: 'http://127.0.0.1:{upstream_port}/v1', "
        + ("credentials: {secretRef: {name: bench-key}}, " if key else "")
        + (f"limits: {{{limits_field}}}, " if limits else "")
        + "models: [{name: m1}]}\n"
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
                    'proxy_http_version 1.1; proxy_set_header Connection ""; '
                    "proxy_buffering off; } }"
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
            "  option http-no-delay\n"  # pass stream chunks on at once, as the others do
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


def lua_script(path: Path, headers: dict[str, str], body: str = BODY) -> Path:
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    path.write_text(POST_LUA.replace("{body}", body) + extra)
    return path


def _section_end(lines: list[str], start: int) -> int:
    return next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))


def page_section(path: Path, heading: str) -> str | None:
    """The ``## heading`` section of a Markdown page (up to the next ``## ``), or None."""
    lines = path.read_text().splitlines() if path.exists() else []
    if f"## {heading}" not in lines:
        return None
    start = lines.index(f"## {heading}")
    return "\n".join(lines[start : _section_end(lines, start)]).rstrip() + "\n"


def write_section(path: Path, heading: str, text: str) -> None:
    """Put ``text`` (starting ``## heading``) into the page at ``path``: in place of the section
    with that heading, else before "## Could not be measured", else at the end. The rest of the
    page stays as it is."""
    lines = path.read_text().splitlines() if path.exists() else []
    new = [*text.rstrip().splitlines(), ""]
    if f"## {heading}" in lines:
        start = lines.index(f"## {heading}")
        end = _section_end(lines, start)
    elif "## Could not be measured" in lines:
        start = end = lines.index("## Could not be measured")
    else:
        if lines and lines[-1]:
            lines.append("")
        start = end = len(lines)
    path.write_text("\n".join([*lines[:start], *new, *lines[end:]]).rstrip() + "\n")


def source_state() -> str:
    """The commit the proxy's source is at, and whether src/ has changes not committed."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in src/" if dirty else "")


def commit(rev: str) -> str:
    """``rev`` (a commit, a branch, HEAD) as a short commit id."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip


@contextmanager
def commit_source(rev: str) -> Iterator[Path]:
    """``src`` of commit ``rev``, extracted (read-only on the repository: no worktree)."""
    with tempfile.TemporaryDirectory(prefix="sluice-old-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / "src"


def imported_from(env: dict[str, str]) -> str:
    """Where ``import sluice`` finds the package with ``env`` added to this environment."""
    return subprocess.run(
        [sys.executable, "-c", "import sluice; print(sluice.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        timeout=30,
    ).stdout.strip()


def source_env(src: Path) -> dict[str, str]:
    """The environment that makes a proxy started with this venv's Python import Sluice from
    ``src`` (an extracted commit_source): ``src`` first on PYTHONPATH. Checked: exits if
    ``import sluice`` still finds another copy."""
    env = {"PYTHONPATH": str(src)}
    where = imported_from(env)
    if not where.startswith(str(src)):
        sys.exit(f"PYTHONPATH={src} still imports {where}")
    return env
