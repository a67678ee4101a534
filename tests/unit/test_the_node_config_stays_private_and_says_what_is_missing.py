"""The dev cluster's node: what it reports missing, the config it writes (private, self-contained),
how it finds what to undo on the host, and the pause image it packs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from sluice.devcluster import nodeconfig, nodehost, ociimage
from sluice.devcluster.nodeassets import NODE_BINARIES, ldflags, missing_in, override_error
from sluice.devcluster.nodecli import how_to_use

NET = nodeconfig.NodeNetwork()
STATE = Path("/srv/state")


def test_a_host_without_root_tools_or_cgroups_is_told_each_thing_it_lacks() -> None:
    problems = nodehost.missing_prerequisites(
        euid=1000,
        which=lambda tool: None if tool in {"containerd", "runc"} else f"/usr/bin/{tool}",
        exists=lambda path: path.name == "bridge",
        cni_bin_dir=Path("/usr/lib/cni"),
    )

    text = "; ".join(problems)
    assert "must run as root" in text
    assert "memory controller" in text
    assert "containerd, runc not on PATH (apt-get install containerd runc" in text
    assert "CNI plugins host-local, loopback not in /usr/lib/cni" in text


def test_a_ready_host_lacks_nothing() -> None:
    problems = nodehost.missing_prerequisites(
        euid=0, which=lambda tool: f"/usr/bin/{tool}", exists=lambda _: True, cni_bin_dir=Path("/x")
    )

    assert problems == []


def test_a_node_assets_dir_missing_binaries_names_them(tmp_path: Path) -> None:
    (tmp_path / "kubelet").write_text("")
    (tmp_path / "kubelet").chmod(0o755)

    missing = missing_in(tmp_path)

    assert missing == [n for n in NODE_BINARIES if n != "kubelet"]
    assert "SLUICE_NODE_ASSETS=" in override_error(tmp_path, missing)
    assert "kube-proxy" in override_error(tmp_path, missing)


def test_the_kubernetes_programs_are_stamped_with_their_version() -> None:
    assert "gitVersion=v1.33.13" in ldflags("kubelet")
    assert ldflags("coredns") == "-s -w"


def test_everything_the_node_serves_is_on_loopback_or_the_bridge() -> None:
    kubelet = nodeconfig.kubelet_config(
        NET,
        state=STATE,
        runtime_socket=STATE / "c.sock",
        pki=dict.fromkeys(("serving_cert", "serving_key", "ca_cert"), Path("/p")),
    )
    proxy = nodeconfig.kube_proxy_config(NET, kubeconfig=Path("/k"), healthz_port=1, metrics_port=2)
    containerd = nodeconfig.containerd_config(STATE, sandbox_image="localhost/sluice/pause:3.10")
    corefile = nodeconfig.corefile(NET, kubeconfig=Path("/k"), ready_port=3)

    assert kubelet["address"] == NET.gateway == "10.213.0.1"
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert proxy["healthzBindAddress"].startswith("127.0.0.1:")
    assert proxy["metricsBindAddress"].startswith("127.0.0.1:")
    assert proxy["nodePortAddresses"] == ["10.213.0.1/32"]
    assert 'stream_server_address = "127.0.0.1"' in containerd
    assert f"bind {NET.gateway}" in corefile
    assert "ready 127.0.0.1:3" in corefile


def test_the_node_keeps_its_state_in_its_directory_and_kernel_settings_alone() -> None:
    containerd = nodeconfig.containerd_config(STATE, sandbox_image="img")
    proxy = nodeconfig.kube_proxy_config(NET, kubeconfig=Path("/k"), healthz_port=1, metrics_port=2)
    cni = nodeconfig.cni_conflist(NET, ipam_dir=STATE / "ipam")

    for key in ("root", "state", "Root", "conf_dir", "path"):
        assert f'{key} = "{STATE}' in containerd
    assert "netns_mounts_under_state_dir = true" in containerd
    assert "SystemdCgroup = false" in containerd  # agrees with the kubelet's cgroupfs
    assert proxy["conntrack"]["maxPerCore"] == 0
    assert proxy["iptables"]["localhostNodePorts"] is False
    bridge = cni["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"] == str(STATE / "ipam")


def test_the_apiserver_service_ip_and_gateway_follow_the_subnets() -> None:
    network = nodeconfig.NodeNetwork(pod_subnet="10.9.8.0/24", service_subnet="10.96.0.0/16")

    assert network.gateway == "10.9.8.1"
    assert network.kubernetes_service_ip == "10.96.0.1"
    assert network.prefix_length == 24


SAVE_BEFORE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:MINE - [0:0]
-A INPUT -j MINE
COMMIT
"""
SAVE_AFTER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:MINE - [0:0]
:KUBE-FORWARD - [0:0]
-A INPUT -j MINE
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
"""


def test_only_the_chains_the_node_added_are_removed_with_the_jumps_to_them() -> None:
    added = nodehost.chains(SAVE_AFTER) - nodehost.chains(SAVE_BEFORE)

    commands = nodehost.removal_commands(SAVE_AFTER, added)

    assert added == {("filter", "KUBE-FORWARD"), ("nat", "KUBE-SERVICES")}
    assert commands == [
        [
            "-t",
            "filter",
            "-D",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "kubernetes forwarding rules",
            "-j",
            "KUBE-FORWARD",
        ],
        ["-t", "nat", "-D", "PREROUTING", "-j", "KUBE-SERVICES"],
        ["-t", "filter", "-F", "KUBE-FORWARD"],
        ["-t", "nat", "-F", "KUBE-SERVICES"],
        ["-t", "filter", "-X", "KUBE-FORWARD"],
        ["-t", "nat", "-X", "KUBE-SERVICES"],
    ]


def test_mounts_under_the_state_dir_are_unmounted_deepest_first() -> None:
    mountinfo = "\n".join(
        [
            "22 1 8:1 / / rw - ext4 /dev/vda rw",
            "30 22 0:5 / /srv/state/kubelet/pods/a/volumes/x rw - tmpfs tmpfs rw",
            "31 22 0:6 / /srv/state/containerd/state/run/k8s.io/b/rootfs rw - overlay overlay rw",
            "32 22 0:7 / /srv/state-other rw - tmpfs tmpfs rw",
            "33 30 0:8 / /srv/state/kubelet/pods/a/volumes/x/deeper rw - tmpfs tmpfs rw",
        ]
    )

    points = nodehost.mounts_under(mountinfo, [STATE])

    deeper = points.index("/srv/state/kubelet/pods/a/volumes/x/deeper")
    assert deeper < points.index("/srv/state/kubelet/pods/a/volumes/x")
    assert set(points) == {
        "/srv/state/kubelet/pods/a/volumes/x/deeper",
        "/srv/state/kubelet/pods/a/volumes/x",
        "/srv/state/containerd/state/run/k8s.io/b/rootfs",
    }


def test_the_pause_image_archive_is_a_valid_deterministic_oci_layout() -> None:
    archive = ociimage.archive_bytes(
        b"\x7fELF pause", name="pause", reference="localhost/sluice/pause:3.10"
    )

    assert archive == ociimage.archive_bytes(
        b"\x7fELF pause", name="pause", reference="localhost/sluice/pause:3.10"
    )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    entry = index["manifests"][0]
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/sluice/pause:3.10"
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"])
    config_blob = files[f"blobs/sha256/{manifest['config']['digest'].removeprefix('sha256:')}"]
    config = json.loads(config_blob)
    assert config["config"]["Entrypoint"] == ["/pause"]
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'].removeprefix('sha256:')}"]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    for name, data in files.items():
        if name.startswith("blobs/"):
            assert name.endswith(hashlib.sha256(data).hexdigest())
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        (member,) = tar.getmembers()
    assert (member.name, member.mode, member.mtime) == ("pause", 0o755, 0)


def test_a_person_is_told_how_to_install_the_chart_with_the_loaded_image() -> None:
    text = how_to_use(
        Path("/s/kubeconfig"), Path("/t/helm"), Path("/t/kubectl"), "localhost/sluice:abc123"
    )

    assert "export KUBECONFIG=/s/kubeconfig" in text
    assert "--set image.repository=localhost/sluice" in text
    assert "--set image.tag=abc123 --set image.pullPolicy=Never" in text
    assert "port-forward svc/sluice-proxy 8080:80" in text
    assert "not loaded" in how_to_use(Path("/k"), Path("/h"), Path("/c"), None)
