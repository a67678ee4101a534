"""A real Prometheus scrapes a running operator and proxy while a short load with failures runs
(and with a priced, rate-limited upstream pushed past its limit): every dashboard panel query
and every alert expression must return data, and promtool checks the rules (with a unit test
per alert) and both processes' metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.devcluster.cluster import ControlPlane, free_port
from tests.integration.conftest import Kubectl
from tests.integration.harness import (
    ADMIN_TOKEN,
    OperatorProcess,
    SluiceProcess,
    ThreadedFake,
    eventually,
)

FILES = Path(__file__).resolve().parents[2] / "charts" / "sluice" / "files"
DASHBOARDS = sorted(FILES.glob("dashboard-*.json"))
ALERTS = FILES / "sluice-alerts.yaml"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: scripts/test.sh installs it (Debian: apt-get "
            "install prometheus)",
            pytrace=False,
        )
    return path


def test_the_alert_rules_are_valid_and_each_alert_has_a_passing_unit_test() -> None:
    promtool = binary("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    unit = subprocess.run(
        [promtool, "test", "rules", "sluice-alerts.test.yaml"],
        cwd=FILES,
        capture_output=True,
        text=True,
        check=False,
    )

    assert check.returncode == 0, check.stdout + check.stderr
    assert unit.returncode == 0, unit.stdout + unit.stderr
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    tested = {
        t["alertname"]
        for case in yaml.safe_load((FILES / "sluice-alerts.test.yaml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert alerts == tested, "every alert needs a promtool unit test"


def dashboard_queries() -> list[tuple[str, str]]:
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"].startswith("sluice-")
        assert any(v["name"] == "datasource" for v in dashboard["templating"]["list"])
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = (
                    target["expr"]
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "1h")
                    .replace("$upstream", ".*")
                )
                queries.append((f"{path.stem}: {panel['title']}", expr))
    return queries


def alert_queries() -> list[tuple[str, str]]:
    return [
        (r["alert"], r["expr"])
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in g["rules"]
    ]


# Model m1's price per million tokens (input, output); the fakes' answers use 1 and 4 tokens.
PRICES = {"inputPer1M": 2.0, "outputPer1M": 8.0}
# Model m2 is served by one Upstream, `metered`, limited to this many requests a minute: the
# requests past it are passed over (a skip) and, with no other upstream, get 429 rate_limited.
METERED_RPM = 3


def proxy_manifests(fakes: dict[str, ThreadedFake]) -> str:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "BreakerPolicy",
            "metadata": {"name": "fast"},
            "spec": {
                "consecutiveFailures": 3,
                "openDuration": "30s",
                "jitter": 0,
                "failureRate": {"threshold": 0},
            },
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "m1"},
            "spec": {"models": ["m1"], "targets": [{"upstream": n} for n in fakes]},
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": "m2"},
            "spec": {"models": ["m2"], "targets": [{"upstream": "metered"}]},
        },
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": "metered"},
            "spec": {
                "provider": "openai-compatible",
                "baseURL": fakes["secondary"].base_url,
                "models": [{"name": "m2", "cost": {"inputPer1M": 3.0, "outputPer1M": 15.0}}],
                "limits": {"requestsPerMinute": METERED_RPM, "tokensPerMinute": 100_000},
            },
        },
    ]
    for priority, (name, fake) in enumerate(fakes.items()):
        documents.append(
            {
                "apiVersion": "sluice.dev/v1alpha1",
                "kind": "Upstream",
                "metadata": {"name": name},
                "spec": {
                    "provider": "openai-compatible",
                    "baseURL": fake.base_url,
                    "models": [{"name": "m1", "cost": PRICES}],
                    "priority": priority,
                    "probe": {"interval": "500ms", "timeout": "500ms"},
                    "breaker": {"policyRef": {"name": "fast"}},
                    "forwardHeaders": ["x-fake-status"],  # the test fails requests with it
                },
            }
        )
    return "\n---\n".join(json.dumps(d) for d in documents)


def operator_manifests(namespace: str, fakes: dict[str, ThreadedFake]) -> str:
    documents = [
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Upstream",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "provider": "openai-compatible",
                "baseURL": fake.base_url,
                "models": [{"name": "m1"}],
                "probe": {"interval": "300ms", "timeout": "300ms"},
            },
        }
        for name, fake in fakes.items()
    ]
    return "\n---\n".join(json.dumps(d) for d in documents)


def call(
    base: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"content-type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as e:
        e.read()
        return int(e.code)


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
            return True
    except OSError:
        return False


@pytest.mark.timeout(300)
def test_every_dashboard_panel_and_alert_returns_data_from_a_real_prometheus(
    kubectl: Kubectl,
    namespace: str,
    fakes: dict[str, ThreadedFake],
    control_plane: ControlPlane,
    sluice_crds: Path,
    tmp_path: Path,
) -> None:
    prometheus, promtool = binary("prometheus"), binary("promtool")
    kubectl("apply", "-f", "-", input=operator_manifests(namespace, fakes))
    operator = OperatorProcess(control_plane.kubeconfig, namespace, tmp_path / "operator.log")
    manifests = tmp_path / "sluice.yaml"
    manifests.write_text(proxy_manifests(fakes))
    proxy_port = free_port()
    proxy = SluiceProcess(
        ["proxy", "--manifests", str(manifests), "--port", str(proxy_port)],
        tmp_path / "proxy.log",
        env={"SLUICE_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "proxy",
                        "static_configs": [{"targets": [f"127.0.0.1:{proxy_port}"]}],
                    },
                    {
                        "job_name": "operator",
                        "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}],
                    },
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{proxy_port}"
    prom = f"http://127.0.0.1:{prom_port}"

    def query(expr: str) -> list[Any]:
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    try:
        eventually(lambda: serving(f"{base}/healthz"), timeout=30, what="the proxy up")
        eventually(
            lambda: operator.metric("sluice_probes_total") > 0,
            timeout=30,
            what="the operator probing",
        )
        eventually(lambda: len(query("up == 1")) == 2, timeout=30, what="both targets scraped")
        chat = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
        for i in range(20):  # healthy traffic, streams among it
            assert call(base, "/v1/chat/completions", body={**chat, "stream": i % 4 == 0}) == 200
        metered = {**chat, "model": "m2"}
        for _ in range(METERED_RPM):  # metered's whole limit for this minute
            assert call(base, "/v1/chat/completions", body=metered) == 200
        for _ in range(5):  # past it: skipped, 429 rate_limited, over a few scrapes
            assert call(base, "/v1/chat/completions", body=metered) == 429
            time.sleep(0.4)
        fakes["primary"].stop()  # primary dies: failovers, probe failures, breakers open
        for _ in range(20):
            assert call(base, "/v1/chat/completions", body=chat) == 200
        for _ in range(5):  # everything tried fails: 502s, over a few scrapes
            call(base, "/v1/chat/completions", body=chat, headers={"x-fake-status": "500"})
            time.sleep(0.4)
        call(
            base,
            "/admin/breakers/default/secondary/open",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        for _ in range(5):  # every circuit open: 503 circuit_open, over a few scrapes
            assert call(base, "/v1/chat/completions", body=chat) == 503
            time.sleep(0.4)
        time.sleep(3)  # a few more scrapes and rule evaluations

        missing = [name for name, expr in dashboard_queries() + alert_queries() if not query(expr)]

        for target in (base, f"http://127.0.0.1:{operator.metrics_port}"):
            with urllib.request.urlopen(f"{target}/metrics", timeout=5) as response:  # noqa: S310
                metrics = response.read()
            lint = subprocess.run(
                [promtool, "check", "metrics"], input=metrics, capture_output=True, check=False
            )
            assert lint.returncode == 0, (target, lint.stdout, lint.stderr)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
        proxy.stop()
        operator.stop()

    assert missing == [], f"queries without data: {missing}"
    assert len(dashboard_queries()) >= 35
