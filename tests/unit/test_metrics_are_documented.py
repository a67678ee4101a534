"""docs/metrics.md lists exactly the metrics the operator and the proxy export, with labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from sluice.breaker_metrics import BreakerMetrics
from sluice.operator.metrics import OperatorMetrics
from sluice.proxy.metrics import ProxyMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented(section: str) -> dict[str, set[str]]:
    text = DOC.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(sluice_\w+)` \| \w+ \|([^|]*)\|", text, flags=re.MULTILINE)
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


def exported(metrics: object) -> dict[str, set[str]]:
    """Name (as scraped) -> label names, from the metric objects (prometheus_client keeps the
    label names in a private attribute; there is no public getter)."""
    found: dict[str, set[str]] = {}
    values = list(vars(metrics).values())
    values += [v for n in values if isinstance(n, BreakerMetrics) for v in vars(n).values()]
    for value in values:
        if isinstance(value, MetricWrapperBase):
            suffix = "_total" if isinstance(value, Counter) else ""
            found[value._name + suffix] = set(value._labelnames)
    return found


def test_every_operator_metric_is_documented_with_its_labels_and_nothing_else() -> None:
    assert exported(OperatorMetrics()) == documented("Operator")


def test_every_proxy_metric_is_documented_with_its_labels_and_nothing_else() -> None:
    assert exported(ProxyMetrics()) == documented("Proxy")
