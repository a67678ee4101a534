"""Processes and servers the integration tests run: the operator as a real subprocess, and
fake upstreams in a thread of their own so they keep answering while a test blocks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sluice.devcluster.cluster import free_port
from sluice.fakes import FakeUpstream, SeenRequest

T = TypeVar("T")
ADMIN_TOKEN = "integration-admin-token"


class ThreadedFake:
    """A FakeUpstream on its own event loop thread, with a fixed port across stop/start."""

    def __init__(self, name: str, *, default_status: int | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.fake = FakeUpstream(name=name, port=free_port(), default_status=default_status)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    @property
    def base_url(self) -> str:
        return self.fake.base_url

    def start(self) -> None:
        self._call(self.fake.start())

    def stop(self) -> None:
        self._call(self.fake.stop())

    def seen(self) -> list[SeenRequest]:
        return list(self.fake.seen)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


class SluiceProcess:
    """A ``sluice`` subcommand as a real process, logging to a file, stopped by signal."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sluice", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class OperatorProcess(SluiceProcess):
    """``sluice operator`` for one namespace, with its own Lease and metrics port."""

    def __init__(
        self, kubeconfig: Path, namespace: str, log_path: Path, *extra: str, identity: str = "op"
    ) -> None:
        self.metrics_port = free_port()
        self.report_port = free_port()  # extra may name another (the last --report-port wins)
        self.identity = identity
        super().__init__(
            [
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--namespace",
                namespace,
                "--lease-namespace",
                namespace,
                "--metrics-address",
                "127.0.0.1",
                "--metrics-port",
                str(self.metrics_port),
                "--report-port",
                str(self.report_port),
                "--identity",
                identity,
                "--lease-duration",
                "3s",
                "--renew-deadline",
                "2s",
                "--retry-period",
                "500ms",
                *extra,
            ],
            log_path,
        )

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def serving(self) -> bool:
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` with these labels, over every other label (0 if
        there are none, or while the process is not serving yet)."""
        try:
            text = self.metrics()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


class ProxyProcess(SluiceProcess):
    """``sluice proxy --kubernetes`` for one namespace, on a free port, with an admin token;
    ``extra`` are more flags (``--client-keys DIR``)."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [
                "proxy",
                "--kubernetes",
                "--kubeconfig",
                str(kubeconfig),
                "--namespace",
                namespace,
                "--port",
                str(self.port),
                *extra,
            ],
            log_path,
            env={"SLUICE_ADMIN_TOKEN": ADMIN_TOKEN},
        )

    def served_by(self) -> str:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.base}/v1/chat/completions",
            data=json.dumps({"model": "m1", "messages": []}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return str(response.headers["x-sluice-upstream"])

    def admin(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.base}{path}", method="POST", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return dict(json.loads(response.read()))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=2):  # noqa: S310
                return True
        except (urllib.error.URLError, OSError):
            return False


def eventually(check: Callable[[], T], *, timeout: float, interval: float = 0.2, what: str) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def set_override(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    namespace: str,
    name: str,
    state: str | None,
) -> None:
    """``kubectl patch`` spec.breaker.override: "Open", "Closed", or None to lift it."""
    patch = json.dumps({"spec": {"breaker": {"override": state}}})
    kubectl("patch", "upstream", name, "-n", namespace, "--type", "merge", "-p", patch)


def patch_status(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    namespace: str,
    name: str,
    status: dict[str, Any],
) -> None:
    """``kubectl patch --subresource=status``, as the operator would write it."""
    kubectl(
        "patch",
        "upstream",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        json.dumps({"status": status}),
    )


def get_json(kubectl: Callable[..., subprocess.CompletedProcess[str]], *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)
