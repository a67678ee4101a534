"""What a node changes on its host, and how each change is put back.

A node adds a bridge, iptables chains (kube-proxy's, the kubelet's), sets ``ip_forward`` (the
bridge CNI plugin does, for Service traffic between pods), mounts volumes and container root
filesystems, and runs containers under containerd's shims. :class:`HostChanges` records what was
there before, so stopping removes exactly what the node added and nothing a user had.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CGROUP_ROOT = Path("/sys/fs/cgroup")
TOOLS = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "iptables-save", "ip")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
PACKAGES = "containerd runc containernetworking-plugins iptables"


class NodeError(RuntimeError):
    """The node cannot run here, or did not start; the message says what is missing."""


def missing_prerequisites(
    *,
    euid: int,
    which: Callable[[str], str | None],
    exists: Callable[[Path], bool],
    cni_bin_dir: Path,
) -> list[str]:
    """Everything this host lacks to run a node, each in words that say how to get it."""
    problems = []
    if euid != 0:
        problems.append("it must run as root (containers, a bridge and iptables rules)")
    memory = exists(CGROUP_ROOT / "memory") or exists(CGROUP_ROOT / "cgroup.controllers")
    if not memory:
        problems.append(f"no cgroup hierarchy with the memory controller under {CGROUP_ROOT}")
    tools = [tool for tool in TOOLS if which(tool) is None]
    if tools:
        problems.append(f"{', '.join(tools)} not on PATH (apt-get install {PACKAGES})")
    plugins = [p for p in CNI_PLUGINS if not exists(cni_bin_dir / p)]
    if plugins:
        problems.append(
            f"CNI plugins {', '.join(plugins)} not in {cni_bin_dir} "
            "(apt-get install containernetworking-plugins)"
        )
    return problems


def check_prerequisites(cni_bin_dir: Path) -> None:
    problems = missing_prerequisites(
        euid=os.geteuid(), which=shutil.which, exists=Path.exists, cni_bin_dir=cni_bin_dir
    )
    if problems:
        raise NodeError(
            "the dev cluster's node cannot run here: "
            + "; ".join(problems)
            + " (scripts/test.sh installs the packages when it runs as root)"
        )


def run(*cmd: str, check: bool = True) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed (exit {result.returncode}): {result.stderr}")
    return result.stdout


def chains(save: str) -> set[tuple[str, str]]:
    """(table, chain) of every user-defined chain in an ``iptables-save`` dump (a built-in
    one has a policy instead of ``-``, and is never the node's to remove)."""
    found, table = set(), ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line.split()[1] == "-":
            found.add((table, line[1:].split()[0]))
    return found


def removal_commands(save: str, added: set[tuple[str, str]]) -> list[list[str]]:
    """The iptables arguments that remove the ``added`` chains: first every rule that jumps to
    one of them (from any chain), then each chain's rules, then the chains themselves."""
    commands, table = [], ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            words = shlex.split(line)
            target = words[words.index("-j") + 1] if "-j" in words else None
            if (table, words[1]) not in added and (table, target) in added:
                commands.append(["-t", table, "-D", *words[1:]])
    commands += [["-t", t, "-F", c] for t, c in sorted(added)]
    commands += [["-t", t, "-X", c] for t, c in sorted(added)]
    return commands


def mounts_under(mountinfo: str, roots: list[Path]) -> list[str]:
    """Mount points under any of ``roots``, deepest first (the order to unmount them in)."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")
            if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def processes_mentioning(text: str, proc: Path = Path("/proc")) -> list[int]:
    """PIDs whose command line contains ``text`` (containerd's shims name their socket)."""
    pids = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    pids.append(int(entry.name))
    return pids


@dataclass
class HostChanges:
    """The host's state before the node, and the undo of everything the node did to it."""

    bridge: str
    families: Mapping[str, set[tuple[str, str]]] = field(default_factory=dict)
    ip_forward: str = "0"

    @classmethod
    def record(cls, bridge: str) -> HostChanges:
        families = {
            binary: chains(run(f"{binary}-save", check=False))
            for binary in ("iptables", "ip6tables")
            if shutil.which(f"{binary}-save")
        }
        return cls(bridge=bridge, families=families, ip_forward=IP_FORWARD.read_text().strip())

    def add_bridge(self, address: str, prefix_length: int) -> None:
        self.remove_bridge()  # one left by a node that was killed before it could stop
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{address}/{prefix_length}", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def remove_bridge(self) -> None:
        if Path(f"/sys/class/net/{self.bridge}").exists():
            run("ip", "link", "delete", self.bridge, check=False)

    def remove_chains(self) -> None:
        """Remove every chain that was not there before the node (and the jumps to it)."""
        for binary, before in self.families.items():
            save = run(f"{binary}-save", check=False)
            added = chains(save) - before
            for args in removal_commands(save, added):
                run(binary, "-w", *args, check=False)

    def restore(self) -> None:
        self.remove_chains()
        self.remove_bridge()
        with contextlib.suppress(OSError):
            IP_FORWARD.write_text(self.ip_forward)


def unmount_under(roots: list[Path]) -> list[str]:
    """Unmount everything under ``roots``; what could not be unmounted, even lazily."""
    left = []
    for point in mounts_under(Path("/proc/self/mountinfo").read_text(), roots):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            lazy = subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            if lazy.returncode:
                left.append(point)
    return left


def sweep_containers(runc_root: Path, containerd_socket: Path) -> None:
    """Kill whatever containerd left running: every runc container under its root (force
    delete kills and removes), then every shim that served its socket."""
    for namespace_root in runc_root.glob("*"):
        listed = run("runc", "--root", str(namespace_root), "list", "-q", check=False)
        for container in listed.split():
            run("runc", "--root", str(namespace_root), "delete", "--force", container, check=False)
    for pid in processes_mentioning(str(containerd_socket)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_pod_cgroups() -> None:
    """Remove the kubelet's (now empty) ``kubepods`` cgroups, deepest first, in every
    hierarchy; one that still has a process stays (and says so by failing rmdir)."""
    for top in CGROUP_ROOT.glob("*/kubepods"):
        for directory in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
