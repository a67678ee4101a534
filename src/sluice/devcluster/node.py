"""A one-node Kubernetes cluster on this host: the control plane, and a node whose pods run.

Next to etcd and kube-apiserver (:mod:`cluster`) it runs kube-controller-manager,
kube-scheduler, a kubelet on containerd and runc (Debian's), kube-proxy in iptables mode, and
CoreDNS on the host. Pods sit on a private bridge; the API server, CoreDNS and the kubelet listen
on the bridge's address (and loopback), nothing else. Everything lives in one state directory;
:meth:`NodeCluster.stop` stops every process by PID, kills what containerd left behind, unmounts
what the kubelet and containerd mounted, and puts the host's bridge, iptables and
``ip_forward`` back as they were.

One node cluster runs at a time on a host (a lock in the cache): the bridge's name and
subnet, and kube-proxy's chains, are the host's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from sluice.devcluster import nodeconfig, nodehost
from sluice.devcluster.assets import ControlPlaneBinaries, cache_root
from sluice.devcluster.cluster import (
    ControlPlane,
    ControlPlaneError,
    _Process,
    _spawn,
    _tail,
    _wait_until,
    free_port,
)
from sluice.devcluster.nodeassets import PAUSE_IMAGE, NodeBinaries
from sluice.devcluster.nodehost import NodeError

Log = Callable[[str], None]
_NODE_READY_TIMEOUT = 120.0
_DRAIN_TIMEOUT = 45.0


_LOCK_WAIT = 900.0  # seconds: another node's whole test tier, with room to spare


@contextlib.contextmanager
def _host_lock(log: Log) -> Iterator[IO[str]]:
    """Held for a node's whole life: a second node on the host waits (saying so, and for a
    bounded time) instead of fighting over the bridge and kube-proxy's chains."""
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / "node-host.lock"
    with path.open("w") as handle:
        deadline = time.monotonic() + _LOCK_WAIT
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeError(
                        f"another node cluster has held {path} for {_LOCK_WAIT:.0f}s: one node "
                        "runs at a time on a host (its bridge and iptables chains); stop it"
                    ) from None
                if not waiting:
                    log(f"another node cluster is running on this host ({path}); waiting ...")
                    waiting = True
                time.sleep(1)
        yield handle


