"""The node's configuration files, as pure functions of its network and state directory.

Each choice that keeps the node private or self-contained is made here, where a unit test can
read it: everything the node writes lives under its state directory (containerd's root, state,
runc's state and the pods' network namespaces; the kubelet's root and pod logs; the IPAM
leases), everything it serves listens on loopback or the private bridge, and no setting reaches
for a registry or changes a kernel setting the node does not put back.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
NODE_NAME = "sluice-node"
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class NodeNetwork:
    """The private bridge the pods sit on, and the Service address range."""

    bridge: str = "sluice0"
    pod_subnet: str = "10.213.0.0/24"
    service_subnet: str = "10.0.0.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's own address: the pods' gateway, where the host's servers listen."""
        return str(next(ipaddress.ip_network(self.pod_subnet).hosts()))

    @property
    def prefix_length(self) -> int:
        return ipaddress.ip_network(self.pod_subnet).prefixlen

    @property
    def kubernetes_service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP (the first of the range): in-cluster clients
        dial it, so it must be in the API server's certificate."""
        return str(next(ipaddress.ip_network(self.service_subnet).hosts()))


CAP_SYS_RESOURCE = 24
RUNC_WRAPPER = """#!{python}
# Written by sluice's dev cluster: runc, with the OCI spec's negative oomScoreAdj raised to 0.
# This host's root lacks CAP_SYS_RESOURCE, so the kernel refuses the -998 the kubelet gives
# every pod sandbox (and runc's init dies: "can't get final child's PID from pipe: EOF").
import json, os, sys

args = sys.argv[1:]
if "create" in args and "--bundle" in args:
    spec_path = os.path.join(args[args.index("--bundle") + 1], "config.json")
    with open(spec_path) as f:
        spec = json.load(f)
    if spec.get("process", {{}}).get("oomScoreAdj", 0) < 0:
        spec["process"]["oomScoreAdj"] = 0
        with open(spec_path, "w") as f:
            json.dump(spec, f)
os.execv({runc!r}, [{runc!r}, *args])
"""


def lacks_sys_resource(proc_status: str) -> bool:
    """Whether this process's effective capabilities (``/proc/self/status``) miss
    CAP_SYS_RESOURCE, without which no negative oom_score_adj can be set."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return not int(line.split()[1], 16) & (1 << CAP_SYS_RESOURCE)
    return False


def runc_wrapper(*, python: str, runc: str) -> str:
    return RUNC_WRAPPER.format(python=python, runc=runc)


def containerd_config(state: Path, *, sandbox_image: str, runc: str = "runc") -> str:
    """containerd 1.6's config (version 2), everything under ``state``, nothing on TCP except
    the CRI streaming server on loopback (port-forward and logs go through it)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runtime = f"{cri}.containerd.runtimes.runc"
    lines = [
        "version = 2",
        f'root = "{state / "root"}"',
        f'state = "{state / "state"}"',
        # Snapshotters this host cannot use only add noise to the log.
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", '
        '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
        '"io.containerd.snapshotter.v1.devmapper"]',
        "[grpc]",
        f'  address = "{state / "containerd.sock"}"',
        "[ttrpc]",
        f'  address = "{state / "containerd.sock.ttrpc"}"',
        "[debug]",
        '  address = ""',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f'  path = "{state / "opt"}"',
        f"[{cri}]",
        f'  sandbox_image = "{sandbox_image}"',
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  netns_mounts_under_state_dir = true",
        "  enable_selinux = false",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{runtime}]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{runtime}.options]",
        f'  BinaryName = "{runc}"',
        f'  Root = "{state / "runc"}"',  # so a sweep with `runc --root` finds every container
        "  SystemdCgroup = false",  # the kubelet's cgroupDriver is cgroupfs: they must agree
        f"[{cri}.cni]",
        f'  bin_dir = "{CNI_BIN_DIR}"',
        f'  conf_dir = "{state / "cni"}"',
        "  max_conf_num = 1",
    ]
    return "\n".join(lines) + "\n"


def cni_conflist(network: NodeNetwork, *, ipam_dir: Path) -> dict[str, Any]:
    """The pods' network: a veth on the private bridge, an address from host-local.

    No ipMasq (nothing beyond the host is reachable, and it would add iptables rules to clean);
    hairpin mode, so a pod can reach itself through its own Service.
    """
    return {
        "cniVersion": "1.0.0",
        "name": "sluice",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.pod_subnet, "gateway": network.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def kubelet_config(
    network: NodeNetwork, *, state: Path, runtime_socket: Path, pki: dict[str, Path]
) -> dict[str, Any]:
    """The kubelet's KubeletConfiguration. It serves on the bridge only, trusts client
    certificates of the cluster's CA only, and never evicts or garbage-collects images on its
    own (the images here cannot be pulled again)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.gateway,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "tlsCertFile": str(pki["serving_cert"]),
        "tlsPrivateKeyFile": str(pki["serving_key"]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki["ca_cert"])},
        },
        "authorization": {"mode": "AlwaysAllow"},  # any holder of a CA-signed certificate
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "cgroupDriver": "cgroupfs",  # containerd 1.6 cannot tell (no RuntimeConfig in its CRI)
        "failCgroupV1": False,  # this VM has cgroup v1; v1.33 still runs on it
        "failSwapOn": False,
        "clusterDNS": [network.gateway],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(state / "resolv.conf"),
        "podLogsDir": str(state / "pod-logs"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%"},
        "serializeImagePulls": False,
        "registerNode": True,
        "makeIPTablesUtilChains": False,
        "shutdownGracePeriod": "0s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }


def kube_proxy_config(
    network: NodeNetwork, *, kubeconfig: Path, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    """kube-proxy in iptables mode, leaving every kernel setting as it found it.

    ``masqueradeAll``: a pod that reaches another pod on the same bridge through a Service has
    the reply sent back through the host (so conntrack can undo the DNAT), without needing
    ``bridge-nf-call-iptables``. No conntrack sysctl is touched (``maxPerCore: 0`` and zero
    timeouts mean leave as is), no NodePort listens beyond the bridge and no
    ``route_localnet`` (``localhostNodePorts: false``).
    """
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": network.pod_subnet,
        "bindAddress": network.gateway,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{network.gateway}/32"],
        "iptables": {"masqueradeAll": True, "localhostNodePorts": False, "syncPeriod": "10s"},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def corefile(network: NodeNetwork, *, kubeconfig: Path, ready_port: int) -> str:
    """CoreDNS on the bridge address: Services and pods of ``cluster.local`` from the API
    server; every other name is refused (no upstream DNS is reachable from here)."""
    return (
        f"{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{\n"
        f"    bind {network.gateway}\n"
        f"    ready 127.0.0.1:{ready_port}\n"
        "    errors\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{\n"
        f"        kubeconfig {kubeconfig}\n"
        "        pods insecure\n"
        "        ttl 5\n"
        "    }\n"
        "}\n"
    )


def resolv_conf() -> str:
    """The node's resolv.conf for pods: none of the host's search domains or servers (pods
    with ClusterFirst get the cluster's own on top of this)."""
    return "# written by sluice's dev cluster: pods resolve through the cluster's DNS only\n"


def to_json(value: Any) -> str:
    """Kubernetes component configs are YAML, and JSON is YAML."""
    return json.dumps(value, indent=2) + "\n"
