"""Find or build the node's binaries (kubelet, kube-proxy, kube-scheduler,
kube-controller-manager, CoreDNS) and the pause image, the way ``assets`` does for the control
plane.

Where the binaries come from, in order:

1. ``SLUICE_NODE_ASSETS``: a directory holding all of :data:`NODE_BINARIES` (for people who
   have them already, like ``KUBEBUILDER_ASSETS``). A wrong value is an error, never a fallback.
2. Sluice's cache, keyed by the pinned versions and a hash of the builders in ``gobuild/``.
3. :func:`ensure_node_binaries` builds them there with the same Go builder as kube-apiserver:
   the four Kubernetes programs from one module (``gobuild/kubernetes``) that pins the same
   ``k8s.io/kubernetes`` module set, CoreDNS from ``gobuild/coredns``.

The pause image is always built here (a few seconds): a static Go binary from ``gobuild/pause``
packed as an OCI image archive by :mod:`sluice.devcluster.ociimage`, since no registry is
reachable to pull ``registry.k8s.io/pause``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sluice.devcluster import ociimage
from sluice.devcluster.assets import (
    GOBUILD_DIR,
    KUBERNETES_VERSION,
    AssetsError,
    Log,
    _is_executable,
    _locked,
    _run,
    cache_root,
    sources_digest,
)

COREDNS_VERSION = "v1.12.0"  # what kubeadm v1.33 installs (cmd/kubeadm/app/constants)
KUBE_BINARIES = ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager")
NODE_BINARIES = (*KUBE_BINARIES, "coredns")
PAUSE_IMAGE = "localhost/sluice/pause:3.10"
OVERRIDE_ENV = "SLUICE_NODE_ASSETS"


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    kube_scheduler: Path
    kube_controller_manager: Path
    coredns: Path
    pause_image: Path  # an OCI image archive for `ctr images import`
    source: str  # "SLUICE_NODE_ASSETS" or "cache"


def node_cache_dir() -> Path:
    digest = sources_digest("kubernetes", "coredns")
    key = f"kubernetes-{KUBERNETES_VERSION}_coredns-{COREDNS_VERSION}_{digest}"
    return cache_root() / "node" / key


def pause_cache_dir() -> Path:
    return cache_root() / "node" / f"pause-{sources_digest('pause')}"


def missing_in(directory: Path) -> list[str]:
    """The node binaries that are not executable files in ``directory``."""
    return [name for name in NODE_BINARIES if not _is_executable(directory / name)]


def override_error(directory: Path, missing: list[str]) -> str:
    """Why ``SLUICE_NODE_ASSETS`` cannot be used, and what to do instead."""
    return (
        f"{OVERRIDE_ENV}={directory} has no executable {', '.join(missing)}; point it at a "
        f"directory with {', '.join(NODE_BINARIES)} (Kubernetes {KUBERNETES_VERSION}, CoreDNS "
        f"{COREDNS_VERSION} or close), or unset it to let Sluice build them"
    )


def _node_dir() -> tuple[Path, str] | None:
    """Where complete node binaries are, without building; None when they must be built."""
    if explicit := os.environ.get(OVERRIDE_ENV):
        directory = Path(explicit)
        if missing := missing_in(directory):
            raise AssetsError(override_error(directory, missing))
        return directory, OVERRIDE_ENV
    directory = node_cache_dir()
    return None if missing_in(directory) else (directory, "cache")


def _pause_archive() -> Path | None:
    archive = pause_cache_dir() / "pause.tar"
    return archive if archive.is_file() else None


def find_node_binaries() -> NodeBinaries | None:
    """The node binaries and pause image to use; None when something must be built first."""
    found, pause = _node_dir(), _pause_archive()
    if found is None or pause is None:
        return None
    directory, source = found
    return NodeBinaries(
        kubelet=directory / "kubelet",
        kube_proxy=directory / "kube-proxy",
        kube_scheduler=directory / "kube-scheduler",
        kube_controller_manager=directory / "kube-controller-manager",
        coredns=directory / "coredns",
        pause_image=pause,
        source=source,
    )


def ldflags(name: str) -> str:
    """Strip symbols; stamp the Kubernetes version into its programs, as its release does, so
    the node reports v1.33.x rather than v0.0.0."""
    if name not in KUBE_BINARIES:
        return "-s -w"
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (
        f"-s -w -X {pkg}.gitVersion={KUBERNETES_VERSION}"
        f" -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor}"
    )


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise AssetsError(
            "the node's binaries (kubelet, kube-proxy, kube-scheduler, kube-controller-manager, "
            "coredns, pause) are not cached and no Go toolchain is on PATH to build them: "
            f"install Go 1.22 or newer, or set {OVERRIDE_ENV} to a directory with "
            f"{', '.join(NODE_BINARIES)}"
        )
    return go


def _build(go: str, name: str, *, builder: str, package: str, out: Path, log: Log) -> None:
    started = time.monotonic()
    log(f"building {name} from the Go module proxy (once; cached) ...")
    _run(
        [go, "build", "-trimpath", f"-ldflags={ldflags(name)}", "-o", str(out / name), package],
        cwd=GOBUILD_DIR / builder,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"},
        what=f"building {name}",
    )
    log(f"built {name} in {time.monotonic() - started:.0f}s")


def _into_cache(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a staging directory, then rename it into place: a cache entry is whole or absent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    staging.chmod(0o755)
    try:
        fill(staging)
        shutil.rmtree(target, ignore_errors=True)  # a partial entry from an interrupted run
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_node_binaries(log: Log = print) -> NodeBinaries:
    """Find the node's binaries and pause image, or build what is missing into the cache."""
    if found := find_node_binaries():
        return found
    with _locked("node"):
        if _node_dir() is None:
            go = _go()

            def build_node(out: Path) -> None:
                for name in KUBE_BINARIES:
                    _build(go, name, builder="kubernetes", package=f"./{name}", out=out, log=log)
                _build(go, "coredns", builder="coredns", package=".", out=out, log=log)

            _into_cache(node_cache_dir(), build_node)
        if _pause_archive() is None:
            go = _go()

            def build_pause(out: Path) -> None:
                _build(go, "pause", builder="pause", package=".", out=out, log=log)
                ociimage.write_single_binary_image(
                    out / "pause.tar", binary=out / "pause", reference=PAUSE_IMAGE
                )

            _into_cache(pause_cache_dir(), build_pause)
    found = find_node_binaries()
    if found is None:  # pragma: no cover - the renames above put them there
        raise AssetsError(f"built node binaries are missing from {node_cache_dir()}")
    return found
