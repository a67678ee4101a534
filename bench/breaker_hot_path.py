"""The breaker's cost on the request path: one admit + record pair, beside a no-op baseline.

Run: .venv/bin/python bench/breaker_hot_path.py [--rounds 15] [--calls 100000]

Each case runs ``calls`` pairs per round; the figure is the median over rounds of the time per
pair, and the no-op baseline (two empty method calls with the same arguments) runs interleaved
in the same process, so the ratio holds up on a noisy machine even when absolute numbers drift.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from sluice.core import (
    BreakerPolicy,
    CircuitBreaker,
    Outcome,
    OutcomeKind,
    SlowCalls,
    classify_status,
)

OK = Outcome(OutcomeKind.SUCCESS, "HTTP 200", status=200)
FAIL = Outcome(OutcomeKind.FAILURE, "HTTP 503", status=503)


class NoOp:
    def admit(self, now: float) -> object:
        return self

    def record(self, permit: object, outcome: Outcome, now: float, *, duration: float) -> None:
        return None


def pairs(target: CircuitBreaker | NoOp, outcome: Outcome, calls: int) -> float:
    admit, record = target.admit, target.record
    now = 1000.0
    started = time.perf_counter_ns()
    for _ in range(calls):
        now += 0.001  # 1000 requests per second: the window slides as in real traffic
        permit = admit(now)
        record(permit, outcome, now, duration=0.2)  # type: ignore[arg-type]
    return (time.perf_counter_ns() - started) / calls


def classify_only(calls: int) -> float:
    policy = BreakerPolicy()
    started = time.perf_counter_ns()
    for _ in range(calls):
        classify_status(200, policy)
    return (time.perf_counter_ns() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()

    every_trigger = BreakerPolicy(slow_calls=SlowCalls(duration=5.0, rate_threshold=80))
    cases: dict[str, Callable[[], float]] = {
        "no-op baseline (admit + record)": lambda: pairs(NoOp(), OK, args.calls),
        "breaker, default policy, success": lambda: pairs(
            CircuitBreaker(BreakerPolicy(), now=0.0), OK, args.calls
        ),
        "breaker, all triggers on, success": lambda: pairs(
            CircuitBreaker(every_trigger, now=0.0), OK, args.calls
        ),
        # Failures never trip here: 1 in 3 is under the 50% rate and the count resets.
        "breaker, default policy, 1 in 3 fail": lambda: _mixed(args.calls),
        "classify_status(200)": lambda: classify_only(args.calls),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    gc.disable()
    try:
        for _ in range(args.rounds):
            for name, case in cases.items():  # interleaved: every case sees the same noise
                results[name].append(case())
    finally:
        gc.enable()

    baseline = statistics.median(results["no-op baseline (admit + record)"])
    print(f"{'case':40} {'median ns':>10} {'p90 ns':>8} {'x no-op':>8}")
    for name, samples in results.items():
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        print(f"{name:40} {median:10.0f} {p90:8.0f} {median / baseline:8.1f}")


def _mixed(calls: int) -> float:
    breaker = CircuitBreaker(BreakerPolicy(), now=0.0)
    admit, record = breaker.admit, breaker.record
    outcomes = [OK, OK, FAIL] * (calls // 3 + 1)
    now = 1000.0
    started = time.perf_counter_ns()
    for index in range(calls):
        now += 0.001
        permit = admit(now)
        assert permit is not None
        record(permit, outcomes[index], now, duration=0.2)
    return (time.perf_counter_ns() - started) / calls


if __name__ == "__main__":
    main()
