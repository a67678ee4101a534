"""Build Sluice's one image here, with no registry and no daemon, and cache it by content.

Users build the image with ``docker build .`` on ``python:3.11-slim``. Here no registry can be
reached, so the tests build the same Dockerfile on a base made from Debian's own packages:

1. **The base**: a bookworm root filesystem from ``mmdebstrap`` (python3.11, python3-venv),
   imported into buildah's storage as ``localhost/sluice-base:<key>``. Its key hashes the suite,
   the package list, the mirrors, the options and mmdebstrap's version.
2. **The image**: ``buildah bud --build-arg BASE=<the base> --pull=never`` of the repository's
   Dockerfile, pushed to a docker archive ``image/sluice-<key>.tar`` that ``ctr images import``
   loads into containerd. Its key hashes the base's key and every file the build copies in
   (the Dockerfile, .dockerignore, pyproject.toml, README.md, constraints.txt, src/).

Everything lives in Sluice's cache (``~/.cache/sluice``: ``image/`` for the archives,
``containers/`` for buildah's storage), so it can be measured and removed in one place. A warm
call hashes the sources and finds the archive: it runs neither mmdebstrap nor buildah's build.
buildah runs with chroot isolation and the overlay driver as root, so no OCI runtime is needed
to build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from sluice.devcluster.assets import _locked as locked
from sluice.devcluster.assets import cache_root

Log = Callable[[str], None]

SUITE = "bookworm"
BASE_PACKAGES = ("python3.11", "python3-venv")
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Smaller, and no device nodes in the tarball (the runtime makes /dev).
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--skip=output/dev",
)
# What the Dockerfile's build copies in, as .dockerignore allows it.
IMAGE_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "constraints.txt",
    "src",
)
IGNORED_PARTS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc",)
BASE_REPOSITORY = "localhost/sluice-base"
REPOSITORY = "localhost/sluice"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The build stage's pip trusts what this machine's pip trusts (an egress proxy's CA, say).
BUILD_CA_PATH = "/etc/ssl/host-ca.pem"
KEEP_ARCHIVES = 3  # other checkouts (other engineers' worktrees) may be using older ones
TOOLS = ("buildah", "mmdebstrap")


class ImageError(RuntimeError):
    """The image cannot be built or loaded; the message says what is missing or what failed."""


@dataclass(frozen=True)
class ImageBuild:
    reference: str  # localhost/sluice:<key>, the name the archive carries
    archive: Path  # a docker archive: `ctr images import` and `docker load` take it
    key: str
    base_reference: str
    built: bool  # False: found in the cache


def image_cache_dir() -> Path:
    return cache_root() / "image"


def storage_dir() -> Path:
    """buildah's storage, in Sluice's cache rather than /var/lib/containers."""
    return cache_root() / "containers"


def source_root() -> Path:
    """The checkout this module runs from: the build context (src/sluice/devcluster/ is here)."""
    return Path(__file__).resolve().parents[3]


def missing_message(found: Mapping[str, str | None], euid: int, context: Path) -> str | None:
    """What stops a build here, in words that say how to fix it; None when nothing does."""
    problems = []
    if not (context / "Dockerfile").is_file():
        problems.append(
            f"{context} has no Dockerfile: the image builds from a source checkout of Sluice"
        )
    missing = [tool for tool in TOOLS if not found.get(tool)]
    if missing:
        problems.append(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH: "
            f"apt-get install {' '.join(missing)} (Debian bookworm has buildah 1.28 and "
            "mmdebstrap 1.3.5; scripts/test.sh installs them when it runs as root)"
        )
    if euid != 0:
        problems.append(
            "building the image needs root here (mmdebstrap makes a root filesystem, buildah "
            f"uses the overlay driver in {storage_dir()}): run it as root"
        )
    return "; ".join(problems) or None


def base_key(mmdebstrap_version: str) -> str:
    """The base's cache key: everything that decides what mmdebstrap puts in the rootfs."""
    recipe = {
        "suite": SUITE,
        "packages": sorted(BASE_PACKAGES),
        "mirrors": list(MIRRORS),
        "options": list(MMDEBSTRAP_OPTIONS),
        "mmdebstrap": mmdebstrap_version,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _input_files(context: Path) -> Iterator[Path]:
    for name in IMAGE_INPUTS:
        path = context / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(context)
                if any(part in IGNORED_PARTS for part in relative.parts):
                    continue
                if child.is_file() and child.suffix not in IGNORED_SUFFIXES:
                    yield child
        else:
            raise ImageError(f"{path} is missing: the image's build copies it in")


def image_key(base: str, context: Path) -> str:
    """The image's cache key: the base's key and the path and bytes of every input file."""
    digest = hashlib.sha256(f"base {base}\n".encode())
    for path in _input_files(context):
        digest.update(f"{path.relative_to(context).as_posix()}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def _run(cmd: list[str], *, what: str, env: Mapping[str, str] | None = None) -> str:
    environ = None if env is None else {**os.environ, **env}
    result = subprocess.run(cmd, env=environ, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n{tail}")
    return result.stdout


def _tools(context: Path) -> dict[str, str]:
    found = {tool: shutil.which(tool) for tool in TOOLS}
    if problem := missing_message(found, os.geteuid(), context):
        raise ImageError(problem)
    return {tool: path for tool, path in found.items() if path}


def _mmdebstrap_version(mmdebstrap: str) -> str:
    return _run([mmdebstrap, "--version"], what="mmdebstrap --version").strip()


class _Buildah:
    """buildah with its storage in Sluice's cache, chroot isolation and the overlay driver."""

    def __init__(self, binary: str) -> None:
        store = storage_dir()
        self.prefix = [
            binary,
            f"--root={store / 'storage'}",
            f"--runroot={store / 'run'}",
            "--storage-driver=overlay",
        ]
        self.env = {"BUILDAH_ISOLATION": "chroot"}

    def __call__(self, *args: str, what: str) -> str:
        return _run([*self.prefix, *args], what=what, env=self.env)

    def has_image(self, reference: str) -> bool:
        cmd = [*self.prefix, "inspect", "--type=image", reference]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def _build_base(tools: Mapping[str, str], buildah: _Buildah, key: str, log: Log) -> str:
    """The base image: mmdebstrap's rootfs tarball imported as one layer (the tarball goes)."""
    reference = f"{BASE_REPOSITORY}:{key}"
    if buildah.has_image(reference):
        return reference
    started = time.monotonic()
    log(f"building the base: Debian {SUITE} with {', '.join(BASE_PACKAGES)} (mmdebstrap) ...")
    image_cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=image_cache_dir(), prefix=".base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _run(
            [
                tools["mmdebstrap"],
                *MMDEBSTRAP_OPTIONS,
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                *MIRRORS,
            ],
            what="mmdebstrap",
        )
        size = rootfs.stat().st_size
        container = buildah("from", "scratch", what="buildah from scratch").strip()
        try:
            buildah("add", container, str(rootfs), "/", what="buildah add (the rootfs)")
            buildah("config", f"--env={PATH_ENV}", "--cmd=/bin/sh", container, what="config")
            buildah("commit", "--quiet", container, reference, what="buildah commit (the base)")
        finally:
            buildah("rm", container, what="buildah rm")
    log(f"built {reference} in {time.monotonic() - started:.0f}s (rootfs {size / 2**20:.0f} MiB)")
    return reference


def pip_build_options(environ: Mapping[str, str]) -> list[str]:
    """buildah options that hand the machine's pip index and CA bundle to the build stage.

    Only how PyPI is reached, not what is installed (constraints.txt decides that), so they
    are not part of the image's key.
    """
    options = []
    if index := environ.get("PIP_INDEX_URL"):
        options.append(f"--build-arg=PIP_INDEX_URL={index}")
    ca = environ.get("PIP_CERT") or environ.get("SSL_CERT_FILE")
    if ca and Path(ca).is_file():
        options += [f"--volume={ca}:{BUILD_CA_PATH}:ro", f"--build-arg=PIP_CERT={BUILD_CA_PATH}"]
    return options


def _build_image(buildah: _Buildah, context: Path, base: str, build: ImageBuild, log: Log) -> None:
    """The Dockerfile on the base, then a docker archive; the image leaves buildah's storage."""
    started = time.monotonic()
    log(f"building {build.reference} from {context / 'Dockerfile'} on {base} ...")
    buildah(
        "bud",
        "--quiet",
        "--pull=never",
        "--layers=false",
        "--force-rm",
        f"--build-arg=BASE={base}",
        *pip_build_options(os.environ),
        f"--file={context / 'Dockerfile'}",
        f"--tag={build.reference}",
        str(context),
        what="buildah bud",
    )
    staging = build.archive.with_name(f".{build.archive.name}.partial")
    staging.unlink(missing_ok=True)
    try:
        target = f"docker-archive:{staging}:{build.reference}"
        buildah("push", "--quiet", build.reference, target, what="buildah push (the archive)")
        staging.rename(build.archive)
    finally:
        staging.unlink(missing_ok=True)
        buildah("rmi", build.reference, what="buildah rmi")
    size = build.archive.stat().st_size / 2**20
    log(f"built {build.reference} in {time.monotonic() - started:.0f}s ({size:.0f} MiB archive)")


def _prune(keep: Path) -> None:
    """Drop all but the most recently used archives, so each edit does not add one for good."""
    archives = sorted(
        image_cache_dir().glob("sluice-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old in [a for a in archives if a != keep][KEEP_ARCHIVES - 1 :]:
        old.unlink(missing_ok=True)


def _planned(context: Path, tools: Mapping[str, str]) -> ImageBuild:
    base = base_key(_mmdebstrap_version(tools["mmdebstrap"]))
    key = image_key(base, context)
    return ImageBuild(
        reference=f"{REPOSITORY}:{key}",
        archive=image_cache_dir() / f"sluice-{key}.tar",
        key=key,
        base_reference=f"{BASE_REPOSITORY}:{base}",
        built=False,
    )


def ensure_image(*, log: Log = print, context: Path | None = None) -> ImageBuild:
    """The image of this checkout: from the cache, else built (the base too, if need be)."""
    context = context or source_root()
    tools = _tools(context)
    plan = _planned(context, tools)
    if plan.archive.is_file():
        plan.archive.touch()  # recently used: pruning keeps it
        return plan
    with locked("image"):
        if plan.archive.is_file():  # another process built it while we waited
            return plan
        buildah = _Buildah(tools["buildah"])
        base = _build_base(tools, buildah, plan.base_reference.rpartition(":")[2], log)
        built = replace(plan, built=True)
        _build_image(buildah, context, base, built, log)
        _prune(built.archive)
    return built


def cache_bytes() -> int:
    """What the image cache takes on disk: the archives and buildah's storage (the base)."""
    total = 0
    for top in (image_cache_dir(), storage_dir()):
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    total += path.stat().st_blocks * 512
    return total


def load_into_containerd(
    archive: Path, address: str, namespace: str = "k8s.io", *, ctr: str = "ctr"
) -> None:
    """Import the archive into containerd, where the kubelet's CRI finds it (``k8s.io``).

    The archive names the image ``localhost/sluice:<key>``, so a Pod with that image and
    ``imagePullPolicy: Never`` starts without any registry.
    """
    if shutil.which(ctr) is None:
        raise ImageError(
            f"{ctr} is not on PATH: it comes with containerd (apt-get install containerd)"
        )
    _run(
        [ctr, "--address", address, "--namespace", namespace, "images", "import", str(archive)],
        what="ctr images import",
    )
