"""Sluice beside the proxies users would pick instead, in one run on one machine.

    .venv/bin/python bench/gateways.py [--duration 8] [--connections 1,32] [--only NAMES]
        [--scenarios throughput,open-loop,streams,failover,memory,client-auth] [--output FILE]
    .venv/bin/python bench/gateways.py --scenarios client-auth [--rounds 4]
    .venv/bin/python bench/gateways.py --scenarios before-after --old REV [--new HEAD] [--rounds 4]
    .venv/bin/python bench/gateways.py --scenarios anthropic [--rounds 4] [--duration 8]
    .venv/bin/python bench/gateways.py --scenarios limits [--rounds 4] [--duration 8]

Peers are installed into Sluice's cache (``~/.cache/sluice/bench``), pinned, never as project
dependencies: LiteLLM's proxy in a venv of its own, Portkey's gateway with npm. Every target
proxies the same upstream (nginx answering a fixed chat completion, so the
upstream is never the bottleneck) and is loaded by the same wrk with a Lua POST script. The
proxy under test is pinned to core 0; wrk and the upstream share core 1. Targets: the upstream
directly, a naive aiohttp passthrough (the floor issue 7 sets), Sluice's standalone proxy,
LiteLLM, Portkey, and nginx and HAProxy from Debian as the C baselines. Figures are for this
run only: compare the ratios, not the absolute numbers, across machines.

Then, with the same targets: latency at half of each one's saturation (hey, open loop);
streams (bench/loadfake.py streaming, bench/loadgen.py measuring time to first token);
failover (three upstreams, one killed mid-run, open-loop load); memory per idle and per
active connection; client auth (Sluice without and with --client-keys, interleaved:
``--scenarios client-auth`` alone rewrites only its own section of the page); before and
after (``--scenarios before-after --old REV``: the naive passthrough, Sluice at REV and Sluice
at --new, each commit's ``src`` extracted with ``git archive`` and put first on PYTHONPATH,
interleaved rounds; writes only its own section, and is never part of the default run); an
Anthropic upstream (``--scenarios anthropic``: Sluice with an OpenAI-compatible Upstream and
Sluice with a ``provider: anthropic`` one, whose chat is translated to the Messages API and
back, interleaved rounds; only its own section, never part of the default run); rate limits
(``--scenarios limits``: Sluice without and with ``limits`` on its Upstream, so large they are
never reached, interleaved like client auth; only its own section, never part of the default
run). wrk, hey,
nginx and HAProxy come from Debian (installed when missing and apt-get can); plots are drawn
with matplotlib from a venv in the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scenarios
from harness import (
    PROXY_CORE,
    ROOT,
    Result,
    commit,
    commit_source,
    free_port,
    group_cpu_seconds,
    lua_script,
    nginx_upstream,
    page_section,
    process,
    run_wrk,
    source_env,
    source_state,
    targets,
    tools_venv,
    wait_for_port,
    write_section,
)


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


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else ""


def ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def report(
    results: list[Result], extra: dict[str, Any], duration: int, missing: dict[str, str]
) -> str:
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
        "Generated by `.venv/bin/python bench/gateways.py`. Do not edit: run it again.",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu_model}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}. Every proxy under test is "
        "pinned to core 0; load generators and upstreams share core 1. One run: compare the "
        "ratios within this page, not absolute numbers across machines.",
        "",
        "Sluice runs as `sluice proxy --manifests` (standalone: breakers, routing, retries, "
        "metrics and the access log all on); `--loop` picks the event loop (uvloop is the "
        "default when installed). The naive passthrough (bench/naive_passthrough.py) is the "
        "floor set in issue 7: one aiohttp server, one shared ClientSession, nothing else.",
        "",
    ]
    if results:
        lines += [
            "## Throughput and latency, closed loop (wrk)",
            "",
            f"Non-streaming `POST /v1/chat/completions`, {duration} s per run after a warm-up; "
            "the upstream is nginx answering a fixed completion (never the bottleneck).",
            "",
        ]
    for c in sorted({r.connections for r in results}):
        rows = [r for r in results if r.connections == c]
        direct = next(r for r in rows if r.target.startswith("direct"))
        naive = next((r for r in rows if r.target == "naive aiohttp passthrough"), None)
        lines += [
            f"### {c} connection{'s' if c != 1 else ''}",
            "",
            "| target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU µs/req "
            "| req/s vs naive | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            added = "" if r is direct else f"{r.p50_ms - direct.p50_ms:.2f}"
            added99 = "" if r is direct else f"{r.p99_ms - direct.p99_ms:.2f}"
            cpu = "" if r.cpu_us_per_request is None else f"{r.cpu_us_per_request:.0f}"
            vs = "" if naive is None or r is direct else ratio(r.rps, naive.rps)
            lines.append(
                f"| {r.target} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                f"{added} | {added99} | {cpu} | {vs} | {r.errors} |"
            )
        lines.append("")
    sluice = [r for r in results if r.connections == 32 and r.target.startswith("sluice")]
    peers = [
        r for r in results if r.connections == 32 and not r.target.startswith(("sluice", "direct"))
    ]
    if sluice and peers:
        best = max(sluice, key=lambda r: r.rps)
        lines += [
            f"### Sluice ({best.target}) against each, 32 connections",
            "",
            "| other | its req/s | Sluice's req/s ÷ its |",
            "|---|---:|---:|",
            *(f"| {p.target} | {p.rps:.0f} | {ratio(best.rps, p.rps)} |" for p in peers),
            "",
        ]
    if extra.get("open_loop"):
        lines += [
            "## Latency at a fixed rate (hey, open loop)",
            "",
            "Each target at half of its own saturation above (32 connections), and the upstream "
            "directly at the same rate right before it; hey with 16 rate-limited workers.",
            "",
            "| target | rate req/s | p50 ms | p99 ms | direct p50 | direct p99 | added p50 ms "
            "| added p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in extra["open_loop"]:
            p, d = row["proxied"], row["direct"]
            lines.append(
                f"| {row['target']} | {row['rate']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
                f"{d['p50_ms']:.2f} | {d['p99_ms']:.2f} | {p['p50_ms'] - d['p50_ms']:.2f} | "
                f"{p['p99_ms'] - d['p99_ms']:.2f} | {p['errors']} |"
            )
        lines += ["", "![latency](benchmarks/latency.png)", ""]
    if extra.get("streams"):
        rows = extra["streams"]
        direct_row = next((r for r in rows if r["target"].startswith("direct")), None)
        lines += [
            "## Streams",
            "",
            "16 connections streaming back to back; the fake upstream (bench/loadfake.py) sends "
            "20 chunks 10 ms apart. Time to first token: from the request's write to the first "
            "SSE event. The naive passthrough buffers whole answers, so its first token comes "
            "with the last.",
            "",
            "| target | streams/s | SSE events/s | TTFT p50 ms | TTFT p99 ms | added p50 ms "
            "| added p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            add50 = add99 = ""
            if direct_row is not None and r is not direct_row and r["ttft_p50_ms"] is not None:
                add50 = f"{r['ttft_p50_ms'] - direct_row['ttft_p50_ms']:.2f}"
                add99 = f"{r['ttft_p99_ms'] - direct_row['ttft_p99_ms']:.2f}"
            lines.append(
                f"| {r['target']} | {r['streams_per_s']:.0f} | {r['events_per_s']:.0f} | "
                f"{ms(r['ttft_p50_ms'])} | {ms(r['ttft_p99_ms'])} | {add50} | {add99} | "
                f"{r['errors']} |"
            )
        lines.append("")
    if extra.get("failover"):
        lines += [
            "## Failover",
            "",
            "Three fake upstreams (5 ms answers), spread round-robin with retries elsewhere; "
            "200 requests/s, open loop (latency counts from when a request was due). At 4 s "
            "one upstream is killed and a tombstone takes its port, resetting and counting "
            "every connection: the requests each gateway still sends to the dead upstream. "
            "Configurations: bench/scenarios.py `failover_targets` (each as close to Sluice's "
            "default policy, 5 failures then 30 s out, as it allows). A gateway that saturates below "
            "200 requests/s (see above) is overloaded here: its errors and latency are overload, "
            "not failover.",
            "",
            "| target | requests | client errors | p99 ms | p99 in the 2 s after the kill "
            "| sent to the dead upstream | of which after the first second |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in extra["failover"]:
            lines.append(
                f"| {r['target']} | {r['requests']} | {r['errors']} | {ms(r['p99_ms'])} | "
                f"{ms(r['p99_event_ms'])} | {r['dead_hits']} | {r['dead_hits_after_1s']} |"
            )
        lines += ["", "![failover timeline](benchmarks/failover.png)", ""]
    if extra.get("memory"):
        lines += [
            "## Memory",
            "",
            "Resident memory of the target's processes at rest, then with 500 idle keep-alive "
            "connections (each has made one request), then with 200 streams in flight.",
            "",
            "| target | at rest MiB | KiB per idle connection | KiB per active stream |",
            "|---|---:|---:|---:|",
        ]
        for r in extra["memory"]:
            lines.append(
                f"| {r['target']} | {r['baseline_kib'] / 1024:.0f} | {r['per_idle_kib']:.1f} | "
                f"{r['per_active_kib']:.1f} |"
            )
        lines.append("")
    if extra.get("client_auth"):
        lines += client_auth_section(
            extra["client_auth"],
            scenarios.key_check_us(),
            f".venv/bin/python bench/gateways.py` at `{source_state()}",
        ).split("\n")
    if missing:
        lines += ["## Could not be measured", ""]
        lines += [f"- {name}: {reason}" for name, reason in missing.items()]
        lines.append("")
    return "\n".join(lines)


CLIENT_AUTH = "Client auth: CPU per request with and without client keys"
BEFORE_AFTER = "Before and after: CPU per request of two commits' proxies"
ANTHROPIC = "Anthropic upstream: CPU per request beside an OpenAI-compatible one"
ANTHROPIC_GOAL = 1.3  # the issue's bound on anthropic ÷ openai-compatible CPU per request
LIMITS = "Rate limits: CPU per request with and without limits"
LIMITS_GOAL = 1.10  # issue 14's bound on with ÷ without limits, CPU per request
# Sections written by scripts of their own (bench/abuse.py) or by section-only scenarios that a
# full run does not make (before-after, anthropic, limits), kept when the page is rewritten.
KEPT_SECTIONS = (
    "Memory under abuse",
    BEFORE_AFTER,
    ANTHROPIC,
    LIMITS,
    "Operator: reports from every replica",
)


def off_on_section(
    heading: str,
    rows: list[dict[str, Any]],
    intro: list[str],
    feature: str,
    *,
    column: tuple[str, str] | None = None,
    goal: float | None = None,
    notes: tuple[str, ...] = (),
) -> str:
    """The section of an off/on scenario (``scenarios.off_on``): ``intro`` (paragraphs), the
    runs (``column``: a header and the row's key for one more column), then on ÷ off in the
    same round, against ``goal`` if given, and ``notes`` (bullets)."""
    off = {r["round"]: r for r in rows if not r["on"]}
    on = {r["round"]: r for r in rows if r["on"]}
    rounds = sorted(set(off) & set(on))

    def per_round(key: str) -> list[float]:
        return [on[i][key] / off[i][key] for i in rounds]

    def cpu(runs: dict[int, dict[str, Any]]) -> list[float]:
        return [runs[i]["cpu_us_per_request"] for i in rounds]

    ratio_cpu = (
        f"CPU per request, on ÷ off in the same round: {spread(per_round('cpu_us_per_request'))}"
    )
    if goal is not None:
        verdict = "within" if statistics.median(per_round("cpu_us_per_request")) <= goal else "over"
        ratio_cpu = (
            f"**{ratio_cpu}, over {len(rounds)} rounds**, {verdict} the goal of at most {goal:.2f}x"
        )
    extra = f" | {column[0]}" if column else ""
    lines = [
        f"## {heading}",
        "",
        *(line for paragraph in intro for line in (paragraph, "")),
        f"| round | {feature} | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors{extra} |",
        "|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if column else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {'on' if r['on'] else 'off'} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us_per_request']:.1f} | "
            f"{r['errors']}{f' | {r[column[1]]}' if column else ''} |"
        )
    lines += [
        "",
        f"- {ratio_cpu}.",
        f"- CPU per request, median: off {spread(cpu(off), 1)} µs, on {spread(cpu(on), 1)} µs.",
        f"- Throughput, on ÷ off in the same round: {spread(per_round('rps'))}; median req/s "
        f"off {statistics.median(off[i]['rps'] for i in rounds):.0f}, on "
        f"{statistics.median(on[i]['rps'] for i in rounds):.0f}.",
        "- Noise, for scale: each one's own runs range "
        + ", ".join(
            f"{name} {min(cpu(runs)):.1f} to {max(cpu(runs)):.1f} µs/req "
            f"({max(cpu(runs)) / min(cpu(runs)):.3f}x)"
            for name, runs in (("off", off), ("on", on))
        )
        + ".",
        *(f"- {note}" for note in notes),
        "",
    ]
    return "\n".join(lines)


def off_median_cpu(rows: list[dict[str, Any]]) -> float:
    return statistics.median(r["cpu_us_per_request"] for r in rows if not r["on"])


def client_auth_section(rows: list[dict[str, Any]], check: dict[str, float], command: str) -> str:
    intro = (
        f"Generated by `{command}`. Sluice (`sluice proxy --manifests`, uvloop, access log on) "
        "without `--client-keys`, then with `--client-keys FILE` (20 keys, one a line; the load "
        "sends the last), alternating off, on, off, on, ..., a fresh process each run; the same "
        "upstream (nginx) and the same `Authorization: Bearer` header in both, so only the "
        f"check differs. wrk, {rows[0]['connections']} connections, {rows[0]['duration']} s per "
        "run after "
        "a 2 s warm-up; proxy CPU is user + system time of its process over the run, divided "
        "by the requests wrk completed."
    )
    note = (
        "The check alone (`ClientKeys.client`, 20 keys, best of 5 runs of 20000 calls in one "
        f"process): {check['valid_key_us']:.2f} µs for the key the load sends, "
        f"{check['no_key_us']:.2f} µs when no key is sent; "
        f"{check['valid_key_us'] / off_median_cpu(rows) * 100:.1f}% of the median off run's "
        "CPU per request."
    )
    return off_on_section(
        CLIENT_AUTH, rows, [intro], "client keys",
        column=("a request without a key gets", "keyless_status"), notes=(note,),
    )  # fmt: skip


def limits_section(found: dict[str, Any], alone: dict[str, float], command: str) -> str:
    rows = found["runs"]
    limits = ", ".join(f"{k}: {v}" for k, v in scenarios.LIMITS.items())
    intro = (
        f"Generated by `{command}`. Sluice (`sluice proxy --manifests`, uvloop, access log on) "
        "with the one Upstream of the other Sluice runs, without `limits` (off), then with "
        f"`limits: {{{limits}}}` (on): limits the load never comes near, so every request goes "
        "through the limiter (its tokens estimated, room checked, one request and the "
        "estimate taken, the tokens settled to the answer's usage at its end) and none is "
        "refused. Alternating off, on, off, on, ..., a fresh process each run; the same "
        f"upstream (nginx) and the same requests in both. wrk, {rows[0]['connections']} "
        f"connections, {rows[0]['duration']} s per run after a 2 s warm-up; proxy CPU is user + "
        "system "
        "time of its process over the run, divided by the requests wrk completed. Ratios are "
        "taken within a round, then their median."
    )
    check = (
        f"Checked once before timing, in a process of its own with the limits on: {found['check']}."
    )
    note = (
        "The limiter alone (`estimate_tokens`, `Allowance.has_room`, `take`, `settle`, with "
        "`time.monotonic` as the clock; best of 5 runs of 20000 in one process): "
        f"{alone['limiter_us']:.2f} µs a request, "
        f"{alone['limiter_us'] / off_median_cpu(rows) * 100:.1f}% of the median off run's CPU "
        "per request."
    )
    return off_on_section(LIMITS, rows, [intro, check], "limits", goal=LIMITS_GOAL, notes=(note,))


# Off/on scenarios written alone: heading, measure (scenarios), the feature alone in one
# process (scenarios), section.
OFF_ON: dict[
    str, tuple[str, Callable[..., Any], Callable[[], dict[str, float]], Callable[..., str]]
] = {
    "client-auth": (
        CLIENT_AUTH,
        scenarios.client_auth,
        scenarios.key_check_us,
        client_auth_section,
    ),
    "limits": (LIMITS, scenarios.limits, scenarios.limiter_us, limits_section),
}


def spread(values: list[float], digits: int = 3) -> str:
    """Median (range min to max)."""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"(range {min(values):.{digits}f} to {max(values):.{digits}f})"
    )


def before_after_section(
    found: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
    command: str,
    *,
    naive: str,
    old: str,
    new: str,
) -> str:
    runs = found["runs"]

    def of(target: str) -> dict[int, dict[str, Any]]:
        return {r["round"]: r for r in runs if r["target"] == target}

    base, before, after = of(naive), of(old), of(new)
    rounds = sorted(set(base) & set(before) & set(after))

    def cpu(rows: dict[int, dict[str, Any]]) -> list[float]:
        return [rows[i]["cpu_us_per_request"] for i in rounds]

    def per_round(
        a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], key: str
    ) -> list[float]:
        return [a[i][key] / b[i][key] for i in rounds]

    first = runs[0]
    lines = [
        f"## {BEFORE_AFTER}",
        "",
        f"Generated by {command}. In one run, on the proxy core one at a time, a fresh process "
        f"each run: the naive aiohttp passthrough ({args.loop}), and Sluice (`sluice proxy "
        f"--manifests`, `--loop {args.loop}`, access log on) from two commits: each commit's "
        "`src` extracted with `git archive` and put first on PYTHONPATH of this venv (checked "
        "with `sluice.__file__`). Rounds in the order naive, before, after, then reversed in "
        "the next round (so a drift over the run weighs on each alike). Non-streaming `POST "
        f"/v1/chat/completions`, wrk, {first['connections']} connections, {args.duration} s "
        "per run after a 2 s warm-up, against the throughput scenario's nginx upstream; proxy "
        "CPU is user + system time of its process over the run, divided by the requests wrk "
        "completed. Ratios are taken within a round, then their median.",
        "",
        "| round | target | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['round']} | {r['target']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['cpu_us_per_request']:.1f} | {r['errors']} |"
        )
    ratio_cpu = per_round(after, before, "cpu_us_per_request")
    lines += [
        "",
        f"- CPU per request, median over {len(rounds)} rounds: {old} "
        f"{spread(cpu(before), 1)} µs, {new} {spread(cpu(after), 1)} µs; the naive passthrough "
        f"{spread(cpu(base), 1)} µs.",
        f"- **CPU per request, after ÷ before in the same round: {spread(ratio_cpu)}** "
        f"({(statistics.median(ratio_cpu) - 1) * 100:+.1f}%).",
        f"- Throughput ÷ the naive passthrough's in the same round: {old} "
        f"{spread(per_round(before, base, 'rps'))}, {new} {spread(per_round(after, base, 'rps'))}"
        f"; after ÷ before {spread(per_round(after, before, 'rps'))}.",
        f"- CPU per request ÷ the naive passthrough's in the same round: {old} "
        f"{spread(per_round(before, base, 'cpu_us_per_request'))}, {new} "
        f"{spread(per_round(after, base, 'cpu_us_per_request'))}.",
        "- Noise, for scale: each target's own runs range "
        + ", ".join(
            f"{name} {min(cpu(rows)):.1f} to {max(cpu(rows)):.1f} µs/req "
            f"({max(cpu(rows)) / min(cpu(rows)):.3f}x)"
            for name, rows in ((naive, base), (old, before), (new, after))
        )
        + ".",
        "",
    ]
    if found["streams"]:
        direct = found["streams"][0]
        lines += [
            f"Streams, one run each ({args.stream_duration} s after a 1 s warm-up, same order "
            "as round 1): 16 connections streaming back to back from bench/loadfake.py (20 "
            "chunks 10 ms apart), measured by bench/loadgen.py; time to first token from the "
            "request's write to the first SSE event, added: over the fake upstream directly. "
            "The naive passthrough buffers whole answers, so its first token comes with the "
            "last. One run each: an indication, not a ratio with a spread.",
            "",
            "| target | streams/s | TTFT p50 ms | TTFT p99 ms | added p50 ms | added p99 ms "
            "| proxy CPU µs/stream | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in found["streams"]:
            added50 = added99 = cpu_text = ""
            if r is not direct and r["ttft_p50_ms"] is not None:
                added50 = f"{r['ttft_p50_ms'] - direct['ttft_p50_ms']:.2f}"
                added99 = f"{r['ttft_p99_ms'] - direct['ttft_p99_ms']:.2f}"
            if r.get("cpu_us_per_stream") is not None:
                cpu_text = f"{r['cpu_us_per_stream']:.0f}"
            lines.append(
                f"| {r['target']} | {r['streams_per_s']:.1f} | {ms(r['ttft_p50_ms'])} | "
                f"{ms(r['ttft_p99_ms'])} | {added50} | {added99} | {cpu_text} | {r['errors']} |"
            )
        lines.append("")
    return "\n".join(lines)


SCENARIOS = ("throughput", "open-loop", "streams", "failover", "memory", "client-auth")
# Scenarios that, run alone, rewrite only their own section of the page; before-after is never
# part of the default run (it needs --old), nor are anthropic and limits; they write only their
# own section.
SECTION_ONLY = {"client-auth", "before-after", "anthropic", "limits"}
EXTRA_SCENARIOS = ("before-after", "anthropic", "limits")  # never part of the default run


def ensure_tools() -> None:
    """wrk, hey, nginx and HAProxy from Debian; installed if missing and apt-get can."""
    wanted = {"wrk": "wrk", "hey": "hey", "nginx": "nginx-light", "haproxy": "haproxy"}
    absent = [package for tool, package in wanted.items() if shutil.which(tool) is None]
    if absent and shutil.which("apt-get") and os.geteuid() == 0:
        print(f"installing {' '.join(absent)} with apt-get ...", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *absent], check=False
        )
    for tool in (*wanted, "taskset", "node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install wrk hey nginx-light haproxy util-linux")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--only", default="", help="comma-separated parts of target names to run (default: all)"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="client-auth, limits: off/on pairs; before-after, anthropic: rounds",
    )
    parser.add_argument("--old", help="before-after: the commit before (e.g. 450f2f1)")
    parser.add_argument(
        "--new", default="HEAD", help="before-after: the commit after; anthropic: the commit"
    )
    parser.add_argument("--loop", default="uvloop", choices=("asyncio", "uvloop"))
    parser.add_argument(
        "--stream-duration", type=int, default=5, help="before-after: 0 skips the streams"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ensure_tools()
    chosen = [s for s in args.scenarios.split(",") if s]
    if unknown := set(chosen) - {*SCENARIOS, *EXTRA_SCENARIOS}:
        every = ", ".join((*SCENARIOS, *EXTRA_SCENARIOS))
        sys.exit(f"unknown scenarios {sorted(unknown)}; choose from {every}")
    if "before-after" in chosen and not args.old:
        sys.exit("--scenarios before-after needs --old REV")
    if set(chosen) <= SECTION_ONLY:
        section_only(args, chosen)
        return
    started = time.monotonic()
    missing: dict[str, str] = {}
    only = [o for o in args.only.split(",") if o]
    results: list[Result] = []
    extra: dict[str, Any] = {}
    if "throughput" in chosen or "open-loop" in chosen:
        results = measure(
            args.duration, [int(c) for c in args.connections.split(",")], missing, only
        )
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        directory = Path(tmp)
        if "open-loop" in chosen:
            saturation = {r.target: r.rps for r in results if r.connections == 32}
            extra["open_loop"] = scenarios.open_loop(
                directory, missing, only, saturation, max(5, args.duration)
            )
        if "streams" in chosen:
            extra["streams"] = scenarios.streams(directory, missing, only, args.duration)
        if "failover" in chosen:
            extra["failover"] = scenarios.failover(directory, missing, only)
        if "memory" in chosen:
            extra["memory"] = scenarios.memory(directory, missing, only)
        if "client-auth" in chosen:
            extra["client_auth"] = scenarios.client_auth(
                directory, missing, args.duration, args.rounds
            )
        if "throughput" not in chosen:
            results = []
        data = directory / "results.json"
        data.write_text(
            json.dumps({"throughput": [r.__dict__ for r in results], **extra}, indent=1)
        )
        try:
            python = tools_venv(*PLOT_TOOLS) / "bin" / "python"
            subprocess.run(
                [str(python), str(ROOT / "bench" / "plots.py"), str(data),
                 str(args.output.parent / "benchmarks")],
                check=True,
                timeout=300,
            )  # fmt: skip
        except (subprocess.SubprocessError, OSError) as e:
            missing["plots"] = f"matplotlib could not draw them: {e}"
        (args.output.parent / "benchmarks").mkdir(exist_ok=True)
        (args.output.parent / "benchmarks" / "results.json").write_text(data.read_text())
    write_page(args.output, report(results, extra, args.duration, missing))
    if extra_chosen := [s for s in EXTRA_SCENARIOS if s in chosen]:
        section_only(args, extra_chosen)
    took = time.monotonic() - started
    print(f"wrote {args.output} in {took / 60:.1f} min", file=sys.stderr)


def write_page(path: Path, text: str) -> None:
    """Write the page, keeping the KEPT_SECTIONS other scripts wrote into the old one."""
    kept = {heading: page_section(path, heading) for heading in KEPT_SECTIONS}
    path.write_text(text)
    for heading, section in kept.items():
        if section is not None:
            write_section(path, heading, section)


def section_only(args: argparse.Namespace, chosen: list[str]) -> None:
    """Run ``chosen`` (client-auth, before-after, anthropic, limits) and rewrite only their
    sections of --output."""
    for scenario in OFF_ON:
        if scenario in chosen:
            write_off_on(args, scenario)
    if "before-after" in chosen:
        write_before_after(args)
    if "anthropic" in chosen:
        write_anthropic(args)


def write_off_on(args: argparse.Namespace, scenario: str) -> None:
    """An off/on scenario of OFF_ON alone: its runs (a list, or a dict with them under
    ``runs``), then its section in place of the old one in --output."""
    heading, measure, alone, section = OFF_ON[scenario]
    started = time.monotonic()
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        found = measure(Path(tmp), missing, args.duration, args.rounds)
    runs = found["runs"] if isinstance(found, dict) else found
    if missing or len(runs) < 2:
        sys.exit(f"{scenario} could not be measured: {missing}")
    command = f".venv/bin/python bench/gateways.py --scenarios {scenario}"
    command += f" --duration {args.duration} --rounds {args.rounds}` at `{source_state()}"
    text = section(found, alone(), command)
    print(text)
    write_section(args.output, heading, text)
    print(f"wrote {args.output} in {(time.monotonic() - started) / 60:.1f} min", file=sys.stderr)


def write_before_after(args: argparse.Namespace) -> None:
    """The naive passthrough, Sluice at --old and Sluice at --new (each commit's ``src``
    extracted and put first on PYTHONPATH), interleaved; rewrites only its section."""
    started = time.monotonic()
    missing: dict[str, str] = {}
    old, new = commit(args.old), commit(args.new)
    naive, before, after = "naive aiohttp passthrough", f"before ({old})", f"after ({new})"
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-bench-")))
        trees = [(before, source_env(stack.enter_context(commit_source(old))))]
        trees.append((after, source_env(stack.enter_context(commit_source(new)))))
        found = scenarios.before_after(
            directory, missing, trees, duration=args.duration, rounds=args.rounds,
            loop=args.loop, stream_duration=args.stream_duration,
        )  # fmt: skip
    if missing or not found["runs"]:
        sys.exit(f"before and after could not be measured: {missing}")
    command = f"`.venv/bin/python bench/gateways.py --scenarios before-after --old {args.old}"
    command += f" --new {args.new}" if args.new != "HEAD" else ""
    command += f" --duration {args.duration} --rounds {args.rounds} --loop {args.loop}"
    command += f" --stream-duration {args.stream_duration}`"
    names = ", ".join(f"{rev} is {c}" for rev, c in ((args.old, old), (args.new, new)) if rev != c)
    command += (
        f" ({names + '; ' if names else ''}both trees from the commits, not the working tree)"
    )
    text = before_after_section(found, args, command, naive=naive, old=before, new=after)
    print(text)
    write_section(args.output, BEFORE_AFTER, text)
    print(f"wrote {args.output} in {(time.monotonic() - started) / 60:.1f} min", file=sys.stderr)


def anthropic_section(found: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    runs = found["runs"]

    def of(provider: str) -> dict[int, dict[str, Any]]:
        return {r["round"]: r for r in runs if r["provider"] == provider}

    openai, anthropic = of("openai-compatible"), of("anthropic")
    rounds = sorted(set(openai) & set(anthropic))

    def per_round(key: str) -> list[float]:
        return [anthropic[i][key] / openai[i][key] for i in rounds]

    def cpu(rows: dict[int, dict[str, Any]]) -> list[float]:
        return [rows[i]["cpu_us_per_request"] for i in rounds]

    ratio_cpu = per_round("cpu_us_per_request")
    median = statistics.median(ratio_cpu)
    verdict = "within" if median <= ANTHROPIC_GOAL else "over"
    first = runs[0]
    lines = [
        f"## {ANTHROPIC}",
        "",
        f"Generated by {command}. In one run, on the proxy core one at a time, a fresh process "
        f"each run: Sluice (`sluice proxy --manifests`, `--loop {args.loop}`, access log on) "
        "with one Upstream serving `m1`, either `provider: openai-compatible` (the client's "
        "bytes pass through) or `provider: anthropic` (the chat completion is translated to a "
        "Messages request, sent to `{baseURL}/messages` with `x-api-key` and "
        "`anthropic-version`, and the Message translated back to a chat.completion); both with "
        "an API key from a Secret. The upstream is the throughput scenario's nginx, answering "
        "`POST /v1/chat/completions` with a fixed chat.completion and `POST /v1/messages` with "
        "a fixed Anthropic Message (bench/harness.py `ANTHROPIC_MESSAGE`, valid for "
        "`anthropic.types.Message`). Rounds in the order openai-compatible, anthropic, then "
        f"reversed in the next round. Non-streaming chat (`{scenarios.CHAT_BODY}`), wrk, "
        f"{first['connections']} connections, {args.duration} s per run after a 2 s warm-up; "
        "proxy CPU is user + system time of its process over the run, divided by the requests "
        "wrk completed. Ratios are taken within a round, then their median.",
        "",
        "Checked once before timing, one request through each:",
        "",
        *(f"- {provider}: {text}" for provider, text in found["checks"].items()),
        "",
        "| round | upstream | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['round']} | {r['provider']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['cpu_us_per_request']:.1f} | {r['errors']} |"
        )
    lines += [
        "",
        f"- **CPU per request, anthropic ÷ openai-compatible in the same round, over "
        f"{len(rounds)} rounds: {spread(ratio_cpu)}**, {verdict} the goal of at most "
        f"{ANTHROPIC_GOAL}x.",
        f"- CPU per request, median: openai-compatible {spread(cpu(openai), 1)} µs, anthropic "
        f"{spread(cpu(anthropic), 1)} µs.",
        f"- Throughput, anthropic ÷ openai-compatible in the same round: "
        f"{spread(per_round('rps'))}.",
        "- Noise, for scale: each one's own runs range "
        + ", ".join(
            f"{name} {min(cpu(rows)):.1f} to {max(cpu(rows)):.1f} µs/req "
            f"({max(cpu(rows)) / min(cpu(rows)):.3f}x)"
            for name, rows in (("openai-compatible", openai), ("anthropic", anthropic))
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def write_anthropic(args: argparse.Namespace) -> None:
    """Sluice with an OpenAI-compatible Upstream beside Sluice with an Anthropic one,
    interleaved; rewrites only its section."""
    started = time.monotonic()
    missing: dict[str, str] = {}
    tree = commit(args.new)
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-bench-")))
        env = source_env(stack.enter_context(commit_source(tree)))
        found = scenarios.anthropic(
            directory, missing, duration=args.duration, rounds=args.rounds, loop=args.loop,
            env=env,
        )  # fmt: skip
    if missing or not found["runs"]:
        sys.exit(f"the Anthropic upstream could not be measured: {missing}")
    command = "`.venv/bin/python bench/gateways.py --scenarios anthropic"
    command += f" --new {args.new}" if args.new != "HEAD" else ""
    command += f" --duration {args.duration} --rounds {args.rounds} --loop {args.loop}`"
    command += f" at {tree} (Sluice's `src` from that commit, extracted with `git archive` and "
    command += "put first on PYTHONPATH, not the working tree)"
    text = anthropic_section(found, args, command)
    print(text)
    write_section(args.output, ANTHROPIC, text)
    print(f"wrote {args.output} in {(time.monotonic() - started) / 60:.1f} min", file=sys.stderr)


PLOT_TOOLS = ("matplotlib==3.11.2",)


if __name__ == "__main__":
    main()
