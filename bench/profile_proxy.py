"""Where Sluice's proxy spends its time under load: py-spy samples it while wrk drives it.

    .venv/bin/python bench/profile_proxy.py [--duration 10] [--connections 32] [--loop auto]
        [--provider openai-compatible|anthropic]

Same setup as ``harness.py`` (proxy pinned to core 0; wrk and an nginx upstream on core 1).
py-spy is installed into the benchmark cache, never as a project dependency. Prints the
functions with the most samples on-CPU by themselves ("self") and with their callees
("total"), as shares of all samples, and writes the folded stacks next to the report.
``--provider anthropic`` profiles chat through an Anthropic Upstream (translated to the Messages
API and back; nginx answers ``/v1/messages`` with a fixed Message), with the chat and the API
key of ``gateways.py --scenarios anthropic``; ``--key`` gives an OpenAI-compatible Upstream the
same key and chat, to compare the two.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
import scenarios

PY_SPY = "py-spy==0.4.3"


def ensure_py_spy() -> Path:
    venv = harness.tools_venv(PY_SPY)
    return venv / "bin" / "py-spy"


def summarize(folded: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        # One entry per function: "name (path:line)" -> "name (path)".
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "self:"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "total (with callees):"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loop", default="auto", choices=("auto", "asyncio", "uvloop"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--provider", default="openai-compatible", choices=("openai-compatible", "anthropic")
    )
    parser.add_argument("--key", action="store_true", help="an API key (always for anthropic)")
    parser.add_argument(
        "--output", type=Path, default=Path(tempfile.gettempdir()) / "sluice-profile.folded"
    )
    args = parser.parse_args()
    py_spy = ensure_py_spy()
    with tempfile.TemporaryDirectory(prefix="sluice-profile-") as tmp:
        directory = Path(tmp)
        with harness.nginx_upstream(directory) as upstream_port:
            anthropic = args.provider == "anthropic"
            argv, port = harness.sluice_argv(
                directory, upstream_port, loop=args.loop, provider=args.provider,
                key=args.key or anthropic,
            )  # fmt: skip
            with harness.process(argv, harness.PROXY_CORE, directory / "proxy.log") as pgid:
                harness.wait_for_port(port, timeout=60)
                if anthropic or args.key:
                    print(scenarios.check_chat(args.provider, port), file=sys.stderr)
                    script = harness.lua_script(directory / "post.lua", {}, scenarios.CHAT_BODY)
                else:
                    script = harness.lua_script(directory / "post.lua", {})
                harness.run_wrk(port, 8, 2, script)
                spy = subprocess.Popen(
                    [
                        str(py_spy),
                        "record",
                        "--pid",
                        str(pgid),
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "--nonblocking",
                        "--duration",
                        str(args.duration),
                        "--output",
                        str(args.output),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                result = harness.run_wrk(port, args.connections, args.duration, script)
                spy.wait(timeout=args.duration + 30)
    print(f"wrk: {result[0]:.0f} req/s (slowed down by the sampling)", file=sys.stderr)
    print(summarize(args.output, args.top))


if __name__ == "__main__":
    main()
