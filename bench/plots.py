"""The report's plots, from gateways.py's results. Runs in the benchmark cache's tools venv
(matplotlib is never a project dependency): ``plots.py RESULTS.json OUTPUT_DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt


def short(name: str) -> str:
    return name.split(" (", maxsplit=1)[0] + (" uvloop" if "uvloop" in name else "")


def latency(results: dict[str, Any], path: Path) -> None:
    rows = results["open_loop"]
    closed = [r for r in results["throughput"] if r["connections"] == 32]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.5 * max(len(rows), len(closed)) + 2))
    names = [short(r["target"]) for r in rows]
    y = range(len(rows))
    left.barh([i + 0.2 for i in y], [r["proxied"]["p99_ms"] for r in rows], 0.4, label="p99")
    left.barh([i - 0.2 for i in y], [r["proxied"]["p50_ms"] for r in rows], 0.4, label="p50")
    left.set_yticks(list(y), [f"{n}\n@{r['rate']:.0f}/s" for n, r in zip(names, rows)])
    left.set_xscale("log")
    left.set_xlabel("latency, ms (log)")
    left.set_title("At half of each one's saturation (hey, open loop)")
    left.legend()
    y2 = range(len(closed))
    right.barh(list(y2), [r["rps"] for r in closed], color="tab:green")
    right.set_yticks(list(y2), [short(r["target"]) for r in closed])
    right.set_xlabel("requests/s on one core (wrk, 32 connections)")
    right.set_title("Saturation throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def failover(results: dict[str, Any], path: Path) -> None:
    rows = results["failover"]
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.3 * len(rows)), sharex=True)
    for ax, row in zip(axes if len(rows) > 1 else [axes], rows):
        t = [b["t"] for b in row["timeline"]]
        ax.plot(t, [b["ok_per_s"] for b in row["timeline"]], label="answered/s", color="tab:green")
        ax.plot(t, [b["errors_per_s"] for b in row["timeline"]], label="errors/s", color="tab:red")
        ax.plot(
            t,
            [b["dead_hits_per_s"] for b in row["timeline"]],
            label="sent to the dead upstream/s",
            color="tab:orange",
        )
        ax.axvline(row["killed_at"], color="black", linestyle="--", linewidth=1)
        ax.set_ylabel("per s")
        ax.set_title(short(row["target"]), loc="left", fontsize=10)
        twin = ax.twinx()
        twin.plot(t, [b["p99_ms"] or 0 for b in row["timeline"]], color="tab:blue", linewidth=0.8)
        twin.set_ylabel("p99 ms", color="tab:blue")
        twin.set_yscale("log")
    axes_list = axes if len(rows) > 1 else [axes]
    axes_list[0].legend(loc="upper right", fontsize=8)
    axes_list[-1].set_xlabel("seconds (dashed: one of three upstreams killed)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if results.get("open_loop"):
        latency(results, out / "latency.png")
    if results.get("failover"):
        failover(results, out / "failover.png")


if __name__ == "__main__":
    main()
