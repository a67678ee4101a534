"""Small SVG bar charts of an upstream's last minutes, computed here and drawn by the template:
no chart library, no script. Each chart says in words what it shows (``label``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sluice.proxy.history import OUTCOMES, Minute, percentile_ms

__all__ = ["HEIGHT", "WIDTH", "Bar", "Chart", "attempts_chart", "latency_chart"]

WIDTH, HEIGHT = 300, 80


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # the series: a class the stylesheet colours
    title: str


@dataclass(frozen=True)
class Chart:
    label: str
    bars: list[Bar]
    peak: str  # the y axis' top, in words


def _width(minutes: Sequence[Minute]) -> float:
    return WIDTH / max(1, len(minutes))


def attempts_chart(minutes: Sequence[Minute]) -> Chart:
    """Attempts a minute, stacked by outcome."""
    peak = max((m.total for m in minutes), default=0) or 1
    step, bars = _width(minutes), []
    for i, minute in enumerate(minutes):
        y = float(HEIGHT)
        for kind in OUTCOMES:
            n = minute.count(kind)
            if n:
                h = HEIGHT * n / peak
                y -= h
                title = f"{n} {kind.value} in minute {i - len(minutes) + 1}"
                bars.append(Bar(i * step + 1, y, step - 2, h, kind.value.replace("_", "-"), title))
    totals = {k: sum(m.count(k) for m in minutes) for k in OUTCOMES}
    said = ", ".join(f"{n} {k.value}" for k, n in totals.items() if n) or "no attempts"
    label = f"Attempts per minute by outcome, last {len(minutes)} minutes: {said}"
    return Chart(label, bars, f"{peak}/min")


def latency_chart(minutes: Sequence[Minute]) -> Chart:
    """Each minute's p95 time to first byte of successful attempts (bucket bounds)."""
    p95s = [percentile_ms(m.latency, 0.95) for m in minutes]
    peak = max((p for p in p95s if p is not None), default=0.0) or 1.0
    step, bars = _width(minutes), []
    for i, p95 in enumerate(p95s):
        if p95 is not None:
            h = max(2.0, HEIGHT * p95 / peak)
            title = f"p95 ≤ {p95:g} ms in minute {i - len(minutes) + 1}"
            bars.append(Bar(i * step + 1, HEIGHT - h, step - 2, h, "latency", title))
    known = [p for p in p95s if p is not None]
    said = f"latest p95 ≤ {known[-1]:g} ms" if known else "no successful attempts"
    label = f"p95 latency to first byte per minute, last {len(minutes)} minutes: {said}"
    return Chart(label, bars, f"{peak:g} ms")