@dataclass
class NodeCluster:
    """A running one-node cluster. :meth:`start` it, then :meth:`stop` it (or ``with``)."""

    control: ControlPlaneBinaries
    binaries: NodeBinaries
    state: Path
    network: nodeconfig.NodeNetwork
    log: Log
    plane: ControlPlane | None = None
    host: nodehost.HostChanges | None = None
    _processes: dict[str, _Process] = field(default_factory=dict, repr=False)
    _owns_state: bool = field(default=True, repr=False)
    _lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @classmethod
    def start(
        cls,
        control: ControlPlaneBinaries,
        binaries: NodeBinaries,
        *,
        state: Path | None = None,
        network: nodeconfig.NodeNetwork | None = None,
        log: Log = print,
    ) -> Self:
        """Check the host, then bring up every piece in dependency order, waiting for each."""
        nodehost.check_prerequisites(nodeconfig.CNI_BIN_DIR)
        lock = contextlib.ExitStack()
        lock.enter_context(_host_lock(log))
        owns = state is None
        root = Path(tempfile.mkdtemp(prefix="sluice-node-")) if state is None else state
        node = cls(control, binaries, root, network or nodeconfig.NodeNetwork(), log, _lock=lock)
        node._owns_state = owns
        try:
            node._start_all()
        except BaseException:
            node.stop()
            raise
        return node

    def _start_all(self) -> None:
        started = time.monotonic()
        self.host = nodehost.HostChanges.record(self.network.bridge)
        self.host.add_bridge(self.network.gateway, self.network.prefix_length)
        self.plane = self._start_control_plane()
        self._start_containerd()
        self._start_coredns()
        self._start_controllers()
        self._start_kubelet()
        self._start_kube_proxy()
        self.log(f"node {nodeconfig.NODE_NAME} is Ready ({time.monotonic() - started:.0f}s)")

    def _plane(self) -> ControlPlane:
        if self.plane is None:
            raise NodeError("the node's control plane is not running")
        return self.plane

    def _node_pki(self) -> dict[str, Path]:
        node = self._plane().pki.node
        if node is None:
            raise NodeError("the control plane was started without the node's certificates")
        return node

    @property
    def kubeconfig(self) -> Path:
        return self._plane().kubeconfig

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd" / "containerd.sock"

    def _start_control_plane(self) -> ControlPlane:
        network = self.network
        workdir = self.state / "controlplane"
        return ControlPlane.start(
            self.control,
            workdir=workdir,
            address=network.gateway,
            extra_ips=[network.kubernetes_service_ip],
            node_name=nodeconfig.NODE_NAME,
            apiserver_args=self._apiserver_args(workdir),
        )

    def _apiserver_args(self, workdir: Path) -> list[str]:
        """The node's additions: the Node authorizer for the kubelet's identity, the
        ``kubernetes`` Service's endpoint kept on the bridge address, and how to reach the
        kubelet (its certificate checked against the cluster's CA)."""
        pki = workdir / "pki"
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--endpoint-reconciler-type=lease",
            f"--service-cluster-ip-range={self.network.service_subnet}",
            f"--kubelet-client-certificate={pki / 'apiserver_client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver_client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        process = _spawn(name, argv, self.state)
        self._processes[name] = process
        return process

    def _start_containerd(self) -> None:
        directory = self.state / "containerd"
        (directory / "cni").mkdir(parents=True)
        config = directory / "config.toml"
        runc = shutil.which("runc") or "runc"
        if nodeconfig.lacks_sys_resource(Path("/proc/self/status").read_text()):
            wrapper = directory / "runc-wrapper"
            wrapper.write_text(nodeconfig.runc_wrapper(python=sys.executable, runc=runc))
            wrapper.chmod(0o755)
            runc = str(wrapper)
        config.write_text(
            nodeconfig.containerd_config(directory, sandbox_image=PAUSE_IMAGE, runc=runc)
        )
        conflist = nodeconfig.cni_conflist(self.network, ipam_dir=directory / "ipam")
        (directory / "cni" / "10-sluice.conflist").write_text(nodeconfig.to_json(conflist))
        process = self._spawn("containerd", ["containerd", "--config", str(config)])

        def serving() -> bool:
            return self.ctr("version", check=False).returncode == 0

        _wait_until(process, serving, timeout=60)
        self.import_image(self.binaries.pause_image)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """containerd's own client against this node's containerd, in the CRI's namespace."""
        cmd = ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
        if check and result.returncode != 0:
            raise NodeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
        return result

    def import_image(self, archive: Path) -> None:
        """Load an image archive (OCI or docker) into the node, where the kubelet finds it."""
        self.ctr("images", "import", str(archive))

    def _start_coredns(self) -> None:
        ready_port = free_port()
        corefile = self.state / "Corefile"
        corefile.write_text(
            nodeconfig.corefile(self.network, kubeconfig=self.kubeconfig, ready_port=ready_port)
        )
        process = self._spawn("coredns", [str(self.binaries.coredns), "-conf", str(corefile)])

        def ready() -> bool:
            url = f"http://127.0.0.1:{ready_port}/ready"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        _wait_until(process, ready, timeout=60)

    def _start_controllers(self) -> None:
        """kube-controller-manager and kube-scheduler, as the cluster admin, serving nothing;
        the node becoming Ready and pods being scheduled show they work."""
        pki = self._plane().pki
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_signing_key}",
                "--use-service-account-credentials=false",
                "--cluster-name=sluice-dev",
                "--node-monitor-grace-period=20s",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )

    def _node_kubeconfig(self) -> Path:
        node = self._node_pki()
        return self._plane().write_kubeconfig(
            self.state / "kubelet.kubeconfig",
            user={
                "client-certificate": str(node["kubelet_client_cert"]),
                "client-key": str(node["kubelet_client_key"]),
            },
        )

    def _start_kubelet(self) -> None:
        node = self._node_pki()
        (self.state / "resolv.conf").write_text(nodeconfig.resolv_conf())
        config = nodeconfig.kubelet_config(
            self.network,
            state=self.state,
            runtime_socket=self.containerd_socket,
            pki={
                "serving_cert": node["serving_cert"],
                "serving_key": node["serving_key"],
                "ca_cert": node["ca_cert"],
            },
        )
        path = self.state / "kubelet-config.json"
        path.write_text(nodeconfig.to_json(config))
        process = self._spawn(
            "kubelet",
            [
                str(self.binaries.kubelet),
                f"--config={path}",
                f"--kubeconfig={self._node_kubeconfig()}",
                f"--hostname-override={nodeconfig.NODE_NAME}",
                f"--node-ip={self.network.gateway}",
                f"--root-dir={self.state / 'kubelet'}",
            ],
        )
        _wait_until(process, self._node_ready, timeout=_NODE_READY_TIMEOUT)

    def _node_ready(self) -> bool:
        for name, other in self._processes.items():
            if other.popen.poll() is not None:
                raise NodeError(f"{name} exited while the node started:\n{_tail(other.log_path)}")
        status, body = self._plane().request("GET", f"/api/v1/nodes/{nodeconfig.NODE_NAME}")
        if status != 200 or not isinstance(body, dict):
            return False
        conditions = body.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_kube_proxy(self) -> None:
        healthz = free_port()
        config = nodeconfig.kube_proxy_config(
            self.network, kubeconfig=self.kubeconfig, healthz_port=healthz, metrics_port=free_port()
        )
        path = self.state / "kube-proxy-config.json"
        path.write_text(nodeconfig.to_json(config))
        process = self._spawn("kube-proxy", [str(self.binaries.kube_proxy), f"--config={path}"])

        def synced() -> bool:
            url = f"http://127.0.0.1:{healthz}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        _wait_until(process, synced, timeout=60)

    def logs(self, name: str, lines: int = 40) -> str:
        """The last lines of one component's log (kubelet, containerd, ...), for diagnostics."""
        process = self._processes.get(name)
        return _tail(process.log_path, lines) if process else f"({name} is not running)"

    @property
    def running(self) -> bool:
        alive = all(p.popen.poll() is None for p in self._processes.values())
        return alive and self.plane is not None and self.plane.running

    def stop(self) -> None:
        """Stop everything and put the host back, each step even if an earlier one failed."""
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._stop(name)  # nothing recreates or reschedules pods while they go
        with contextlib.suppress(Exception):
            self._delete_pods()
        for name in ("kube-proxy", "kubelet", "containerd"):
            self._stop(name)
        directory = self.state / "containerd"
        nodehost.sweep_containers(directory / "runc", self.containerd_socket)
        left = nodehost.unmount_under([self.state])
        self._stop("coredns")
        if self.plane is not None:
            self.plane.stop()
        self._cleanup_host()
        if left:
            self.log(f"could not unmount {', '.join(left)}")
        elif self._owns_state:
            shutil.rmtree(self.state, ignore_errors=True)
        self._lock.close()

    def _stop(self, name: str) -> None:
        if process := self._processes.pop(name, None):
            process.stop()

    def _cleanup_host(self) -> None:
        if self.host is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [str(self.binaries.kube_proxy), "--cleanup"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        self.host.restore()
        nodehost.remove_pod_cgroups()
        self.host = None

    def _delete_pods(self) -> None:
        """Delete every pod through the API and wait for the kubelet to confirm each: it stops
        the containers, frees their addresses and unmounts their volumes itself."""
        plane = self._plane()
        if "kubelet" not in self._processes:
            return
        body: dict[str, Any] = {"kind": "DeleteOptions", "gracePeriodSeconds": 1}
        status, listed = plane.request("GET", "/api/v1/pods")
        if status != 200 or not isinstance(listed, dict):
            return
        for pod in listed.get("items", []):
            meta = pod["metadata"]
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
            plane.request("DELETE", path, body)
        deadline = time.monotonic() + _DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            status, listed = plane.request("GET", "/api/v1/pods")
            if status == 200 and isinstance(listed, dict) and not listed.get("items"):
                return
            time.sleep(0.5)
        self.log(f"pods still there after {_DRAIN_TIMEOUT:.0f}s: {json.dumps(listed)[:500]}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["ControlPlaneError", "NodeCluster", "NodeError"]
