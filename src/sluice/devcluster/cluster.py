"""Start a real etcd and kube-apiserver on loopback, the way envtest does, and stop them again.

No kubelet, no controller manager, no scheduler: objects are stored and validated, RBAC is
enforced, ServiceAccount tokens are issued, but no pod ever runs. Everything listens on
127.0.0.1 on random free ports and lives in one temp directory, removed on :meth:`stop`.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from sluice.devcluster import pki as _pki
from sluice.devcluster.assets import ControlPlaneBinaries

_STARTUP_TIMEOUT = 90.0  # seconds; a cold kube-apiserver on 2 busy cores takes ~10
_STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """etcd or kube-apiserver did not start or did not answer; the message has its log tail."""


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the usual, slightly racy, way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child if the Python process dies, so nothing is left behind."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()


def _spawn(name: str, argv: list[str], workdir: Path) -> _Process:
    log_path = workdir / f"{name}.log"
    log_file = log_path.open("wb")
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads are started before this
        start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop them in order
    )
    return _Process(name=name, popen=popen, log_path=log_path, log_file=log_file)


def _wait_until(
    process: _Process, ready: Callable[[], bool], *, timeout: float = _STARTUP_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise ControlPlaneError(
                f"{process.name} exited with code {process.popen.returncode} while starting; "
                f"last lines of {process.log_path}:\n{_tail(process.log_path)}"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            if ready():
                return
        time.sleep(0.1)
    raise ControlPlaneError(
        f"{process.name} did not become ready in {timeout:.0f}s; "
        f"last lines of {process.log_path}:\n{_tail(process.log_path)}"
    )


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair. Use :meth:`start`, then :meth:`stop` (or ``with``)."""

    binaries: ControlPlaneBinaries
    workdir: Path
    server: str
    pki: _pki.PKI
    kubeconfig: Path
    etcd_url: str
    _processes: list[_Process] = field(default_factory=list, repr=False)
    _owns_workdir: bool = field(default=True, repr=False)

    @classmethod
    def start(
        cls,
        binaries: ControlPlaneBinaries,
        *,
        workdir: Path | None = None,
        address: str = "127.0.0.1",
        extra_ips: Sequence[str] = (),
        node_name: str | None = None,
        apiserver_args: Sequence[str] = (),
    ) -> Self:
        """Start etcd (always on loopback) and kube-apiserver on ``address``; a node's cluster
        passes the bridge address, the IPs its certificate must also name, the node's name
        (for the kubelet's certificates) and more flags (later ones win)."""
        owns = workdir is None
        root = Path(tempfile.mkdtemp(prefix="sluice-controlplane-")) if workdir is None else workdir
        root.mkdir(parents=True, exist_ok=True)
        ips = [address, *extra_ips] if address != "127.0.0.1" else list(extra_ips)
        certs = _pki.generate(root / "pki", extra_ips=ips, node_name=node_name)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        server = f"https://{address}:{api_port}"
        plane = cls(
            binaries=binaries,
            workdir=root,
            server=server,
            pki=certs,
            kubeconfig=root / "kubeconfig",
            etcd_url=etcd_url,
            _owns_workdir=owns,
        )
        try:
            plane._start_etcd(peer_port)
            plane._start_apiserver(api_port, address, apiserver_args)
        except BaseException:
            plane.stop()
            raise
        plane.write_kubeconfig(
            plane.kubeconfig,
            user={
                "client-certificate-data": _b64(certs.admin_cert),
                "client-key-data": _b64(certs.admin_key),
            },
        )
        return plane

    def _start_etcd(self, peer_port: int) -> None:
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = _spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=sluice",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=sluice={peer_url}",
                "--unsafe-no-fsync=true",  # throwaway data: no need to wait on the disk
                "--log-level=warn",
            ],
            self.workdir,
        )
        self._processes.append(etcd)

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:  # noqa: S310
                return bool(json.load(response).get("health") == "true")

        _wait_until(etcd, healthy)

    def _start_apiserver(self, port: int, address: str, extra: Sequence[str]) -> None:
        certs = self.pki
        # A list flag, so a repeat would add to it rather than replace it: extra's wins.
        mode = "--authorization-mode="
        authorization = next((a for a in extra if a.startswith(mode)), f"{mode}RBAC")
        extra = [a for a in extra if not a.startswith(mode)]
        apiserver = _spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--secure-port={port}",
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={certs.serving_cert}",
                f"--tls-private-key-file={certs.serving_key}",
                f"--client-ca-file={certs.ca_cert}",
                authorization,
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={certs.sa_public_key}",
                f"--service-account-signing-key-file={certs.sa_signing_key}",
                "--service-cluster-ip-range=10.0.0.0/24",  # an address plan only; never dialled
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                *extra,
            ],
            self.workdir,
        )
        self._processes.append(apiserver)

        def ready() -> bool:
            status, _ = self.request("GET", "/readyz")
            return status == 200

        _wait_until(apiserver, ready)

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any] | str]:
        """One admin request to the API server: (status, parsed JSON or text)."""
        host, port = self.server.removeprefix("https://").split(":")
        conn = http.client.HTTPSConnection(host, int(port), context=self._ssl_context(), timeout=10)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text
        finally:
            conn.close()

    def write_kubeconfig(
        self, path: Path, *, user: dict[str, str], namespace: str = "default"
    ) -> Path:
        """A kubeconfig for this server with the given credentials (JSON is valid YAML)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sluice-dev",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.pki.ca_cert),
                    },
                }
            ],
            "users": [{"name": "sluice-dev-user", "user": user}],
            "contexts": [
                {
                    "name": "sluice-dev",
                    "context": {
                        "cluster": "sluice-dev",
                        "user": "sluice-dev-user",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "sluice-dev",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        expiration_seconds: int = 3600,
        audiences: list[str] | None = None,  # None: the API server's own
    ) -> str:
        """A bound token for a ServiceAccount (TokenRequest), to act as it, or (with
        ``audiences``) to prove who it is to someone else, as a projected token does."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences is not None:
            spec["audiences"] = audiences
        status, body = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        if status != 201 or not isinstance(body, dict):
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} failed: {status} {body}")
        return str(body["status"]["token"])

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name``."""
        token = self.service_account_token(namespace, name)
        return self.write_kubeconfig(path, user={"token": token}, namespace=namespace)

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(p.popen.poll() is None for p in self._processes)

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd, and remove the temp directory if we made it."""
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
